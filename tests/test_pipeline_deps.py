"""``dvc.yaml``: each stage depends on every ``study/`` module its notebook imports (the import
closure, function-level imports included), and on nothing of ``study/`` it does not import."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    """``study.records`` -> ``study/records.py`` (or the package's ``__init__.py``); None outside ``study``."""
    if name != "study" and not name.startswith("study."):
        return None
    path = REPO / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(source: str, package: str = "") -> set[str]:
    """The ``study`` modules a piece of code imports, anywhere in it (``from a import b`` counts
    ``a.b`` when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if module_file(name)}


def closure(modules: set[str]) -> set[Path]:
    """The files of ``modules`` and of everything they import, with the ``__init__.py`` of every
    package on the way (importing ``study.config.sections`` runs ``study/config/__init__.py``)."""
    seen: set[Path] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:i]))
            if path and path not in seen:
                seen.add(path)
                todo += imported_modules(path.read_text())
    return {p for p in seen if p.stat().st_size > 0}


def notebook_modules(notebook: Path) -> set[str]:
    cells = json.loads(notebook.read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return imported_modules("\n".join(line for line in source.splitlines() if not line.startswith("%")))


def stages() -> list[tuple[str, str, list[str]]]:
    """(stage, notebook, study deps) of every notebook stage of ``dvc.yaml``."""
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    out = []
    for name, spec in pipeline["stages"].items():
        spec = spec.get("do", spec)
        notebook = re.search(r"notebook (\S+\.ipynb)", spec["cmd"]).group(1)
        deps = [d for d in spec["deps"] if d.startswith("study")]
        out.append((name, notebook, deps))
    return out


def needed(notebook: str) -> set[str]:
    return {str(p.relative_to(REPO)) for p in closure(notebook_modules(REPO / notebook))}


@pytest.mark.parametrize("stage, notebook, deps", stages(), ids=[s[0] for s in stages()])
def test_stage_depends_on_exactly_what_its_notebook_imports(stage, notebook, deps):
    files = needed(notebook)
    covered = {f for f in files if any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)}
    assert files == covered, f"{stage}: add to its deps {sorted(files - covered)}"
    unused = [d for d in deps if not any(f == d or f.startswith(d.rstrip("/") + "/") for f in files)]
    assert not unused, f"{stage}: its notebook imports nothing of {unused}"


def test_closure_follows_function_level_imports():
    files = {str(p.relative_to(REPO)) for p in closure({"study.recovery.plan"})}
    assert {"study/recovery/train.py", "study/records.py", "study/config/vocabulary.py", "study/data/subsets.py"} <= files


if __name__ == "__main__":  # the deps each stage needs, to paste into dvc.yaml
    for stage, notebook, _ in stages():
        print(stage, sorted(needed(notebook)))


def pipeline_stages(profile: str | None, root: Path) -> dict[str, list[str]]:
    """``{stage: [dep paths]}`` as DVC builds the pipeline with ``profile`` applied."""
    from dvc.repo import Repo

    from study.config import render_params, study_values

    (root / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    (root / "params.yaml").write_text(render_params(study_values(profile and REPO / profile)))
    Repo.init(root, no_scm=True)
    with Repo(root) as repo:
        return {stage.name: [str(dep.def_path) for dep in stage.deps] for stage in repo.index.stages}


def test_the_embedded_study_generates_its_data_and_depends_on_its_manifest(tmp_path):
    stages = pipeline_stages(None, tmp_path)
    assert "data@synthetic" in stages
    data_deps = {dep for deps in stages.values() for dep in deps if dep.startswith("results/data")}
    assert data_deps == {"results/data/manifest.json", "results/data/train.json"}  # the manifest; subsets reads train.json


@pytest.mark.parametrize(
    "profile", ["configs/llava-1.5-7b.yaml", "configs/bunny-v1.0-3b.yaml", "configs/qwen2.5-vl-7b.yaml", "configs/internvl-mini-4b.yaml"]
)
def test_real_data_profiles_have_no_data_stage(profile, tmp_path):
    stages = pipeline_stages(profile, tmp_path)
    assert not [name for name in stages if name.startswith("data")]
    assert not [dep for deps in stages.values() for dep in deps if dep.startswith("results/data")]
    annotation = yaml.safe_load((REPO / profile).read_text())["data"]["manifest"]
    assert all(annotation in stages[name] for name in stages if name.startswith(("teacher", "prune", "evaluate", "recover@")))


# Each part of study/ may import only parts below it (or itself): the settings and records at the
# bottom, then data and models, then what works on models, then the recipes and the report, then
# the command line and the runners.
LAYERS = {
    "config": 0,
    "records": 1,
    "outputs": 1,
    "data": 2,
    "models": 3,
    "pruning": 4,
    "evaluation": 4,
    "teacher": 5,
    "recovery": 5,
    "convert": 5,
    "report": 5,
    "__main__": 7,  # the command line, over the runners and checkers
}
TOP = 6  # notebooks, repro, config_check, gpu_memory


def part(path: Path) -> str:
    return path.relative_to(REPO / "study").parts[0].removesuffix(".py")


def test_no_module_imports_a_layer_above_it_or_beside_it():
    wrong = []
    for path in sorted((REPO / "study").rglob("*.py")):
        mine = part(path)
        for name in imported_modules(path.read_text()):
            other = part(module_file(name))
            if other != mine and LAYERS.get(other, TOP) >= LAYERS.get(mine, TOP):
                wrong.append(f"{path.relative_to(REPO)} imports {name}")
    assert not wrong, "\n".join(wrong)
