"""Output folders that never destroy data: the one mechanism every writer of a model folder uses.

A command (prune, recover, convert-bunny, the teacher stage, recovery checkpoints) writes a folder
only after :func:`check_output` said that the folder is not its input, does not lie inside an
input or contain one, and is empty or absent (or the caller asked to ``overwrite`` it). The
folder is written by :func:`atomic_folder`: into a hidden temporary sibling
(``.<name>.partial-<pid>``) that is renamed into place only once complete, so a run killed while
saving leaves the old folder (or nothing) at the output path, never a half-written one. Torch-free,
so that every layer can use it; so is :func:`write_json`, the one writer of the study's JSON records.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL = ".partial-"  # infix of the temporary sibling a folder is written into
OLD = ".old-"  # infix of the replaced folder while the new one moves into place


def _input_paths(inputs: Iterable[str | Path | None]) -> list[Path]:
    """Each input resolved, plus where the files of an input folder of links point (a teacher
    stage that links a local checkpoint), so that the linked checkpoint counts as an input too."""
    paths = []
    for item in inputs:
        if item is None:
            continue
        path = Path(item).resolve()
        paths.append(path)
        if path.is_dir():
            paths += sorted({f.resolve().parent for f in Path(item).iterdir() if f.is_symlink()} - {path})
    return paths


def check_output(out: str | Path, inputs: Iterable[str | Path | None] = (), overwrite: bool = False) -> Path:
    """Refuse an output folder that would destroy data; return it as a ``Path``.

    Raises ``ValueError`` when ``out`` is one of ``inputs``, lies inside one or contains one, or
    is a file; ``FileExistsError`` when it is a non-empty folder and ``overwrite`` is false."""
    out = Path(out)
    target = out.resolve()
    for source in _input_paths(inputs):
        if target == source:
            raise ValueError(f"output {out} is the input {source}: choose another output folder")
        if source in target.parents:
            raise ValueError(f"output {out} lies inside the input {source}: choose a folder outside it")
        if target in source.parents:
            raise ValueError(f"output {out} contains the input {source}: choose a folder that does not hold it")
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} is a file, expected a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder {out} is not empty; pass --overwrite (notebooks: overwrite=True) to replace it")
    return out


def _remove_leftovers(out: Path) -> None:
    """Temporary siblings of ``out`` left by a run that was killed while saving."""
    for infix in (PARTIAL, OLD):
        for leftover in out.parent.glob(f".{out.name}{infix}*"):
            shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def atomic_folder(out: str | Path, inputs: Iterable[str | Path | None] = (), overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out``; when the block ends without an error, it
    replaces ``out`` (checked by :func:`check_output` first). On an error it is removed and ``out``
    is untouched; a killed process leaves only a hidden ``.<name>.partial-*`` sibling, which the
    next write of ``out`` removes."""
    out = check_output(out, inputs, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    tmp = out.with_name(f".{out.name}{PARTIAL}{os.getpid()}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.is_symlink() or out.exists():
        old = out.with_name(f".{out.name}{OLD}{os.getpid()}")
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    else:
        os.rename(tmp, out)


def write_json(data: dict | list, path: str | Path) -> Path:
    """``data`` as indented JSON at ``path`` (its folder created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
