"""Running the study's notebooks with papermill, with parameters from ``params.yaml``.

Every DVC stage is ``python -m study notebook NOTEBOOK --section S [-p name value ...]``: the
section ``S`` of the params file gives the notebook's parameters (its keys are the names in the
notebook's ``parameters`` cell), ``-p`` adds or overrides single ones, and the executed notebook
is written under ``results/notebooks/`` so a reader opens exactly what ran.

``python -m study sweep NOTEBOOK -p NAME V1 V2 ...`` runs the same notebook once per value of
one parameter (the others from ``--section`` and ``--set``), without DVC: one executed notebook
per value, ``<out-dir>/<notebook stem>-<NAME>-<value>.ipynb``. A fixed parameter may name the
value with ``{value}`` (``--set out_dir /tmp/prune-{value}``) so that the runs do not write to
the same place.

By default a run shows only what the notebook itself prints (and its progress bars, drawn in
place); ``verbose`` (``--verbose`` or ``STUDY_VERBOSE=1``) adds papermill's cell-by-cell log. The
kernel talks to papermill over IPC sockets in a private temporary folder, not over TCP. The
executed copy is written without what changes from run to run (timestamps, durations, progress
bars, widget state), so rerunning a stage with the same inputs rewrites the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path

import yaml

EXECUTED_DIR = Path("results/notebooks")
SWEEP_DIR = Path("results/sweeps")


def section_parameters(params_file: str | Path, section: str | None) -> dict:
    """The parameters of one section (dotted for nesting: ``prune.layer``) of a YAML params file."""
    if section is None:
        return {}
    params = yaml.safe_load(Path(params_file).read_text()) or {}
    node = params
    for key in section.split("."):
        if not isinstance(node, dict) or key not in node:
            raise ValueError(f"{params_file} has no section {section!r} (top-level sections: {sorted(params)})")
        node = node[key]
    if not isinstance(node, dict):
        raise ValueError(f"section {section!r} of {params_file} is not a mapping of parameters")
    return dict(node)


def parse_overrides(pairs: list[list[str]] | None) -> dict:
    """``[["ratio", "0.3"], ["out_dir", "x"]]`` -> ``{"ratio": 0.3, "out_dir": "x"}`` (values as YAML)."""
    return {name: yaml.safe_load(value) for name, value in (pairs or [])}


def verbose_default() -> bool:
    return os.environ.get("STUDY_VERBOSE", "") not in ("", "0")


def run_notebook(
    notebook: str | Path, parameters: dict, output: str | Path | None = None, kernel: str = "python3", verbose: bool | None = None
) -> Path:
    """Execute ``notebook`` with papermill; return the path of the executed copy (see the module
    docstring for what is shown and what is kept). ``verbose``: None reads ``STUDY_VERBOSE``."""
    import papermill
    from jupyter_client.manager import AsyncKernelManager

    verbose = verbose_default() if verbose is None else verbose
    logging.getLogger("papermill").setLevel(logging.INFO if verbose else logging.WARNING)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(message)s")
    notebook = Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook not found: {notebook}")
    output = Path(output) if output else EXECUTED_DIR / notebook.name
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="study-kernel-") as sockets:

        class IPCKernelManager(AsyncKernelManager):
            def __init__(self, **kwargs):
                super().__init__(transport="ipc", ip=os.path.join(sockets, "kernel"), **kwargs)

        streams = {} if verbose else {"stdout_file": sys.stdout, "stderr_file": sys.stderr}  # raw: bars redraw in place
        try:
            papermill.execute_notebook(
                str(notebook),
                str(output),
                parameters=parameters,
                kernel_name=kernel,
                cwd=str(Path.cwd()),
                progress_bar=False,
                log_output=verbose,
                kernel_manager_class=IPCKernelManager,
                **streams,
            )
        finally:  # a failed run's copy shows the error, and is as stable as a finished one
            if output.is_file():
                output.write_text(json.dumps(stable_notebook(json.loads(output.read_text())), indent=1, ensure_ascii=False) + "\n")
    return output


VOLATILE_METADATA = ("start_time", "end_time", "duration")
PROGRESS_LINE = re.compile(r"\d+/\d+ \[[0-9:<?]+.*\]|^\s*\d+%\|")  # tqdm: '12/40 [00:03<00:07, 4.0it/s]'


def stable_notebook(nb: dict) -> dict:
    """An executed notebook without what changes from run to run: papermill's and Jupyter's
    timestamps and durations, the random id of the injected-parameters cell, widget state and
    widget views (progress bars in Jupyter), and the progress-bar lines of stderr streams.
    Everything the cells computed is kept."""
    nb["metadata"].pop("widgets", None)
    for key in VOLATILE_METADATA:
        nb["metadata"].get("papermill", {}).pop(key, None)
    for cell in nb["cells"]:
        if "injected-parameters" in cell["metadata"].get("tags", []):
            cell["id"] = "injected-parameters"  # papermill draws a new random id each run
        cell["metadata"].pop("execution", None)
        for key in VOLATILE_METADATA:
            cell["metadata"].get("papermill", {}).pop(key, None)
        outputs = []
        for out in cell.get("outputs", []):
            if "application/vnd.jupyter.widget-view+json" in out.get("data", {}):
                continue
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = "".join(out["text"]).replace("\r", "\n")
                kept = [line for line in text.split("\n") if line.strip() and not PROGRESS_LINE.search(line)]
                if not kept:
                    continue
                out["text"] = "\n".join(kept) + "\n"
            outputs.append(out)
        if "outputs" in cell:
            cell["outputs"] = outputs
    return nb


def value_slug(value) -> str:
    """A file-name-safe rendering of a parameter value: ``0.15`` -> ``0.15``, ``[1, 2]`` -> ``1_2``,
    ``results/x`` -> ``results_x``."""
    text = "_".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return re.sub(r"[^A-Za-z0-9._+=-]+", "_", text).strip("_") or "empty"


def sweep_runs(
    notebook: str | Path, parameters: dict, name: str, values: list, out_dir: str | Path | None = None
) -> list[tuple[dict, Path]]:
    """The (parameters, executed notebook path) of each run of a sweep over ``name``: ``parameters``
    with ``name`` set to each value and every ``{value}`` in a string parameter replaced by it."""
    if not values:
        raise ValueError(f"a sweep over {name!r} needs at least one value")
    slugs = [value_slug(v) for v in values]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"values {values} of {name!r} give the same notebook name twice ({slugs})")
    out_dir = Path(out_dir) if out_dir else SWEEP_DIR
    runs = []
    for value, slug in zip(values, slugs):
        run = {k: v.replace("{value}", slug) if isinstance(v, str) else v for k, v in parameters.items()}
        runs.append(({**run, name: value}, out_dir / f"{Path(notebook).stem}-{name}-{slug}.ipynb"))
    return runs


def run_sweep(
    notebook: str | Path, parameters: dict, name: str, values: list, out_dir: str | Path | None = None, kernel: str = "python3"
) -> list[Path]:
    """Execute ``notebook`` once per value of parameter ``name`` (see :func:`sweep_runs`), one
    after the other; stops at the first failing run (its executed notebook shows the error)."""
    from tqdm.auto import tqdm

    outputs = []
    progress = tqdm(sweep_runs(notebook, parameters, name, values, out_dir), desc=f"sweep {name}", unit="run")
    for run_parameters, output in progress:
        progress.set_postfix_str(f"{name}={run_parameters[name]!r}")
        outputs.append(run_notebook(notebook, run_parameters, output, kernel))
    return outputs
