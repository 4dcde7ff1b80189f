"""What the toolkit supports, as markdown tables built from its registries (the README's support
section is this output: ``python -m study support``; a test keeps the two equal)."""

from __future__ import annotations

from study.models.architectures import SPECS
from study.models.families import FAMILIES

MARKER = "<!-- support tables: python -m study support -->"
RECIPES = "every recipe (LoRA: on a backbone of the second table)"


def support_tables() -> str:
    """Two tables: each family (where its backbone and projector are; layerwise pruning and every
    recovery recipe work for all), and each text backbone (what widthwise and hybrid pruning do)."""
    lines = [
        MARKER,
        "",
        "| family (`model_type`) | language backbone | projector (`trainable: projector`) | layerwise | recovery |",
        "|---|---|---|---|---|",
    ]
    for name, family in sorted(FAMILIES.items()):
        layer = "yes" + (f" (the first blocks fed by `vision_config.{family.vision_fed_blocks}` stay)" if family.vision_fed_blocks else "")
        projector = ", ".join(f"`{p}`" for p in family.projector)
        lines.append(f"| `{name}` | `{family.backbone}` | {projector} | {layer} | {RECIPES} |")
    lines += ["", "| text backbone (`model_type`) | widthwise and hybrid |", "|---|---|"]
    for name, spec in sorted(SPECS.items()):
        heads = "MLP channels only (the attention derives `head_dim` from the hidden size: every head stays)"
        cut = heads if spec.heads_fixed else "query heads or KV groups, and MLP channels"
        if spec.fused:
            cut += " (fused " + ", ".join(f"`{path}`" for path in dict.fromkeys(dict(spec.fused).values())) + " cut by rows)"
        if spec.heads_fixed_by_rope:
            rope = ", ".join(f"`{r}`" for r in spec.heads_fixed_by_rope)
            cut += f"; MLP channels only with rope type {rope} (the config checks its factors against `hidden_size / heads`)"
        lines.append(f"| `{name}` | {cut} |")
    lines += ["", "Widthwise and hybrid pruning of another backbone stop with an error that lists these."]
    return "\n".join(lines) + "\n"
