"""Finding, listing and decoding the images a labeling project works on. No UI imports.

Safe in DataLoader worker processes: importing changes no global state, Pillow settings are
left alone, and warnings are only silenced inside the block around each decode. A file that
cannot be read raises :class:`ImageReadError` with a short reason; a bad folder or CSV list
given by the user raises :class:`InputError`.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError, InputError  # noqa: F401  (raised here; importable from here)

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+)")
_MAX_16BIT = 65535.0


class _UnsupportedMode(ValueError):
    """An image mode Pillow cannot turn into RGB; the message is the reason."""


def _input_error(kind: str, path, problem: str, fix: str) -> InputError:
    """An :class:`InputError` whose message names the path, the problem and the fix."""
    return InputError(f"{kind} {str(path)!r} {problem}. {fix}")


def has_image_extension(name) -> bool:
    """Whether ``name`` ends in one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return os.path.splitext(str(name))[1].lower() in IMAGE_EXTENSIONS


@dataclass
class ImageScan:
    """What :func:`scan_images` found: the usable image paths, and the image-named entries it cannot use."""

    paths: list[str]                                                # sorted relative POSIX paths
    unusable: list[tuple[str, str]] = field(default_factory=list)   # (printable relative path, reason), sorted


def discover_images(folder, *, recursive=True, exclude_dirs=(".labeler",)) -> list[str]:
    """Sorted relative POSIX paths (relative to ``folder``) of the image files under it.

    The paths of :func:`scan_images`, which says which entries were left out and why.

    Raises:
        InputError: ``folder`` does not exist or is not a directory.
    """
    return scan_images(folder, recursive=recursive, exclude_dirs=exclude_dirs).paths


def scan_images(folder, *, recursive=True, exclude_dirs=(".labeler",)) -> ImageScan:
    """The image files under ``folder``, and the entries with an image extension that cannot be items.

    Skips hidden names (starting with ``.``) and ``exclude_dirs`` (a name at any depth, or a
    relative path). Symlinked files are followed. Symlinked directories pointing inside
    ``folder`` are skipped (their images are listed under the real path); ones pointing
    outside are walked once each, so link loops end. Unreadable sub-folders are logged.
    Entries named like images that cannot be items are returned in ``unusable`` with the
    reason, so callers can report them instead of losing them silently: broken links and
    link loops, pipes and devices (reading one could block forever), and names that are not
    UTF-8 (the item table, CSVs and JSON all need text; the path is shown with ``\\xNN``).

    Raises:
        InputError: ``folder`` does not exist or is not a directory.
    """
    root = Path(folder)
    if not root.exists():
        raise _input_error("Image folder", root, "does not exist",
                           "Check the path for typos, or give the folder that holds the images.")
    if not root.is_dir():
        raise _input_error("Image folder", root, "is not a directory",
                           "Give the folder that holds the images (or pass a CSV list of image paths).")
    if isinstance(exclude_dirs, (str, os.PathLike)):
        exclude_dirs = (exclude_dirs,)
    excluded = {os.fspath(d).strip("/") for d in exclude_dirs}
    real_root = root.resolve()
    visited: set[tuple[int, int]] = set()
    scan = ImageScan([])
    for dirpath, dirnames, filenames in os.walk(root, onerror=_warn_unreadable, followlinks=True):
        rel_dir = Path(dirpath).relative_to(root)
        visited.add(_dir_identity(dirpath))
        if recursive:
            dirnames[:] = [
                name for name in sorted(dirnames)
                if _should_descend(Path(dirpath, name), rel_dir / name, excluded, real_root, visited)
            ]
        else:
            dirnames[:] = []
        for name in filenames:
            if name.startswith(".") or not has_image_extension(name):
                continue
            relative = (rel_dir / name).as_posix()
            problem = _unusable_entry(os.path.join(dirpath, name), relative)
            if problem:
                scan.unusable.append((printable_path(relative), problem))
            else:
                scan.paths.append(relative)
    scan.paths.sort()
    scan.unusable.sort()
    logger.debug("found %d images under %s (%d unusable)", len(scan.paths), root, len(scan.unusable))
    return scan


def _unusable_entry(full: str, relative: str) -> str | None:
    """Why the image-named directory entry ``full`` cannot be an item, or None when it can."""
    if not os.path.isfile(full):
        if os.path.islink(full):
            return "broken symbolic link (its target is missing, or links point at each other)"
        return "not a regular file (a pipe, socket or device)"
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8; rename it (e.g. convmv -f latin1 -t utf8)"
    return None


def printable_path(path) -> str:
    """``path`` as text that can be printed, stored and written as UTF-8: bytes that are not UTF-8 as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _warn_unreadable(err: OSError) -> None:
    """``os.walk`` error hook: log the unreadable directory and carry on."""
    logger.warning("skipping unreadable directory %s: %s", err.filename, err.strerror or err)


def _dir_identity(path) -> tuple[int, int]:
    """(device, inode) of a directory, following symlinks."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def _should_descend(full: Path, rel: Path, excluded: set[str], real_root: Path,
                    visited: set[tuple[int, int]]) -> bool:
    """Whether :func:`scan_images` walks into the sub-directory ``full``."""
    if full.name.startswith(".") or full.name in excluded or rel.as_posix() in excluded:
        return False
    if not full.is_symlink():
        return True
    try:
        target = full.resolve(strict=True)
        identity = _dir_identity(target)
    except (OSError, RuntimeError):  # broken link or a link loop
        logger.debug("skipping unresolvable directory link %s", full)
        return False
    if target == real_root or target.is_relative_to(real_root) or identity in visited:
        return False
    visited.add(identity)
    return True


def read_image_list(csv_path, *, column=None, root=None) -> list[str]:
    """Image paths from a CSV list: the column named ``column``, else the first column.

    The first row is a header when its first cell neither names an existing file (under
    ``root``, or the CSV's folder when ``root`` is None) nor ends in an image extension; a
    named ``column`` needs a header. Blank cells are skipped. Paths are returned as written
    (stripped), for the caller to resolve. The delimiter (``,`` ``;`` or tab) is sniffed.

    Raises:
        InputError: the file is missing, unreadable, empty, has no paths or lacks ``column``.
    """
    csv_path = Path(csv_path)
    base = Path(root) if root is not None else csv_path.parent
    rows = _read_csv_rows(csv_path)
    if not rows:
        raise _input_error("Image list", csv_path, "is empty",
                           "Put one image path per row (optionally under a header).")
    first_cell = rows[0][0].strip() if rows[0] else ""
    has_header = not _looks_like_image_path(first_cell, base)
    if column is None:
        index = 0
    else:
        index = _column_index(rows[0] if has_header else [], column, csv_path)
        has_header = True
    data_rows = rows[1:] if has_header else rows
    paths = [row[index].strip() for row in data_rows if len(row) > index and row[index].strip()]
    if not paths:
        where = "" if column is None else f" in column {column!r}"
        raise _input_error("Image list", csv_path, f"contains no image paths{where}",
                           "Add one image path per row.")
    logger.debug("read %d image paths from %s", len(paths), csv_path)
    return paths


def _read_csv_rows(csv_path: Path) -> list[list[str]]:
    """All non-blank rows of a CSV file; errors become :class:`InputError`."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise _input_error("Image list", csv_path, "does not exist", "Check the path for typos.") from None
    except IsADirectoryError:
        raise _input_error("Image list", csv_path, "is a directory, not a CSV file",
                           "Pass it as the image folder instead, or name the CSV file.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise _input_error("Image list", csv_path, f"cannot be read ({err})",
                           "Make sure it is a readable UTF-8 CSV text file.") from None
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = list(csv.reader(io.StringIO(text), dialect))
    except csv.Error as err:
        raise _input_error("Image list", csv_path, f"is not valid CSV ({err})",
                           "Fix the quoting on the reported line, or save it again as CSV.") from None
    return [row for row in rows if any(cell.strip() for cell in row)]


def _looks_like_image_path(cell: str, base: Path) -> bool:
    """Whether a CSV cell is an image path (so the row is data, not a header)."""
    if not cell or has_image_extension(cell):
        return bool(cell)
    try:
        return (base / cell).is_file()
    except (OSError, ValueError):
        return False


def _column_index(header: list[str], column, csv_path: Path) -> int:
    """Index of ``column`` in ``header``: exact match first, then ignoring case."""
    names = [cell.strip() for cell in header]
    wanted = str(column).strip()
    if wanted in names:
        return names.index(wanted)
    folded = [name.casefold() for name in names]
    if wanted.casefold() in folded:
        return folded.index(wanted.casefold())
    found = ", ".join(repr(n) for n in names) if names else "none (the first row is data, not a header)"
    raise _input_error("Image list", csv_path, f"has no column {wanted!r}; columns found: {found}",
                       "Name an existing column, or leave the column out to use the first one.")


def read_image_bytes(path) -> bytes:
    """Read a file's bytes; every OS failure becomes :class:`ImageReadError`.

    Pipes, sockets and devices are refused before opening: reading a named pipe would wait for
    a writer forever.
    """
    try:
        mode = os.stat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise ImageReadError(path, "not a regular file (a pipe, socket or device)")
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except OSError as err:  # e.g. a directory, an I/O error
        raise ImageReadError(path, f"cannot read file ({err.strerror or err})") from None


def load_image(path, *, size=None) -> Image.Image:
    """Open an image file as a fully decoded 8-bit RGB image (see :func:`decode_image`).

    Raises:
        ImageReadError: for every failure to read or decode the file.
    """
    return decode_image(read_image_bytes(path), path, size=size)


def decode_image(data: bytes, path, *, size=None) -> Image.Image:
    """Decode image bytes (read from ``path``, used in errors) into a fully loaded 8-bit RGB image.

    Applies the EXIF orientation, composites transparency over white, takes the first frame,
    and maps 16-bit and float images to 0..255. With ``size`` (target edge in pixels), JPEGs
    decode via Pillow's draft mode at the smallest scale still >= ``size`` on both sides;
    nothing is resized otherwise. Uses ``warnings.catch_warnings``, so it is process-safe
    but not thread-safe. A ``size`` that is not a positive int raises ValueError.

    Raises:
        ImageReadError: for every failure; no other exception and no Pillow warning escapes.
    """
    if size is not None:
        _check_size(size)
    if not data:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if size is not None:
                    img.draft("RGB", (size, size))
                img.load()
                rgb = _to_rgb(_apply_orientation(img, path))
                rgb.load()
                return rgb
    except Exception as err:  # noqa: BLE001 - the contract is ImageReadError only
        reason = _failure_reason(err)
        logger.debug("cannot decode %s: %s", path, reason)
        raise ImageReadError(path, reason) from err


def _check_size(size) -> None:
    """Raise ValueError unless ``size`` is a positive int (a programming error, not a file error)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InputError(f"size must be a positive int, not {size!r}")


def _apply_orientation(img: Image.Image, path) -> Image.Image:
    """Rotate/flip by the EXIF orientation tag; broken EXIF is ignored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception as err:  # noqa: BLE001 - bad metadata must not lose the pixels
        logger.debug("ignoring unusable EXIF orientation in %s: %s", path, err)
        return img.copy()  # the caller closes ``img`` with its file


def _failure_reason(err: Exception) -> str:
    """Short human-readable reason for a decode exception."""
    message = str(err)
    if isinstance(err, (Image.DecompressionBombWarning, Image.DecompressionBombError)):
        match = _BOMB_PIXELS.search(message)
        if match:
            return f"decompression bomb: {int(match[1])} pixels exceeds the limit of {int(match[2])} pixels"
        return f"decompression bomb ({message})"
    if isinstance(err, UnidentifiedImageError):
        return "not an image (cannot identify format)"
    if "truncated" in message.lower() or isinstance(err, EOFError):
        return f"truncated image data ({message or 'unexpected end of file'})"
    if isinstance(err, MemoryError):
        return "too large to decode (out of memory)"
    if isinstance(err, _UnsupportedMode):
        return message
    return f"corrupt or unsupported image ({type(err).__name__}: {message})"


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (alpha over white)."""
    mode = img.mode
    if mode in _ALPHA_MODES or ("transparency" in img.info and mode in ("1", "L", "P", "RGB")):
        return _flatten_on_white(img)
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_high_depth_to_uint8(img, mode), "L").convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as err:
        raise _UnsupportedMode(f"unsupported colour mode {mode!r}") from err


def _flatten_on_white(img: Image.Image) -> Image.Image:
    """Composite an image with transparency over an opaque white background."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_depth_to_uint8(img: Image.Image, mode: str) -> np.ndarray:
    """Scale a single-band 16/32-bit integer or float image to uint8.

    Integers in 0..65535 use the fixed 16-bit range (65535 -> 255); floats in 0..1 are
    multiplied by 255 and floats in 0..255 kept; anything else uses its own min..max.
    """
    values = np.asarray(img, dtype=np.float64)
    values = np.where(np.isfinite(values), values, 0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode != "F" and low >= 0 and high <= _MAX_16BIT:
        scaled = values * (255.0 / _MAX_16BIT)
    elif mode == "F" and low >= 0 and high <= 255.0:
        scaled = values * 255.0 if high <= 1.0 else values
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_model_array(img: Image.Image, size: int) -> np.ndarray:
    """A new uint8 ``(size, size, 3)`` array of the image squashed to ``size`` x ``size``.

    The aspect ratio is not kept, so the whole image stays visible. Shrinking (both sides
    >= ``size``) uses bilinear with ``reducing_gap=2.0``; enlarging any side uses bicubic.
    """
    _check_size(size)
    if img.mode != "RGB":
        img = _to_rgb(img)
    if img.size != (size, size):
        if min(img.size) >= size:
            img = img.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
        else:
            img = img.resize((size, size), Image.BICUBIC)
    return np.array(img, dtype=np.uint8)
