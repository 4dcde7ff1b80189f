"""Running the study's notebooks with papermill, with parameters from ``params.yaml``.

Every DVC stage is ``python -m study notebook NOTEBOOK --section S [-p name value ...]``: the
section ``S`` of the params file gives the notebook's parameters (its keys are the names in the
notebook's ``parameters`` cell), ``-p`` adds or overrides single ones, and the executed notebook
is written under ``results/notebooks/`` so a reader opens exactly what ran.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

EXECUTED_DIR = Path("results/notebooks")


def section_parameters(params_file: str | Path, section: str | None) -> dict:
    """The parameters of one section (dotted for nesting: ``prune.layer``) of a YAML params file."""
    if section is None:
        return {}
    params = yaml.safe_load(Path(params_file).read_text()) or {}
    node = params
    for key in section.split("."):
        if not isinstance(node, dict) or key not in node:
            raise KeyError(f"{params_file} has no section {section!r} (top-level sections: {sorted(params)})")
        node = node[key]
    if not isinstance(node, dict):
        raise ValueError(f"section {section!r} of {params_file} is not a mapping of parameters")
    return dict(node)


def parse_overrides(pairs: list[list[str]] | None) -> dict:
    """``[["ratio", "0.3"], ["out_dir", "x"]]`` -> ``{"ratio": 0.3, "out_dir": "x"}`` (values as YAML)."""
    return {name: yaml.safe_load(value) for name, value in (pairs or [])}


def run_notebook(notebook: str | Path, parameters: dict, output: str | Path | None = None, kernel: str = "python3") -> Path:
    """Execute ``notebook`` with papermill; return the path of the executed copy."""
    import papermill

    # papermill logs the notebook's stdout at INFO: show it, so a stage's log shows its progress
    logging.getLogger("papermill").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(message)s")
    notebook = Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook not found: {notebook}")
    output = Path(output) if output else EXECUTED_DIR / notebook.name
    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(notebook), str(output), parameters=parameters, kernel_name=kernel, cwd=str(Path.cwd()), progress_bar=False, log_output=True
    )
    return output
