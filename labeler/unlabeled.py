"""`labeler train --unlabeled`: learn from the folder's unlabeled images too (`engine.semi`, FixMatch-style).

The unlabeled images are the folder's images without a label in the chosen source (the label store, the CSV,
the masks or the points), and those a file names (`--unlabeled TXT`: their labels, if any, are set aside, so a
benchmark can hide the labels it has). Test images are never among them.
"""
from __future__ import annotations

from pathlib import Path

from engine.errors import InputError


def add_unlabeled_options(parser) -> None:
    group = parser.add_argument_group("unlabeled images (FixMatch-style pseudo-labels; classifiers, multi-label and "
                                      "U-Nets)")
    group.add_argument("--unlabeled", nargs="?", const="", default=None, metavar="TXT",
                       help="also learn from FOLDER's images that have no label; with TXT, also from the images it "
                            "names, one a line, whose labels are set aside")
    group.add_argument("--unlabeled-threshold", type=float, default=0.95, metavar="P",
                       help="use an unlabeled image's prediction as its label only where it is at least this "
                            "confident (default %(default)s)")
    group.add_argument("--unlabeled-ratio", type=int, default=2, metavar="N",
                       help="unlabeled images per labeled image in each training step (default %(default)s)")
    group.add_argument("--unlabeled-weight", type=float, default=1.0, metavar="W",
                       help="weight of the unlabeled images' loss beside the labeled one (default %(default)s)")


def split_unlabeled(args, images: list[str], items: list[str], labeler) -> tuple[list[str], list[str]]:
    """(the labeled items, the unlabeled images) under --unlabeled; (items, []) without it."""
    if args.unlabeled is None:
        return items, []
    hidden: set[str] = set()
    if args.unlabeled:
        listed = Path(args.unlabeled)
        if not listed.is_file():
            raise InputError(f"--unlabeled {args.unlabeled!r} does not exist. Give a file of image names, one a line.")
        names = {line.strip() for line in listed.read_text().splitlines() if line.strip()}
        hidden = {item for item in images if item in names or Path(item).name in names}
        if not hidden:
            raise InputError(f"--unlabeled {args.unlabeled!r} names none of the {len(images)} images in the folder.")
    labeled = [item for item in items if item not in hidden and has_label(labeler, item)]
    taken = set(labeled)
    unlabeled = [item for item in images if item not in taken]
    if not unlabeled:
        raise InputError("--unlabeled: every image in the folder has a label, so there is nothing unlabeled to learn "
                         "from. Name images whose labels to set aside: --unlabeled TXT.")
    if not labeled:
        raise InputError("--unlabeled: no labeled image is left to train on.")
    return labeled, unlabeled


def has_label(labeler, item: str) -> bool:
    """Whether the label source has `item` (a CSV without its row raises InputError)."""
    try:
        labeler(item)
    except InputError:
        return False
    return True
