"""Tests for engine.data: finding, listing and decoding images."""

from __future__ import annotations

import io
import os
import pickle
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from engine import data
from engine.data import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    InputError,
    decode_image,
    discover_images,
    load_image,
    read_image_bytes,
    read_image_list,
    to_model_array,
)

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def _touch_image(path, size=(8, 8), color=RED, fmt=None):
    """Write a small real image file, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def _noise_bytes(fmt, size=(400, 300)):
    """Encoded random-noise image, large enough that cutting it truncates pixel data."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def _close(actual, expected, tol=6):
    return all(abs(a - e) <= tol for a, e in zip(actual, expected))


def _read_reason(path, **kwargs):
    with pytest.raises(ImageReadError) as info:
        load_image(path, **kwargs)
    assert info.value.path == str(path)
    return info.value.reason


# ---- constants and exceptions ----------------------------------------------------------------


def test_image_extensions_are_the_lower_case_supported_suffixes():
    assert IMAGE_EXTENSIONS == frozenset(
        {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
    )


def test_image_read_error_str_is_path_colon_reason_and_survives_pickling():
    err = ImageReadError("a/b.jpg", "file not found")
    assert str(err) == "a/b.jpg: file not found"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.reason, str(copy)) == ("a/b.jpg", "file not found", str(err))


def test_every_engine_error_derives_from_one_base():
    import engine.errors as errors
    types = [getattr(errors, name) for name in errors.__all__]
    assert InputError in types and ImageReadError in types
    assert all(issubclass(kind, errors.EngineError) for kind in types)


# ---- discover_images -------------------------------------------------------------------------


def test_discover_returns_sorted_relative_posix_paths_recursively(tmp_path):
    for rel in ["b.png", "a.jpg", "sub/c.webp", "sub/deeper/d.tif"]:
        _touch_image(tmp_path / rel)
    assert discover_images(tmp_path) == ["a.jpg", "b.png", "sub/c.webp", "sub/deeper/d.tif"]


def test_discover_matches_extensions_case_insensitively_and_ignores_other_files(tmp_path):
    _touch_image(tmp_path / "UPPER.JPG", fmt="JPEG")
    _touch_image(tmp_path / "mixed.TiFf", fmt="TIFF")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "noext").write_text("hello")
    assert discover_images(tmp_path) == ["UPPER.JPG", "mixed.TiFf"]


def test_discover_skips_hidden_entries_and_the_labeler_folder(tmp_path):
    _touch_image(tmp_path / "keep.png")
    _touch_image(tmp_path / ".hidden.png")
    _touch_image(tmp_path / ".cache" / "x.png")
    _touch_image(tmp_path / ".labeler" / "thumbs" / "y.png")
    assert discover_images(tmp_path) == ["keep.png"]


def test_discover_skips_custom_exclude_dirs_by_name_or_relative_path(tmp_path):
    for rel in ["a/x.png", "b/skip/y.png", "b/keep/z.png", "out/w.png"]:
        _touch_image(tmp_path / rel)
    found = discover_images(tmp_path, exclude_dirs=("out", "b/skip"))
    assert found == ["a/x.png", "b/keep/z.png"]


def test_discover_non_recursive_lists_only_top_level(tmp_path):
    _touch_image(tmp_path / "top.png")
    _touch_image(tmp_path / "sub" / "inner.png")
    assert discover_images(tmp_path, recursive=False) == ["top.png"]


def test_discover_follows_symlinked_files_and_skips_broken_links(tmp_path):
    target = _touch_image(tmp_path / "outside" / "real.png")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(target, root / "link.png")
    os.symlink(tmp_path / "missing.png", root / "broken.png")
    assert discover_images(root) == ["link.png"]


def test_discover_does_not_loop_or_duplicate_on_symlinked_dirs(tmp_path):
    root = tmp_path / "root"
    _touch_image(root / "sub" / "a.png")
    os.symlink(root, root / "sub" / "loop")          # points back up: a loop
    os.symlink(root / "sub", root / "alias")          # inside root: a duplicate
    outside = tmp_path / "outside"
    _touch_image(outside / "o.png")
    os.symlink(outside, root / "ext")                 # outside root: followed
    os.symlink(outside, outside / "self")             # a loop outside root
    assert discover_images(root) == ["ext/o.png", "sub/a.png"]


def test_discover_raises_input_error_naming_a_missing_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(InputError, match="does not exist") as info:
        discover_images(missing)
    assert str(missing) in str(info.value)


def test_discover_raises_input_error_when_given_a_file(tmp_path):
    path = _touch_image(tmp_path / "x.png")
    with pytest.raises(InputError, match="not a directory"):
        discover_images(path)


# ---- read_image_list -------------------------------------------------------------------------


def test_image_list_skips_a_header_row_and_uses_the_first_column(tmp_path):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,label\na.jpg,cat\nsub/b.png,dog\n")
    assert read_image_list(csv_path) == ["a.jpg", "sub/b.png"]


def test_image_list_without_header_keeps_the_first_row(tmp_path):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("a.jpg\nb.PNG\n\n  \n")
    assert read_image_list(csv_path) == ["a.jpg", "b.PNG"]


def test_image_list_treats_an_existing_file_without_extension_as_data(tmp_path):
    _touch_image(tmp_path / "images" / "scan0001", fmt="PNG")
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("scan0001\nscan0002.png\n")
    assert read_image_list(csv_path, root=tmp_path / "images") == ["scan0001", "scan0002.png"]
    # relative to the CSV's folder the first cell is no file, so it is a header
    assert read_image_list(csv_path) == ["scan0002.png"]


def test_image_list_reads_the_named_column_ignoring_case(tmp_path):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("label,File\ncat,a.jpg\ndog,b.jpg\nbird,\n")
    assert read_image_list(csv_path, column="File") == ["a.jpg", "b.jpg"]
    assert read_image_list(csv_path, column="file") == ["a.jpg", "b.jpg"]


def test_image_list_detects_semicolon_delimiters_and_bom(tmp_path):
    csv_path = tmp_path / "list.csv"
    csv_path.write_bytes("\ufeffimage;label\nx.jpg;a\ny.jpg;b\n".encode("utf-8"))
    assert read_image_list(csv_path, column="image") == ["x.jpg", "y.jpg"]


def test_image_list_missing_column_raises_input_error_naming_file_and_columns(tmp_path):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,label\na.jpg,cat\n")
    with pytest.raises(InputError) as info:
        read_image_list(csv_path, column="filename")
    message = str(info.value)
    assert str(csv_path) in message and "'filename'" in message and "'path'" in message


def test_image_list_named_column_without_header_raises_input_error(tmp_path):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("a.jpg,cat\n")
    with pytest.raises(InputError, match="no column 'path'"):
        read_image_list(csv_path, column="path")


@pytest.mark.parametrize("content", ["", "\n \n", "path,label\n"])
def test_image_list_empty_or_header_only_raises_input_error(tmp_path, content):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(content)
    with pytest.raises(InputError, match="empty|no image paths") as info:
        read_image_list(csv_path)
    assert str(csv_path) in str(info.value)


def test_image_list_missing_or_undecodable_file_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_image_list(tmp_path / "missing.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(InputError, match="cannot be read"):
        read_image_list(binary)
    with pytest.raises(InputError, match="is a directory"):
        read_image_list(tmp_path)


# ---- load_image / decode_image: colour modes -------------------------------------------------


def test_load_returns_fully_decoded_rgb_of_the_same_size(tmp_path):
    path = _touch_image(tmp_path / "x.png", size=(30, 20), color=(10, 20, 30))
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (30, 20)
    assert img.getpixel((5, 5)) == (10, 20, 30)


def test_decode_image_matches_load_image_for_the_same_bytes(tmp_path):
    path = _touch_image(tmp_path / "x.jpg", size=(16, 12), color=(200, 100, 50))
    from_bytes = decode_image(read_image_bytes(path), path)
    assert np.array_equal(np.asarray(from_bytes), np.asarray(load_image(path)))


def test_exif_orientation_6_rotates_and_swaps_width_and_height(tmp_path):
    img = Image.new("RGB", (40, 20), BLUE)
    img.paste(RED, (0, 0, 20, 20))                      # left half red
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    out = load_image(path)
    assert out.size == (20, 40)
    assert _close(out.getpixel((10, 5)), RED, tol=30)    # left became top
    assert _close(out.getpixel((10, 35)), BLUE, tol=30)


def test_greyscale_l_becomes_equal_rgb_channels(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (4, 4), 77).save(path)
    assert load_image(path).getpixel((0, 0)) == (77, 77, 77)


def test_bilevel_1_becomes_black_and_white(tmp_path):
    img = Image.new("1", (4, 4), 0)
    img.putpixel((1, 1), 1)
    path = tmp_path / "bits.png"
    img.save(path)
    out = load_image(path)
    assert out.getpixel((1, 1)) == WHITE and out.getpixel((0, 0)) == (0, 0, 0)


def _palette_image():
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    img.putpixel((0, 0), 1)
    return img


def test_palette_without_transparency_uses_palette_colours(tmp_path):
    path = tmp_path / "pal.png"
    _palette_image().save(path)
    out = load_image(path)
    assert out.getpixel((0, 0)) == RED and out.getpixel((2, 2)) == (0, 0, 0)


def test_palette_with_transparency_composites_over_white(tmp_path):
    path = tmp_path / "pal_t.png"
    _palette_image().save(path, transparency=0)
    out = load_image(path)
    assert out.getpixel((0, 0)) == RED and out.getpixel((2, 2)) == WHITE


def test_rgba_transparent_pixels_become_white_not_black(tmp_path):
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0, 255))
    img.putpixel((1, 0), (0, 0, 0, 128))
    path = tmp_path / "rgba.png"
    img.save(path)
    out = load_image(path)
    assert out.getpixel((0, 0)) == RED
    assert out.getpixel((2, 2)) == WHITE
    assert _close(out.getpixel((1, 0)), (127, 127, 127), tol=2)


def test_la_transparent_pixels_become_white(tmp_path):
    img = Image.new("LA", (4, 4), (0, 0))
    img.putpixel((0, 0), (100, 255))
    path = tmp_path / "la.png"
    img.save(path)
    out = load_image(path)
    assert out.getpixel((0, 0)) == (100, 100, 100) and out.getpixel((3, 3)) == WHITE


def test_pa_transparent_pixels_become_white():
    img = Image.new("PA", (4, 4), (0, 0))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    img.putpixel((0, 0), (1, 255))
    arr = to_model_array(img, 4)
    assert tuple(arr[0, 0]) == RED and tuple(arr[3, 3]) == WHITE


def test_cmyk_jpeg_pure_red_comes_back_red(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)
    out = load_image(path)
    assert out.mode == "RGB" and _close(out.getpixel((8, 8)), RED, tol=8)


def test_16bit_png_is_scaled_by_the_full_16bit_range(tmp_path):
    values = np.array([[65535, 32768], [0, 257]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    out = np.asarray(load_image(path))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [128, 128, 128]
    assert out[1, 0].tolist() == [0, 0, 0]
    assert out[1, 1].tolist() == [1, 1, 1]


def test_32bit_integer_i_mode_in_16bit_range_is_scaled_like_16bit(tmp_path):
    path = tmp_path / "int.tif"
    Image.fromarray(np.array([[65535, 32768]], dtype=np.int32), "I").save(path)
    out = np.asarray(load_image(path))
    assert out[0, :, 0].tolist() == [255, 128]


def test_float_f_mode_in_unit_range_is_scaled_to_255(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F").save(path)
    out = np.asarray(load_image(path))
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_float_f_mode_outside_byte_range_is_min_max_scaled(tmp_path):
    path = tmp_path / "float_wide.tif"
    Image.fromarray(np.array([[-10.0, 0.0, 10.0]], dtype=np.float32), "F").save(path)
    out = np.asarray(load_image(path))
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_animated_gif_returns_only_the_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    with Image.open(path) as check:
        assert check.n_frames == 2
    assert load_image(path).getpixel((4, 4)) == RED


# ---- load_image: reduced-size JPEG decoding --------------------------------------------------


def test_size_decodes_a_large_jpeg_at_a_reduced_scale_still_covering_size(tmp_path):
    path = _touch_image(tmp_path / "big.jpg", size=(2000, 1500), color=(90, 120, 150))
    out = load_image(path, size=128)
    width, height = out.size
    assert width < 2000 and width >= 128 and height >= 128
    assert _close(out.getpixel((width // 2, height // 2)), (90, 120, 150), tol=8)


def test_size_does_not_resize_non_jpeg_images(tmp_path):
    path = _touch_image(tmp_path / "big.png", size=(600, 400))
    assert load_image(path, size=64).size == (600, 400)


def test_without_size_a_jpeg_keeps_its_full_size(tmp_path):
    path = _touch_image(tmp_path / "big.jpg", size=(640, 480))
    assert load_image(path).size == (640, 480)


def test_invalid_size_names_the_size(tmp_path):
    path = _touch_image(tmp_path / "x.png")
    with pytest.raises(InputError, match="size must be a positive int, not 0"):
        load_image(path, size=0)


# ---- load_image: failures --------------------------------------------------------------------


def test_zero_byte_file_is_reported_as_empty(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert _read_reason(path) == "empty file (0 bytes)"


@pytest.mark.parametrize("fmt, suffix", [("JPEG", ".jpg"), ("PNG", ".png")])
def test_truncated_file_is_reported_as_truncated(tmp_path, fmt, suffix):
    encoded = _noise_bytes(fmt)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(encoded[: len(encoded) // 2])
    assert "truncated" in _read_reason(path)


def test_text_file_with_image_name_is_reported_as_not_an_image(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_text("this is not an image\n")
    assert _read_reason(path) == "not an image (cannot identify format)"


def test_image_just_over_the_pixel_limit_is_a_decompression_bomb(tmp_path, monkeypatch):
    path = _touch_image(tmp_path / "bomb.png", size=(40, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)   # 1600 px: warning level
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reason = _read_reason(path)
    assert "decompression bomb" in reason and "1600" in reason
    assert caught == []


def test_image_far_over_the_pixel_limit_is_a_decompression_bomb(tmp_path, monkeypatch):
    path = _touch_image(tmp_path / "bomb.png", size=(100, 100))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)   # 10000 px: error level
    reason = _read_reason(path)
    assert "decompression bomb" in reason and "10000" in reason


def test_unreadable_permissions_are_reported_as_permission_denied(tmp_path, monkeypatch):
    path = _touch_image(tmp_path / "locked.png")

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(data, "open", deny, raising=False)
    assert _read_reason(path) == "permission denied"


def test_missing_file_is_reported_as_not_found(tmp_path):
    assert _read_reason(tmp_path / "missing.png") == "file not found"


def test_directory_path_is_an_image_read_error(tmp_path):
    with pytest.raises(ImageReadError):
        load_image(tmp_path)


def test_decoding_leaves_pillow_settings_and_warning_filters_unchanged(tmp_path):
    filters_before = list(warnings.filters)
    good = _touch_image(tmp_path / "ok.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    load_image(good, size=4)
    with pytest.raises(ImageReadError):
        load_image(bad)
    assert warnings.filters == filters_before
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# ---- to_model_array --------------------------------------------------------------------------


def test_model_array_is_uint8_size_by_size_by_3_when_shrinking():
    arr = to_model_array(Image.new("RGB", (300, 200), (1, 2, 3)), 64)
    assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8
    assert arr[32, 32].tolist() == [1, 2, 3]
    assert arr.flags.writeable


def test_model_array_enlarges_small_images():
    arr = to_model_array(Image.new("RGB", (10, 5), (9, 8, 7)), 32)
    assert arr.shape == (32, 32, 3) and arr[16, 16].tolist() == [9, 8, 7]


def test_model_array_squashes_so_the_whole_image_stays_visible():
    img = Image.new("RGB", (400, 100), RED)
    img.paste(BLUE, (200, 0, 400, 100))                    # right half blue
    arr = to_model_array(img, 50)
    assert tuple(arr[25, 2]) == RED and tuple(arr[25, 47]) == BLUE


def test_model_array_converts_non_rgb_input():
    arr = to_model_array(Image.new("L", (20, 20), 50), 10)
    assert arr.shape == (10, 10, 3) and arr[5, 5].tolist() == [50, 50, 50]
