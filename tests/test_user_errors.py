"""Every refused input of the command line ends with one line, ``error: <message>``, exit status 2
and no traceback, before any model is loaded; ``--debug`` shows the traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_world

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny data, a tiny model folder, and the bad inputs the cases below refer to."""
    root = tiny_world(tmp_path_factory.mktemp("errors"), seed=5)
    samples = json.loads((root / "data/train.json").read_text())
    with_image = next(s for s in samples if "image" in s)
    (root / "missing_image.json").write_text(json.dumps([{**with_image, "image": "no/such.png"}]))
    turns = with_image["conversations"]
    (root / "not_alternating.json").write_text(json.dumps([{**with_image, "conversations": [turns[0], turns[0]]}]))
    truncated = root / "truncated"
    truncated.mkdir()
    for f in (root / "teacher").iterdir():
        data = f.read_bytes()
        (truncated / f.name).write_bytes(data[: len(data) // 2] if f.suffix == ".safetensors" else data)
    (root / "recovery.yaml").write_text("lr: 0.001\nlearning_rate: 0.1\n")
    return root


def prune(world: Path, *args: str, **replace: str) -> list[str]:
    options = {
        "--model": str(world / "teacher"),
        "--paradigm": "width",
        "--metric": "taylor",
        "--ratio": "0.3",
        "--calibration": str(world / "data/train.json"),
        "--samples": "4",
        "--out": str(world / "out"),
    }
    options.update({f"--{k.replace('_', '-')}": v for k, v in replace.items()})
    return ["prune", *(x for kv in options.items() for x in kv), *args]


def recover(world: Path, *args: str) -> list[str]:
    return ["recover", "--student", str(world / "teacher"), "--train", str(world / "data/train.json"), "--out", str(world / "out"), *args]


CASES = {
    "ratio above 1": (lambda w: prune(w, ratio="1.2"), "pruning ratio must be in [0, 1), got 1.2"),
    "missing model": (lambda w: prune(w, model=str(w / "nope")), "not a Hugging Face model folder"),
    "missing calibration file": (lambda w: prune(w, calibration=str(w / "nope.json")), "nope.json"),
    "unknown metric": (lambda w: prune(w, metric="bogus"), "unknown width importance metric 'bogus'"),
    "metric of the other paradigm": (lambda w: prune(w, paradigm="layer", metric="taylor"), "unknown layer importance metric"),
    "missing image": (
        lambda w: prune(w, calibration=str(w / "missing_image.json"), samples="1", image_folder=str(w / "data/images")),
        "image file not found",
    ),
    "turns not alternating": (lambda w: prune(w, calibration=str(w / "not_alternating.json"), samples="1"), "must alternate"),
    "truncated weights": (lambda w: prune(w, paradigm="layer", metric="last", model=str(w / "truncated")), "truncated/model.safetensors"),
    "fewer samples than asked": (lambda w: prune(w, samples="64"), "holds 16 samples, fewer than the 64"),
    "zero samples": (lambda w: prune(w, samples="0"), "--samples: must be >= 1, got 0"),
    "zero batch size": (lambda w: prune(w, "--batch-size", "0"), "--batch-size: must be >= 1, got 0"),
    "round-to zero": (lambda w: prune(w, "--round-to", "0"), "--round-to: must be >= 1, got 0"),
    "round-to negative": (lambda w: prune(w, "--round-to", "-64"), "--round-to: must be >= 1, got -64"),
    "missing image folder": (lambda w: prune(w, image_folder=str(w / "nope")), "--image-folder: folder not found"),
    "unknown loss": (lambda w: recover(w, "--loss", "bogus"), "loss must join some of"),
    "KD without a teacher": (lambda w: recover(w, "--loss", "kd_logit"), "loss 'kd_logit' needs a teacher"),
    "fraction above 1": (lambda w: recover(w, "--fraction", "1.5"), "a data fraction must be in (0, 1], got 1.5"),
    "unknown recovery setting": (lambda w: recover(w, "--config", str(w / "recovery.yaml")), "unknown setting(s) ['learning_rate']"),
    "recover into the student": (lambda w: recover(w, "--out", str(w / "teacher")), "is the input"),
}


@pytest.fixture
def no_model_loads(monkeypatch):
    """Every case is refused before a model is loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr("study.pruning.run.load_model", refuse)
    monkeypatch.setattr("study.recovery.train.load_student", refuse)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_refused_input_is_one_error_line_and_status_2(world, case, capsys, no_model_loads):
    from study.__main__ import main

    argv, message = CASES[case]
    try:
        status = main(argv(world))
    except SystemExit as exit:  # argparse refuses bad values itself, with the same status
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]  # argparse's own refusals end "python -m study prune: error: ..."
    assert last.startswith("error: ") or last.startswith("python -m study ") and ": error: " in last, err
    assert not (world / "out").exists()


def test_the_process_prints_no_traceback_and_debug_shows_it(world):
    env = {k: v for k, v in os.environ.items() if k != "STUDY_DEBUG"}
    argv = [sys.executable, "-m", "study", *prune(world, ratio="1.2")]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=env)
    assert (proc.returncode, proc.stderr) == (2, "error: pruning ratio must be in [0, 1), got 1.2\n")
    debug = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env={**env, "STUDY_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ValueError: pruning ratio" in debug.stderr


def test_debug_flag_reraises_and_programming_errors_are_not_swallowed(world, monkeypatch):
    from study.__main__ import main

    with pytest.raises(ValueError, match="pruning ratio"):
        main(["--debug", *prune(world, ratio="1.2")])

    def bug(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr("study.pruning.run.prune_checkpoint", bug)
    with pytest.raises(TypeError, match="a bug"):
        main(prune(world))


def test_an_unsupported_backbone_is_one_error_line(world, tmp_path, capsys):
    """Width pruning needs the backbone's coupled slices; a backbone without them is refused by name."""
    from transformers import AutoConfig, AutoProcessor, LlavaConfig, LlavaForConditionalGeneration, OlmoConfig

    from study.__main__ import main

    teacher = AutoConfig.from_pretrained(world / "teacher")
    text = OlmoConfig(
        vocab_size=teacher.text_config.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    config = LlavaConfig(
        vision_config=teacher.vision_config,
        text_config=text,
        image_token_index=teacher.image_token_index,
        image_seq_length=teacher.image_seq_length,
    )
    LlavaForConditionalGeneration(config).save_pretrained(tmp_path / "olmo")
    AutoProcessor.from_pretrained(world / "teacher").save_pretrained(tmp_path / "olmo")
    argv = prune(world, model=str(tmp_path / "olmo"), metric="magnitude_l1", out=str(tmp_path / "out"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: unsupported language backbone 'olmo'; supported: " in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
