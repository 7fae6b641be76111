"""Label colours: each label's own colour from the store, and the paler tint used for predictions."""
from __future__ import annotations


def label_colours(label_defs) -> dict[str, str]:
    return {label.name: label.colour for label in label_defs}


def paler(colour: str, amount: float = 0.55) -> str:
    """Mix a #rrggbb colour with white: predictions are drawn paler than human labels."""
    value = colour.lstrip("#")
    if len(value) != 6:
        return colour
    rgb = [int(value[i:i + 2], 16) for i in (0, 2, 4)]
    mixed = [round(c + (255 - c) * amount) for c in rgb]
    return "#" + "".join(f"{c:02x}" for c in mixed)
