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


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    value = colour.lstrip("#")
    return tuple(int(value[i:i + 2], 16) for i in (0, 2, 4)) if len(value) == 6 else (153, 153, 153)


def label_frames(names: list[str], labels, colours: dict[str, str]):
    """(n, 3) RGB frame colour per item from its human label; -1 rows (unlabeled) get no frame."""
    import numpy as np
    table = np.array([hex_to_rgb(colours.get(name, "#999999")) for name in names] or [(0, 0, 0)], dtype=np.int16)
    frames = np.full((len(labels), 3), -1, dtype=np.int16)
    has = labels >= 0
    frames[has] = table[labels[has]]
    return frames
