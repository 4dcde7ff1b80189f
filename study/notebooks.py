"""Running the study's notebooks with papermill, with settings from ``params.yaml``.

A stage's notebook names its section of the params file in its ``parameters`` cell (``section =
"prune"``) and takes two parameters: ``params_file`` and ``overrides``, the settings that differ
for this run (``{"method": "width-taylor", "level": 0.3, ...}``); it builds its settings with
:func:`study.config.load_section`, so a notebook run by hand in Jupyter reads the same values as
the pipeline. Every DVC stage is ``python -m study notebook NOTEBOOK [-p name value ...]``: the
``-p`` pairs become the overrides, checked before the kernel starts, and the executed notebook is
written under ``results/notebooks/`` so a reader opens exactly what ran. A notebook without a
``section`` (the exploration notebook) takes ``-p`` pairs as plain papermill parameters.

``python -m study sweep NOTEBOOK -p NAME V1 V2 ...`` runs the same notebook once per value of
one setting (the others from the params file and ``--set``), without DVC: one executed notebook
per value, ``<out-dir>/<notebook stem>-<NAME>-<value>.ipynb``. A fixed setting may name the
value with ``{value}`` (``--set out_dir /tmp/prune-{value}``) so that the runs do not write to
the same place.

By default a run shows only what the notebook itself prints (and its progress bars, drawn in
place); ``verbose`` (``--verbose`` or ``STUDY_VERBOSE=1``) adds papermill's cell-by-cell log. The
kernel talks to papermill over IPC sockets in a private temporary folder, not over TCP. The
executed copy is written without what changes from run to run (timestamps, durations, progress
bars, widget state), so rerunning a stage with the same inputs rewrites the same bytes.
"""

from __future__ import annotations

import ast
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


def notebook_section(notebook: str | Path) -> str | None:
    """The ``section`` a notebook's ``parameters`` cell names, or None."""
    nb = json.loads(Path(notebook).read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            for node in ast.parse("".join(cell["source"])).body:
                if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["section"]:
                    return ast.literal_eval(node.value)
            return None
    raise ValueError(f"{notebook} has no cell tagged 'parameters'")


def notebook_parameters(notebook: str | Path, params_file: str | Path, overrides: dict) -> dict:
    """What papermill injects: ``params_file`` and the ``overrides`` (checked against the section
    now, so a bad value fails before a kernel starts), or the overrides themselves for a notebook
    without a section."""
    section = notebook_section(notebook)
    if section is None:
        return {"params_file": str(params_file), **overrides}
    from study.config import load_section

    load_section(section, params_file, overrides)
    return {"params_file": str(params_file), "overrides": dict(overrides)}


def parse_overrides(pairs: list[list[str]] | None) -> dict:
    """``[["ratio", "0.3"], ["out_dir", "x"]]`` -> ``{"ratio": 0.3, "out_dir": "x"}`` (values as YAML)."""
    return {name: yaml.safe_load(value) for name, value in (pairs or [])}


def verbose_default() -> bool:
    return os.environ.get("STUDY_VERBOSE", "") not in ("", "0")


def run_notebook(
    notebook: str | Path,
    params_file: str | Path = "params.yaml",
    overrides: dict | None = None,
    output: str | Path | None = None,
    kernel: str = "python3",
    verbose: bool | None = None,
) -> Path:
    """Execute ``notebook`` with papermill on ``params_file`` and ``overrides``; return the path
    of the executed copy (see the module docstring for what is shown and what is kept).
    ``verbose``: None reads ``STUDY_VERBOSE``."""
    import papermill
    from jupyter_client.manager import AsyncKernelManager

    verbose = verbose_default() if verbose is None else verbose
    logging.getLogger("papermill").setLevel(logging.INFO if verbose else logging.WARNING)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(message)s")
    notebook = Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook not found: {notebook}")
    parameters = notebook_parameters(notebook, params_file, overrides or {})
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
    notebook: str | Path, overrides: dict, name: str, values: list, out_dir: str | Path | None = None
) -> list[tuple[dict, Path]]:
    """The (overrides, executed notebook path) of each run of a sweep over ``name``: ``overrides``
    with ``name`` set to each value and every ``{value}`` in a string setting replaced by it."""
    if not values:
        raise ValueError(f"a sweep over {name!r} needs at least one value")
    slugs = [value_slug(v) for v in values]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"values {values} of {name!r} give the same notebook name twice ({slugs})")
    out_dir = Path(out_dir) if out_dir else SWEEP_DIR
    runs = []
    for value, slug in zip(values, slugs):
        run = {k: v.replace("{value}", slug) if isinstance(v, str) else v for k, v in overrides.items()}
        runs.append(({**run, name: value}, out_dir / f"{Path(notebook).stem}-{name}-{slug}.ipynb"))
    return runs


def run_sweep(
    notebook: str | Path,
    params_file: str | Path,
    overrides: dict,
    name: str,
    values: list,
    out_dir: str | Path | None = None,
    kernel: str = "python3",
) -> list[Path]:
    """Execute ``notebook`` once per value of parameter ``name`` (see :func:`sweep_runs`), one
    after the other; stops at the first failing run (its executed notebook shows the error)."""
    from tqdm.auto import tqdm

    outputs = []
    runs = sweep_runs(notebook, overrides, name, values, out_dir)
    for run_overrides, _ in runs:  # every run's settings are checked before the first starts
        notebook_parameters(notebook, params_file, run_overrides)
    progress = tqdm(runs, desc=f"sweep {name}", unit="run")
    for run_overrides, output in progress:
        progress.set_postfix_str(f"{name}={run_overrides[name]!r}")
        outputs.append(run_notebook(notebook, params_file, run_overrides, output, kernel))
    return outputs
