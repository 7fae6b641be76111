"""A generated corpus of hostile inputs: broken and odd image files, odd file names, links, label
names and label CSVs, each kind with a short id, what it is and what should happen to it.

The tests (tests/test_hostile*.py) and the benchmark (bench/hostile.py) share it, so the table the
benchmark prints and the regression tests always cover the same inputs. Everything is written
here, never downloaded, and small: the decompression bomb claims 30,000 x 30,000 pixels in a
~100 kB file. A kind this machine cannot make (a non-UTF-8 name on a file system that refuses
it, an unreadable file when running as root, who reads everything) is reported with the reason
instead of being faked.

    made = write_image_corpus(tmp_path / "hostile")     # {kind id: Made}
    files = write_label_files(tmp_path / "csv")         # {kind id: CSV path}
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

BOMB_SIDE = 30_000
STRIP_SIZE = (1, 20_000)
GOOD = tuple(f"good/good_{i}.{'jpg' if i % 2 else 'png'}" for i in range(6))
DUPLICATES = ("dup/one/photo.png", "dup/two/photo.png")
UNKNOWN_NAMES = ("not/here.png", "missing.jpg")


class NotApplicable(Exception):
    """A kind that cannot be made on this machine; the message says why."""


@dataclass(frozen=True)
class Kind:
    """One kind of hostile input: what the tests and the benchmark table call it and expect of it."""

    id: str            # short id, used as test id and table row
    what: str          # what the input is
    expect: str        # what should happen to it


@dataclass(frozen=True)
class FileKind(Kind):
    """An entry of an image folder, with how it writes itself and what the engine must make of it."""

    write: Callable[[Path], list[str]] | None = field(repr=False, default=None)  # writes it; relative names
    load: str | None = None    # None: engine.data.load_image decodes it; else a fragment of the ImageReadError reason
    embed: str | None = None   # None: engine.embed embeds it; else a fragment of its reported reason


@dataclass(frozen=True)
class Made:
    """What `write_image_corpus` wrote for one kind, or why it could not."""

    kind: FileKind
    paths: list[str]           # relative names (os.fsdecode form: a non-UTF-8 byte is a surrogate)
    skip: str | None = None    # why the kind could not be made here


# ---- image bytes --------------------------------------------------------------------------------

def image_bytes(fmt: str, mode: str = "RGB", size=(48, 40), seed: int = 0, **save) -> bytes:
    """A small noise image in `mode`, encoded as `fmt`."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))
    image = rgb.convert(mode) if mode != "RGB" else rgb
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return out.getvalue()


def _png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)


def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A valid 1-bit grey PNG of side x side pixels, all black: ~110 kB that would decode to gigabytes."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (side + 7) // 8)          # filter byte + packed pixels
    packer = zlib.compressobj(9)
    block = row * 1000
    data = b"".join(packer.compress(block) for _ in range(side // 1000))
    data += packer.compress(row * (side % 1000)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def png_with_bad_trailing_chunk() -> bytes:
    """A valid PNG, then a text chunk with a wrong checksum between the pixels (IDAT) and IEND."""
    good = image_bytes("PNG", seed=3)
    end = good.rindex(b"IEND") - 4
    return good[:end] + _png_chunk(b"tEXt", b"Comment\x00garbage", crc=0xDEADBEEF) + b"\xff" * 7 + good[end:]


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6                               # orientation: rotate 90 degrees clockwise to show
    return image_bytes("JPEG", size=(48, 40), seed=4, exif=exif.tobytes())


def _frames(fmt: str, count: int = 3, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(5)
    frames = [Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)).convert(mode)
              for _ in range(count)]
    out = io.BytesIO()
    frames[0].save(out, format=fmt, save_all=True, append_images=frames[1:])
    return out.getvalue()


def _palette_with_transparency() -> bytes:
    image = Image.new("P", (48, 40), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (10, 10, 30, 30))
    out = io.BytesIO()
    image.save(out, format="PNG", transparency=0)
    return out.getvalue()


def _sixteen_bit() -> bytes:
    ramp = (np.arange(48 * 40, dtype=np.uint32).reshape(40, 48) * 34).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(ramp).save(out, format="PNG")   # uint16 -> mode I;16
    return out.getvalue()


# ---- writers: each writes one kind under `folder` and returns the relative names ------------------

def _file(name: str, data: Callable[[], bytes]) -> Callable[[Path], list[str]]:
    def write(folder: Path) -> list[str]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data())
        return [name]
    return write


def _truncated(fmt: str, seed: int) -> Callable[[], bytes]:
    def data() -> bytes:
        whole = image_bytes(fmt, size=(96, 80), seed=seed)
        return whole[: len(whole) * 3 // 5]
    return data


def _non_utf8_name(folder: Path) -> list[str]:
    raw = os.fsencode(folder) + b"/caf\xe9.png"
    try:
        with open(raw, "wb") as f:
            f.write(image_bytes("PNG", seed=6))
    except (OSError, ValueError) as err:
        raise NotApplicable(f"this file system refuses non-UTF-8 names ({err})") from None
    return [os.fsdecode(b"caf\xe9.png")]


def _symlink_loop(folder: Path) -> list[str]:
    try:
        os.symlink("loop_b.jpg", folder / "loop_a.jpg")
        os.symlink("loop_a.jpg", folder / "loop_b.jpg")
    except (OSError, NotImplementedError) as err:
        raise NotApplicable(f"cannot make symbolic links here ({err})") from None
    return ["loop_a.jpg", "loop_b.jpg"]


def _symlink_outside(folder: Path) -> list[str]:
    outside = folder.parent / f"{folder.name}-outside"
    outside.mkdir(exist_ok=True)
    (outside / "target.png").write_bytes(image_bytes("PNG", seed=7))
    try:
        os.symlink(outside / "target.png", folder / "outside_link.png")
    except (OSError, NotImplementedError) as err:
        raise NotApplicable(f"cannot make symbolic links here ({err})") from None
    return ["outside_link.png"]


def _unreadable(folder: Path) -> list[str]:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        raise NotApplicable("running as root: file permissions do not stop root from reading")
    path = folder / "no_permission.png"
    path.write_bytes(image_bytes("PNG", seed=8))
    path.chmod(0)
    if os.access(path, os.R_OK):
        raise NotApplicable("this file system ignores file permissions")
    return ["no_permission.png"]


def _fifo(folder: Path) -> list[str]:
    if not hasattr(os, "mkfifo"):
        raise NotApplicable("this system has no named pipes")
    os.mkfifo(folder / "pipe.jpg")
    return ["pipe.jpg"]


def _several(named: dict[str, Callable[[], bytes]]) -> Callable[[Path], list[str]]:
    def write(folder: Path) -> list[str]:
        return [name for name, data in named.items() for name in _file(name, data)(folder)]
    return write


def _png(seed: int) -> Callable[[], bytes]:
    return lambda: image_bytes("PNG", seed=seed)


_LONG_NAME = "n" * 251 + ".png"   # 255 bytes: the longest name most file systems allow
_BOMB_REASON = "decompression bomb"

FILE_KINDS: tuple[FileKind, ...] = (
    FileKind("good", "six ordinary PNG and JPEG images", "embedded",
             _several({name: (lambda i=i: image_bytes("JPEG" if i % 2 else "PNG", seed=100 + i))
                       for i, name in enumerate(GOOD)})),
    FileKind("zero_byte", "a 0-byte file named .jpg", "skipped: empty file", _file("zero_byte.jpg", bytes),
             load="empty file", embed="empty file"),
    FileKind("truncated_jpeg", "a JPEG cut off at 60%", "skipped: truncated image data",
             _file("truncated.jpg", _truncated("JPEG", 1)), load="truncated", embed="truncated"),
    FileKind("truncated_png", "a PNG cut off at 60%", "skipped: truncated image data",
             _file("truncated.png", _truncated("PNG", 2)), load="truncated", embed="truncated"),
    FileKind("text_as_jpg", "a text file named .jpg", "skipped: not an image",
             _file("notes.jpg", lambda: b"shopping list: milk, eggs\n"), load="not an image", embed="not an image"),
    FileKind("html_as_png", "an HTML page named .png", "skipped: not an image",
             _file("page.png", lambda: b"<!doctype html><html><body><script>alert(1)</script></body></html>\n"),
             load="not an image", embed="not an image"),
    FileKind("bomb_png", f"a PNG claiming {BOMB_SIDE:,} x {BOMB_SIDE:,} pixels (~100 kB)",
             "skipped: decompression bomb", _file("bomb.png", bomb_png), load=_BOMB_REASON, embed=_BOMB_REASON),
    FileKind("strip_1x20000", "a 1 x 20,000 pixel strip", "embedded (squashed to a square)",
             _file("strip.png", lambda: image_bytes("PNG", size=STRIP_SIZE, seed=9))),
    FileKind("cmyk_jpeg", "a CMYK JPEG", "embedded (converted to RGB)",
             _file("cmyk.jpg", lambda: image_bytes("JPEG", mode="CMYK", seed=10))),
    FileKind("png_16bit", "a 16-bit greyscale PNG (mode I;16)", "embedded (scaled to 8 bits)",
             _file("sixteen_bit.png", _sixteen_bit)),
    FileKind("palette_transparency", "a palette PNG with a transparent colour", "embedded (over white)",
             _file("palette.png", _palette_with_transparency)),
    FileKind("la_image", "a greyscale PNG with alpha (mode LA)", "embedded (over white)",
             _file("grey_alpha.png", lambda: image_bytes("PNG", mode="LA", seed=11))),
    FileKind("exif_rotated", "a 48 x 40 JPEG with EXIF orientation 6", "embedded upright (40 x 48)",
             _file("rotated.jpg", _exif_rotated)),
    FileKind("animated_gif", "a 3-frame animated GIF", "embedded (first frame)", _file("animated.gif",
                                                                                       lambda: _frames("GIF"))),
    FileKind("multipage_tiff", "a 3-page TIFF", "embedded (first page)", _file("pages.tiff", lambda: _frames("TIFF"))),
    FileKind("png_bad_trailing_chunk", "a PNG with a bad-checksum chunk and garbage after its pixels",
             "embedded (the pixels are intact)", _file("bad_tail.png", png_with_bad_trailing_chunk)),
    FileKind("png_named_jpg", "a PNG named .jpg", "embedded (the format is read from the bytes)",
             _file("really_png.jpg", _png(12))),
    FileKind("folder_named_jpg", "a folder named .jpg holding an image", "the folder is walked, its image embedded",
             _file("folder.jpg/inside.png", _png(13))),
    FileKind("non_utf8_name", "a file named b'caf\\xe9.png' (Latin-1, not UTF-8)",
             "skipped: the name is not UTF-8 (rename it)", _non_utf8_name, embed="not valid UTF-8"),
    FileKind("long_name", "a 255-byte file name", "embedded", _file(_LONG_NAME, _png(14))),
    FileKind("name_spaces", "a name with spaces", "embedded", _file(" name with  spaces .png", _png(15))),
    FileKind("name_quotes", "a name with ' and \" quotes", "embedded", _file("it's \"quoted\".png", _png(16))),
    FileKind("name_newline", "a name with a line break", "embedded", _file("line\nbreak.png", _png(17))),
    FileKind("name_leading_dash", "a name starting with a dash", "embedded", _file("-rf.png", _png(18))),
    FileKind("name_formula", "a name starting with =", "embedded", _file("=1+1.png", _png(19))),
    FileKind("symlink_loop", "two links pointing at each other", "skipped: broken symbolic link",
             _symlink_loop, load="symbolic link", embed="broken symbolic link"),
    FileKind("symlink_outside", "a link to an image outside the folder", "embedded (links are followed)",
             _symlink_outside),
    FileKind("no_read_permission", "a file without read permission (mode 000)", "skipped: permission denied",
             _unreadable, load="permission denied", embed="permission denied"),
    FileKind("named_pipe", "a named pipe (FIFO) named .jpg", "skipped: not a regular file (never blocks)",
             _fifo, load="not a regular file", embed="not a regular file"),
    FileKind("duplicate_names", "photo.png in two sub-folders, different pixels", "both embedded as two items",
             _several({name: _png(20 + i) for i, name in enumerate(DUPLICATES)})),
)


def write_image_corpus(folder) -> dict[str, Made]:
    """Write every file kind into `folder` (created); {kind id: Made}. A kind that cannot be made has `skip` set."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for kind in FILE_KINDS:
        try:
            made[kind.id] = Made(kind, kind.write(folder))
        except NotApplicable as err:
            made[kind.id] = Made(kind, [], skip=str(err))
    return made


# ---- labels: names and CSV files ----------------------------------------------------------------

@dataclass(frozen=True)
class LabelKind(Kind):
    """A label name given to the store."""

    name: str = ""                 # the label name given to the store
    refused: str | None = None     # None: stored and read back exactly; else a fragment of the error


LABEL_KINDS: tuple[LabelKind, ...] = (
    LabelKind("label_empty", "an empty label name", "refused: the name is empty", "", refused="is empty"),
    LabelKind("label_blank", "a label name of spaces only", "refused: the name is empty", "   ", refused="is empty"),
    LabelKind("label_10k", "a 10,000-character label name", "refused: at most 100 characters", "x" * 10_000,
              refused="at most 100"),
    LabelKind("label_html", "a label name that is HTML", "stored and read back exactly",
              "<img src=x onerror=alert(1)>"),
    LabelKind("label_formula_eq", "a label name starting with =", "stored exactly; exported as '=1+1", "=1+1"),
    LabelKind("label_formula_plus", "a label name starting with +", "stored exactly; exported as '+cmd", "+cmd"),
    LabelKind("label_formula_minus", "a label name starting with -", "stored exactly; exported as '-2", "-2"),
    LabelKind("label_formula_at", "a label name starting with @", "stored exactly; exported as '@SUM(A1)",
              "@SUM(A1)"),
)


@dataclass(frozen=True)
class CsvKind(Kind):
    """A label CSV, with what importing it must give."""

    write: Callable[[Path], None] | None = field(repr=False, default=None)   # writes the CSV at the path given
    refused: str | None = None     # None: imported; else a fragment of the LabelFileError message
    labels: dict = field(default_factory=dict)   # what an import gives: image name -> label


def _csv_text(rows, encoding="utf-8", prefix=b"") -> Callable[[Path], None]:
    def write(path: Path) -> None:
        text = "".join(",".join(_quoted(cell) for cell in row) + "\n" for row in rows)
        path.write_bytes(prefix + text.encode(encoding))
    return write


def _quoted(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"' if any(c in cell for c in ',"\n\r') else cell


_FORMULAS = {GOOD[0]: "=1+1", GOOD[1]: "'+cmd", GOOD[2]: "-2", GOOD[3]: "'@SUM(A1)"}
_ODD_NAMES = {" name with  spaces .png": "spaces", "it's \"quoted\".png": "quotes", "line\nbreak.png": "newline",
              "-rf.png": "dash", "=1+1.png": "formula"}

CSV_KINDS: tuple[CsvKind, ...] = (
    CsvKind("csv_unknown_names", "a CSV naming files that are not in the folder",
            "imported the known rows; the unknown names reported",
            _csv_text([("image_name", "tags"), (GOOD[0], "cat"), *((name, "dog") for name in UNKNOWN_NAMES)]),
            labels={GOOD[0]: "cat"}),
    CsvKind("csv_latin1", "a CSV in Latin-1 (invalid UTF-8)", "refused: not UTF-8, nothing changed",
            _csv_text([("image_name", "tags"), (GOOD[0], "caf\xe9")], encoding="latin-1"), refused="not UTF-8"),
    CsvKind("csv_bom", "a UTF-8 CSV starting with a byte-order mark", "imported (the mark is ignored)",
            _csv_text([("image_name", "tags"), (GOOD[1], "dog")], prefix=b"\xef\xbb\xbf"), labels={GOOD[1]: "dog"}),
    CsvKind("csv_missing_column", "a CSV without the tags column", "refused: no column 'tags', nothing changed",
            _csv_text([("image_name",), (GOOD[0],)]), refused="no column 'tags'"),
    CsvKind("csv_extra_columns", "a CSV with two more columns", "imported (extra columns ignored)",
            _csv_text([("image_name", "tags", "notes", "score"), (GOOD[2], "bird", "=HYPERLINK(1)", "0.5")]),
            labels={GOOD[2]: "bird"}),
    CsvKind("csv_empty_label", "a CSV row whose label is empty", "the row is counted as without a label",
            _csv_text([("image_name", "tags"), (GOOD[3], ""), (GOOD[4], "fish")]), labels={GOOD[4]: "fish"}),
    CsvKind("csv_long_label", "a CSV row with a 10,000-character label", "refused: names the row, nothing changed",
            _csv_text([("image_name", "tags"), (GOOD[0], "ok"), (GOOD[1], "x" * 10_000)]), refused="row 3"),
    CsvKind("csv_html_label", "a CSV whose label is HTML", "imported exactly",
            _csv_text([("image_name", "tags"), (GOOD[5], "<img src=x onerror=alert(1)>")]),
            labels={GOOD[5]: "<img src=x onerror=alert(1)>"}),
    CsvKind("csv_formula_labels", "a CSV of formula labels, some quote-prefixed as exports write them",
            "imported; a quote before a formula is dropped",
            _csv_text([("image_name", "tags"), *_FORMULAS.items()]),
            labels={name: cell.lstrip("'") for name, cell in _FORMULAS.items()}),
    CsvKind("csv_odd_file_names", "a CSV naming files with spaces, quotes, a line break, = and a leading dash",
            "imported exactly", _csv_text([("image_name", "tags"), *_ODD_NAMES.items()]), labels=dict(_ODD_NAMES)),
)


def write_label_files(folder) -> dict[str, Path]:
    """Write every CSV kind into `folder` (created) as `<kind id>.csv`; {kind id: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind in CSV_KINDS:
        paths[kind.id] = folder / f"{kind.id}.csv"
        kind.write(paths[kind.id])
    return paths


# ---- a folder that changes while it is embedded -------------------------------------------------

CHANGING_FOLDER = Kind("changing_folder", "files added, removed and replaced while engine.embed runs",
                       "the rest embedded; the removed file reported (file not found); replaced and added files "
                       "embedded by the next run")


class FolderChanger:
    """A progress callback for `engine.embed` that changes the folder once, after the first batch.

    It removes `removed` and overwrites `replaced` (both should come in a later batch), overwrites
    `rewritten` (already read in the first batch) and adds `added`. `fired` says whether it ran.
    """

    def __init__(self, folder, *, removed: str, replaced: str, rewritten: str, added=("added/new_0.png",)):
        self.folder = Path(folder)
        self.removed, self.replaced, self.rewritten, self.added = removed, replaced, rewritten, tuple(added)
        self.fired = False

    def __call__(self, done: int, total: int) -> None:
        if self.fired or not 0 < done < total:
            return
        self.fired = True
        (self.folder / self.removed).unlink()
        for seed, name in enumerate((self.replaced, self.rewritten)):
            (self.folder / name).write_bytes(image_bytes("PNG", size=(64, 64), seed=900 + seed))
        for seed, name in enumerate(self.added):
            (self.folder / name).parent.mkdir(parents=True, exist_ok=True)
            (self.folder / name).write_bytes(image_bytes("PNG", seed=950 + seed))


def write_changing_folder(folder) -> FolderChanger:
    """Eight images 0.png ... 7.png in `folder` (created) and the changer to pass as `embed`'s progress with
    batch_size=2: it removes 7.png and replaces 6.png before they are read, rewrites 0.png after, adds added/new.png."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(8):
        (folder / f"{i}.png").write_bytes(image_bytes("PNG", seed=i))
    return FolderChanger(folder, removed="7.png", replaced="6.png", rewritten="0.png", added=["added/new.png"])


ALL_KINDS: tuple[Kind, ...] = (*FILE_KINDS, *LABEL_KINDS, *CSV_KINDS, CHANGING_FOLDER)

__all__ = ["ALL_KINDS", "CHANGING_FOLDER", "CSV_KINDS", "FILE_KINDS", "GOOD", "LABEL_KINDS", "CsvKind", "FileKind",
           "FolderChanger", "Kind", "LabelKind", "Made", "NotApplicable", "bomb_png", "image_bytes",
           "write_changing_folder", "write_image_corpus", "write_label_files"]
