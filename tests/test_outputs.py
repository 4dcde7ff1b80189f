"""Writers of model folders never destroy data: refused outputs, atomic saves, --overwrite."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from study.outputs import atomic_folder, check_output
from tests.conftest import tiny_world

REPO = Path(__file__).resolve().parents[1]


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the md5 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world(tmp_path_factory.mktemp("outputs"), seed=4)


def prune_args(world: Path, out: Path, *extra: str) -> list[str]:
    return ["prune", "--model", str(world / "teacher"), "--paradigm", "layer", "--metric", "last", "--ratio", "0.3"] + [
        "--calibration",
        str(world / "data/train.json"),
        "--out",
        str(out),
        *extra,
    ]


def test_check_output_refuses_what_would_destroy_an_input(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="is the input"):
        check_output(source, [source], overwrite=True)
    with pytest.raises(ValueError, match="lies inside the input"):
        check_output(source / "pruned", [source], overwrite=True)
    with pytest.raises(ValueError, match="contains the input"):
        check_output(tmp_path, [source], overwrite=True)
    with pytest.raises(ValueError, match="is a file"):
        check_output(source / "config.json")
    with pytest.raises(FileExistsError, match="is not empty; pass --overwrite"):
        check_output(source, [tmp_path / "other"])
    assert check_output(source, [tmp_path / "other"], overwrite=True) == source
    assert check_output(tmp_path / "new", [source]) == tmp_path / "new"
    links = tmp_path / "links"  # a folder of links to a checkpoint (the teacher stage's link_checkpoint)
    links.mkdir()
    (links / "config.json").symlink_to(source / "config.json")
    with pytest.raises(ValueError, match="is the input"):
        check_output(source, [links], overwrite=True)


def test_a_failed_write_leaves_the_old_folder_and_no_partial_one(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_folder(out, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("boom")
    assert digest(out) == {"old.txt": hashlib.md5(b"old").hexdigest()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with atomic_folder(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_prune_into_its_own_source_is_refused_and_the_source_is_unchanged(world, capsys):
    from study.__main__ import main

    before = digest(world / "teacher")
    for out in (world / "teacher", world / "teacher" / "pruned", world):
        assert main(prune_args(world, out, "--overwrite")) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: output ") and "input" in err, err
    assert digest(world / "teacher") == before


def test_prune_into_a_non_empty_folder_is_refused_without_overwrite(world, tmp_path, capsys):
    from study.__main__ import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(prune_args(world, out)) == 2
    assert "is not empty; pass --overwrite" in capsys.readouterr().err
    assert digest(out) == {"notes.txt": hashlib.md5(b"mine").hexdigest()}


def test_overwrite_replaces_every_file_of_the_old_model(world, tmp_path):
    from transformers import AutoModelForImageTextToText

    from study.__main__ import main

    out = tmp_path / "out"
    out.mkdir()
    stale = ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model.safetensors.index.json", "pruning.json"]
    for name in stale:
        (out / name).write_text("stale")
    assert main(prune_args(world, out, "--overwrite")) == 0
    assert not set(stale[:3]) & {p.name for p in out.iterdir()}
    assert json.loads((out / "pruning.json").read_text())["paradigm"] == "layer"
    assert AutoModelForImageTextToText.from_pretrained(out).config.text_config.num_hidden_layers == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary sibling left


KILLED_WHILE_SAVING = """
import os, signal, sys
import study.pruning.run as run
from study.__main__ import main

def save_then_die(model, processor, out_dir, **kwargs):
    run_save(model, processor, out_dir, **kwargs)  # the weights are written, pruning.json is not
    os.kill(os.getpid(), signal.SIGKILL)

run_save, run.save_model = run.save_model, save_then_die
main(sys.argv[1:])
"""


@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
def test_a_save_killed_midway_leaves_the_old_folder_or_nothing(world, tmp_path, existing):
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "old.txt").write_text("old")
    script = tmp_path / "die.py"
    script.write_text(textwrap.dedent(KILLED_WHILE_SAVING))
    proc = subprocess.run([sys.executable, str(script), *prune_args(world, out, "--overwrite")], cwd=REPO, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    if existing:
        assert digest(out) == {"old.txt": hashlib.md5(b"old").hexdigest()}
    else:
        assert not out.exists()
    partial = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]
    assert len(partial) == 1 and (tmp_path / partial[0] / "model.safetensors").is_file()
    from study.__main__ import main

    assert main(prune_args(world, out, "--overwrite")) == 0  # the next write clears the leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == ["die.py", "out"]
