"""Synthetic scenes: coloured shapes on a 3x3 grid, rendered with PIL.

One object per grid cell, so that with a vision patch the size of a cell every image token sees
exactly one object (or background). The background is mid-grey, which is close to zero after
CLIP normalisation: on white, the background dominated every patch and the image tokens of
different objects collapsed onto each other.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

GRID = 3
POSITIONS = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 190),
    "orange": (250, 140, 30),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
BACKGROUND = (128, 128, 128)


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    cell: int  # row-major index into POSITIONS

    @property
    def kind(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]

    def at(self, cell: int) -> SceneObject | None:
        return next((o for o in self.objects if o.cell == cell), None)

    def kinds(self) -> set[str]:
        return {o.kind for o in self.objects}

    def to_json(self) -> list[dict]:
        return [{"colour": o.colour, "shape": o.shape, "cell": o.cell} for o in self.objects]


def all_kinds() -> list[tuple[str, str]]:
    return [(c, s) for c in COLOURS for s in SHAPES]


def kind_popularity(seed: int) -> list[tuple[str, str]]:
    """Kinds from most to least frequent; scenes draw kinds with Zipf-like weights in this order,
    so POPE's 'popular' negatives (frequent objects absent from the image) are meaningful."""
    kinds = all_kinds()
    random.Random(f"popularity-{seed}").shuffle(kinds)
    return kinds


def sample_scene(rng: random.Random, popularity: list[tuple[str, str]], min_objects: int, max_objects: int) -> Scene:
    """A scene of distinct kinds in distinct cells."""
    if not 1 <= min_objects <= max_objects <= GRID * GRID:
        raise ValueError(f"need 1 <= min_objects <= max_objects <= {GRID * GRID}, got {min_objects}, {max_objects}")
    n = rng.randint(min_objects, max_objects)
    weights = [1.0 / math.sqrt(rank + 1) for rank in range(len(popularity))]
    chosen: list[tuple[str, str]] = []
    while len(chosen) < n:
        kind = rng.choices(popularity, weights)[0]
        if kind not in chosen:
            chosen.append(kind)
    cells = rng.sample(range(GRID * GRID), n)
    objects = sorted((SceneObject(c, s, cell) for (c, s), cell in zip(chosen, cells)), key=lambda o: o.cell)
    return Scene(tuple(objects))


def render(scene: Scene, cell_px: int) -> Image.Image:
    """Draw the scene; each object fills most of its cell."""
    size = GRID * cell_px
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    margin = max(1, cell_px // 8)
    for obj in scene.objects:
        row, col = divmod(obj.cell, GRID)
        x0, y0 = col * cell_px + margin, row * cell_px + margin
        x1, y1 = (col + 1) * cell_px - margin - 1, (row + 1) * cell_px - margin - 1
        _draw_shape(draw, obj.shape, (x0, y0, x1, y1), COLOURS[obj.colour])
    return image


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: tuple) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w = x1 - x0
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif shape == "cross":
        t = max(1, round(w / 6))
        draw.rectangle((cx - t, y0, cx + t, y1), fill=fill)
        draw.rectangle((x0, cy - t, x1, cy + t), fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(1, round(w / 5)))
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
