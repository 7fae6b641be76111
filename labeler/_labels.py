"""Label definitions: the `Label` record and the rules for names, colours and sources."""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import LabelStoreError

MAX_NAME_LENGTH = 100
SOURCES = ("human", "model", "import")

# Ten well-separated colours for points on a light or dark map (the common "category10" set),
# then ten lighter companions; a project with more labels cycles through them.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
           "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")
_HEX_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{3})")


@dataclass(frozen=True)
class Label:
    """One label definition."""

    id: int          # stable id in label_defs; never reused
    name: str        # unique, validated by `validate_name`
    colour: str      # "#rrggbb", lower case
    position: int    # display order: labels sort by (position, id)


def validate_name(name) -> str:
    """The label name stripped of surrounding blanks; `LabelStoreError` when it is not a usable name."""
    if not isinstance(name, str):
        raise LabelStoreError(f"A label name must be text, not {type(name).__name__} ({name!r}). "
                              f"Pass the name as a string, e.g. str({name!r}).")
    stripped = name.strip()
    if not stripped:
        raise LabelStoreError(f"Label name {name!r} is empty. Give a name with at least one visible character.")
    if len(stripped) > MAX_NAME_LENGTH:
        raise LabelStoreError(f"Label name {stripped[:20]!r}... has {len(stripped)} characters; at most "
                              f"{MAX_NAME_LENGTH} are allowed. Use a shorter name.")
    control = sorted({ch for ch in stripped if unicodedata.category(ch) == "Cc"})
    if control:
        raise LabelStoreError(f"Label name {stripped!r} contains control characters {control!r} (tabs, "
                              f"line breaks, ...), which are not allowed. Remove them or use spaces.")
    return stripped


def validate_colour(colour) -> str:
    """`#rgb` or `#rrggbb` (any case) as lower-case `#rrggbb`."""
    if not isinstance(colour, str) or not _HEX_COLOUR.fullmatch(colour.strip()):
        raise LabelStoreError(f"Colour {colour!r} is not a hex colour. Use '#rrggbb' (e.g. '#1f77b4') or '#rgb'.")
    digits = colour.strip()[1:].lower()
    if len(digits) == 3:
        digits = "".join(ch * 2 for ch in digits)
    return "#" + digits


def validate_source(source) -> str:
    if source not in SOURCES:
        raise LabelStoreError(f"Label source {source!r} is unknown; use one of {', '.join(SOURCES)}.")
    return source


def next_colour(used: Iterable[str]) -> str:
    """The first palette colour no label uses yet, else the palette again from the start."""
    taken = set(used)
    for colour in PALETTE:
        if colour not in taken:
            return colour
    return PALETTE[len(taken) % len(PALETTE)]


def plural(count: int, noun: str) -> str:
    """'1 item', '5,000 items'."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"
