"""The notebook runner behind every DVC stage."""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest

from study.__main__ import main
from study.notebooks import notebook_parameters, notebook_section, parse_overrides, run_notebook

REPO = Path(__file__).resolve().parents[1]


def write_notebook(path: Path, parameters: str, tagged: bool = True) -> Path:
    """A notebook whose first cell is ``parameters`` (tagged as papermill's parameters cell)."""
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"] if tagged else []}),
            nbformat.v4.new_code_cell("print(section, overrides)"),
        ],
        metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    )
    nbformat.write(notebook, path)
    return path


def stage(tmp_path: Path) -> Path:
    return write_notebook(tmp_path / "stage.ipynb", 'section = "prune"  # the settings\nparams_file = "params.yaml"\noverrides = {}')


@pytest.fixture
def no_kernel(monkeypatch):
    """Fails a test that starts a kernel: what must be refused is refused before one starts."""

    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was started")

    monkeypatch.setattr(papermill, "execute_notebook", refuse)


def test_notebook_section_is_read_from_the_parameters_cell(tmp_path):
    assert notebook_section(stage(tmp_path)) == "prune"
    plain = write_notebook(tmp_path / "plain.ipynb", 'params_file = "params.yaml"\nparadigm = None')
    assert notebook_section(plain) is None
    untagged = write_notebook(tmp_path / "untagged.ipynb", 'section = "prune"', tagged=False)
    with pytest.raises(ValueError, match=r"untagged\.ipynb has no cell tagged 'parameters'"):
        notebook_section(untagged)
    # the repository's notebooks: a stage names its section, the exploration notebook none
    assert notebook_section(REPO / "notebooks/02_prune.ipynb") == "prune"
    assert notebook_section(REPO / "notebooks/05_report.ipynb") == "report"
    assert notebook_section(REPO / "notebooks/06_explore.ipynb") is None


def test_notebook_parameters_checks_the_overrides_against_the_section(tmp_path):
    notebook = stage(tmp_path)
    params = tmp_path / "p.yaml"
    params.write_text("prune:\n  threads: 3\n")
    overrides = {"method": "width-taylor", "level": 0.3}
    assert notebook_parameters(notebook, params, overrides) == {"params_file": str(params), "overrides": overrides}
    # an unknown setting, a wrong type, a value out of range: refused, the setting named
    with pytest.raises(ValueError, match=r"^prune: unknown setting\(s\) \['levle'\]; known: \["):
        notebook_parameters(notebook, params, {"levle": 0.3})
    with pytest.raises(ValueError, match=r"^prune\.level must be a number, got 'high'$"):
        notebook_parameters(notebook, params, {"level": "high"})
    with pytest.raises(ValueError, match=r"^prune\.threads must be an integer, got 2\.5$"):
        notebook_parameters(notebook, params, {"threads": 2.5})
    with pytest.raises(ValueError, match=r"^prune: .*'bogus'"):
        notebook_parameters(notebook, params, {"method": "bogus"})
    # the params file is read too: a bad value there is refused the same way
    params.write_text("prune:\n  mode: sideways\n")
    with pytest.raises(ValueError, match=r"p\.yaml: prune\.mode: must be one of .*, got 'sideways'$"):
        notebook_parameters(notebook, params, {})
    # a notebook that names an unknown section
    odd = write_notebook(tmp_path / "odd.ipynb", 'section = "prnue"\nparams_file = "params.yaml"\noverrides = {}')
    with pytest.raises(ValueError, match=r"unknown section 'prnue'"):
        notebook_parameters(odd, params, {})


def test_a_notebook_without_a_section_takes_the_overrides_as_its_parameters(tmp_path):
    plain = write_notebook(tmp_path / "plain.ipynb", 'params_file = "params.yaml"\nparadigm = None')
    overrides = {"paradigm": ["layer"], "anything": 1}
    parameters = notebook_parameters(plain, tmp_path / "missing.yaml", overrides)  # nothing is checked, nothing read
    assert parameters == {"params_file": str(tmp_path / "missing.yaml"), **overrides}
    assert notebook_parameters(plain, "params.yaml", {}) == {"params_file": "params.yaml"}


def test_parse_overrides_reads_values_as_yaml():
    assert parse_overrides([["ratio", "0.3"], ["name", "x"], ["levels", "[1, 2]"], ["off", "null"]]) == {
        "ratio": 0.3,
        "name": "x",
        "levels": [1, 2],
        "off": None,
    }
    assert parse_overrides(None) == {}


def test_a_bad_override_is_refused_before_a_kernel_starts(tmp_path, capsys, no_kernel):
    notebook = stage(tmp_path)
    (tmp_path / "p.yaml").write_text("prune: {}\n")
    out = tmp_path / "out.ipynb"
    with pytest.raises(ValueError, match=r"prune\.level must be a number"):
        run_notebook(notebook, tmp_path / "p.yaml", {"level": "high"}, out)
    args = ["notebook", str(notebook), "--params", str(tmp_path / "p.yaml"), "--out", str(out)]
    assert main([*args, "-p", "levle", "0.3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: prune: unknown setting(s) ['levle']; known: [") and err.count("\n") == 1
    assert main([*args, "-p", "level", "[0.3]"]) == 2
    assert capsys.readouterr().err == "error: prune.level must be a number, got [0.3]\n"
    assert not out.exists()


def test_missing_notebook_is_a_clear_error(tmp_path, capsys, no_kernel):
    (tmp_path / "p.yaml").write_text("prune: {}\n")
    assert main(["notebook", str(tmp_path / "nope.ipynb"), "--params", str(tmp_path / "p.yaml")]) == 2
    assert capsys.readouterr().err == f"error: notebook not found: {tmp_path / 'nope.ipynb'}\n"


def test_the_section_is_the_notebooks_own(tmp_path, capsys, no_kernel):
    with pytest.raises(SystemExit) as exit_:
        main(["notebook", str(stage(tmp_path)), "--section", "prune"])
    assert exit_.value.code == 2 and "unrecognized arguments: --section prune" in capsys.readouterr().err
