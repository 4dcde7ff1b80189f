"""Loading and saving models as plain Hugging Face folders (safetensors + config + processor)."""

from __future__ import annotations

import shutil
from pathlib import Path

from transformers import AutoModelForImageTextToText, AutoProcessor


def load_model(path: str | Path, device: str | None = None):
    """Model and processor of a local HF folder; no checkpoint code is run (no trust_remote_code)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"not a Hugging Face model folder (no config.json): {path}")
    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=False)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=False)
    if device is not None:
        model.to(device)
    return model.eval(), processor


def save_model(model, processor, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    return out_dir


def link_checkpoint(src: str | Path, out_dir: str | Path) -> Path:
    """Make ``out_dir`` a folder of symlinks to the files of an existing HF checkpoint ``src``."""
    src, out_dir = Path(src).resolve(), Path(out_dir)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"not a Hugging Face model folder (no config.json): {src}")
    if out_dir.is_symlink() or out_dir.is_file():
        out_dir.unlink()
    elif out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    for item in src.iterdir():
        (out_dir / item.name).symlink_to(item)
    return out_dir
