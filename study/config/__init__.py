"""The study's settings (torch-free): the sections of ``params.yaml`` as dataclasses
(:mod:`study.config.sections`), built with type checks (:mod:`study.config.build`), over the
names they choose from (:mod:`study.config.vocabulary`).

``load_section("prune", overrides={"level": 0.3})`` is what a notebook or the command line runs;
``study_values()`` builds every section and checks them against each other (what ``python -m study
check-config`` does before it looks at paths); ``python -m study profile`` writes ``params.yaml``
from the defaults and a profile that states only what differs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from study.config.build import as_dict, build, merge, setting_problems
from study.config.sections import SECTIONS
from study.config.vocabulary import Method

PARAMS_FILE = "params.yaml"


def default(cls, name: str):
    """The default of setting ``name`` of the section class ``cls`` (for a function's signature)."""
    return getattr(cls(), name)


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping of sections (an empty file is an empty mapping)."""
    try:
        values = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not YAML: {err}") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ValueError(f"{path} must be a mapping of sections, got {type(values).__name__}")
    unknown = sorted(set(values) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; known: {list(SECTIONS)}")
    return values


def check_file_values(cls, values, where: str, source: str | Path) -> None:
    """A ValueError listing every setting of ``values`` (read from ``source``) that is unknown, of
    the wrong type or set per run (a params file never sets one: a stage or the command line does)."""
    problems = setting_problems(cls, values, where, per_run=False)
    if problems:
        raise ValueError(f"{source}: " + "; ".join(f"{key}: {message}" for key, message in problems))


def load_section(section: str, params_file: str | Path | None = PARAMS_FILE, overrides: dict | None = None):
    """The settings of ``section``: its defaults, then ``params_file``'s values (None: defaults
    only), then ``overrides`` (``{"level": 0.3, "config.lr": 1e-4}``), each checked."""
    if section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}; known: {list(SECTIONS)}")
    values = read_yaml(params_file).get(section) if params_file is not None else None
    if values is not None and not isinstance(values, dict):
        raise ValueError(f"section {section!r} of {params_file} must be a mapping of settings")
    check_file_values(SECTIONS[section], values, section, params_file)
    return build(SECTIONS[section], merge(values or {}, overrides or {}), section)


def study_values(profile: str | Path | None = None) -> dict:
    """Every section's values: the defaults with ``profile``'s values over them, checked."""
    values = read_yaml(profile) if profile is not None else {}
    for name, cls in SECTIONS.items():
        check_file_values(cls, values.get(name), name, profile)
    study = {name: build(cls, values.get(name), name) for name, cls in SECTIONS.items()}
    check_study(study)
    return study


class StudyError(ValueError):
    """Checks across sections failed: ``problems`` holds (setting, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{key}: {message}" for key, message in problems))


def check_study(study: dict) -> None:
    """The checks that span sections: students are pruned runs, fractions have subset files."""
    runs = study["prune_runs"].runs()
    problems = []
    students = study["recover_runs"].students
    for student in students:
        if student not in runs:
            problems.append(("recover_runs.students", f"{student!r} is not a run of prune_runs at prune.seed ({runs})"))
    fractions = study["subsets"].fractions
    recover = study["recover"]
    sweep = recover.data_efficiency
    for key, values in (("recover.fractions", recover.fractions), ("recover.data_efficiency.fractions", sweep.fractions if sweep else [])):
        problems += [(key, f"{f} is not one of subsets.fractions {fractions}: no subset file") for f in values if f not in fractions]
    for key, section in (("recover.data_efficiency.students", sweep), ("recover.extra_seeds.students", recover.extra_seeds)):
        for student in section.students if section else []:
            if student not in students:
                problems.append((key, f"{student!r} is not one of recover_runs.students"))
    for method in study["prune_runs"].methods:
        parsed = Method.parse(method)
        if parsed.text_only and parsed.calibration == "none":
            problems.append(("prune_runs.methods", f"{method!r} calibrates on text, but {parsed.metric!r} reads no calibration data"))
    if problems:
        raise StudyError(problems)


HEADER = """\
# The study's settings, written by `python -m study profile{profile}` from the defaults in
# study/config/sections.py{over}. Edit the values here or in a profile; each stage's notebook
# reads its section (per-run values, such as the method and level, come from dvc.yaml).
"""


def render_params(study: dict, profile: str | None = None) -> str:
    """``params.yaml``'s text: every section, with each setting's help as a comment."""
    lines = [HEADER.format(profile=f" {profile}" if profile else "", over=f" with {profile} over them" if profile else "")]
    for name, settings in study.items():
        doc = " ".join((type(settings).__doc__ or "").split()).split(". ")[0].rstrip(".")
        lines.append(f"{name}:  # {doc}" if doc else f"{name}:")
        lines += _render(settings, "  ")
        lines.append("")
    return "\n".join(lines)


def _render(settings, indent: str) -> list[str]:
    lines = []
    values = as_dict(settings)
    for f in dataclasses.fields(settings):
        if f.name not in values:
            continue
        value, help = values[f.name], f.metadata.get("help", "")
        comment = f"  # {help}" if help else ""
        nested = getattr(settings, f.name)
        if dataclasses.is_dataclass(nested):
            lines.append(f"{indent}{f.name}:{comment}")
            lines += _render(nested, indent + "  ")
        elif isinstance(value, list) and value and all(isinstance(v, dict | str) for v in value) and len(_flow(value)) > 80:
            lines.append(f"{indent}{f.name}:{comment}")
            lines += [f"{indent}  - {_flow(v)}" for v in value]
        else:
            lines.append(f"{indent}{f.name}: {_flow(value)}{comment}")
    return lines


def _flow(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip().removesuffix("\n...").strip()
