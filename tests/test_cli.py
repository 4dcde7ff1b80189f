"""The notebook runner behind every DVC stage."""

from __future__ import annotations

import pytest

from study.__main__ import main
from study.notebooks import parse_overrides, section_parameters


def test_section_parameters_and_overrides(tmp_path):
    (tmp_path / "p.yaml").write_text("a:\n  x: 1\n  b:\n    y: [1, 2]\n")
    assert section_parameters(tmp_path / "p.yaml", "a.b") == {"y": [1, 2]}
    assert section_parameters(tmp_path / "p.yaml", None) == {}
    with pytest.raises(ValueError, match="no section 'c'"):
        section_parameters(tmp_path / "p.yaml", "c")
    with pytest.raises(ValueError, match="not a mapping"):
        section_parameters(tmp_path / "p.yaml", "a.x")
    assert parse_overrides([["ratio", "0.3"], ["name", "x"], ["levels", "[1, 2]"], ["off", "null"]]) == {
        "ratio": 0.3,
        "name": "x",
        "levels": [1, 2],
        "off": None,
    }


def test_missing_notebook_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text("a: {x: 1}\n")
    assert main(["notebook", str(tmp_path / "nope.ipynb"), "--params", str(tmp_path / "p.yaml"), "--section", "a"]) == 2
    assert capsys.readouterr().err == f"error: notebook not found: {tmp_path / 'nope.ipynb'}\n"
