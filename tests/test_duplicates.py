"""Near-duplicates (engine.duplicates): copies found, look-alikes left out, the limit calibrated to the set.

Unit tests on generated images (thin strokes that look alike, like handwritten 1s); the demo
checks (slow, real weights) build the Duplicates queue on a copy of the 5,000 demo digits before
and after planting bench/clean.py's 50 copies.
"""
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance

from engine import embed
from engine.demo import demo_folder
from engine.duplicates import (MAX_PIXEL_DIFFERENCE, CopyLimit, DuplicateFinder, aligned_differences,
                               candidate_pairs, signatures, thumbnail)
from engine.errors import InputError
from labeler.cleaning import build_queues
from labeler.project import Project

_spec = importlib.util.spec_from_file_location("bench_clean", Path(__file__).resolve().parents[1] / "bench" / "clean.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _stroke(rng, size=28) -> Image.Image:
    """A thick anti-aliased line through three jittered points: every seed another '1', all alike."""
    image = Image.new("L", (size * 4, size * 4), 0)
    x = size * 2 + rng.normal(0, 8)
    points = [(x + rng.normal(0, 6) + k * rng.normal(3, 4), 12 + k * (size * 4 - 24) / 2 + rng.normal(0, 6))
              for k in range(3)]
    ImageDraw.Draw(image).line(points, fill=255, width=int(rng.integers(8, 16)), joint="curve")
    return image.resize((size, size), Image.LANCZOS)


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("L")


def _shifted(image: Image.Image) -> Image.Image:
    """Moved a pixel right and down, the uncovered edges repeating their neighbours."""
    pixels = np.roll(np.asarray(image), (1, 1), axis=(0, 1))
    pixels[0], pixels[:, 0] = pixels[1], pixels[:, 1]
    return Image.fromarray(pixels)


def _copies(images: list[Image.Image]) -> list[Image.Image]:
    """One altered copy each of images[0..6]: shifted, shrunk, JPEG, brighter, cropped, enlarged, halved."""
    return [_shifted(images[0]), images[1].resize((21, 21), Image.BICUBIC), _jpeg(images[2], 50),
            ImageEnhance.Brightness(images[3]).enhance(1.1), images[4].crop((1, 0, 28, 27)),
            images[5].resize((56, 56), Image.BICUBIC), images[6].resize((14, 14), Image.BICUBIC)]


@pytest.fixture(scope="module")
def look_alikes():
    """300 strokes and 7 copies (rows 300..306 copy rows 0..6): (thumbnails, sizes)."""
    rng = np.random.default_rng(0)
    images = [_stroke(rng) for _ in range(300)]
    every = images + _copies(images)
    return [thumbnail(image) for image in every], np.array([image.size for image in every])


# ---- the limit, calibrated to the set ------------------------------------------------------------

def test_copy_limit_is_a_fraction_of_the_typical_nearest_difference_and_never_above_the_ceiling():
    assert CopyLimit(ratio=0.25, ceiling=0.6).fit(np.full(100, 2.0)).limit_ == pytest.approx(0.5)
    assert CopyLimit(ratio=0.25, ceiling=0.6).fit(np.full(100, 1.0)).limit_ == pytest.approx(0.25)  # look-alikes
    varied = CopyLimit(ratio=0.25, ceiling=0.6).fit(np.full(100, 4.0))
    assert varied.limit_ == 0.6 and varied.typical_ == 4.0 and varied.n_rows_ == 100


def test_copy_limit_barely_moves_when_a_tenth_of_the_set_are_copies():
    rng = np.random.default_rng(0)
    distinct = rng.lognormal(np.log(2.0), 0.15, size=900)
    with_copies = np.r_[distinct, rng.uniform(0, 0.3, size=100)]
    alone, mixed = CopyLimit().fit(distinct).limit_, CopyLimit().fit(with_copies).limit_
    assert 0.9 * alone < mixed < alone


def test_copy_limit_uses_the_ceiling_with_too_few_values_and_ignores_missing_ones():
    limit = CopyLimit(ceiling=0.6, min_rows=20).fit(np.r_[np.full(5, 0.5), np.full(100, np.nan)])
    assert limit.limit_ == 0.6 and limit.n_rows_ == 5 and np.isnan(limit.typical_)


def test_copy_limit_rejects_settings_that_are_not_positive_and_names_them():
    with pytest.raises(InputError, match=r"ratio=0 and ceiling=0.6 must both be positive"):
        CopyLimit(ratio=0, ceiling=0.6).fit(np.ones(30))


# ---- the pixel check -------------------------------------------------------------------------------

def test_aligned_difference_is_small_for_copies_and_large_for_another_picture():
    rng = np.random.default_rng(1)
    original, other = _stroke(rng), _stroke(rng)
    copies = [original, _shifted(original), original.crop((0, 1, 27, 28)),
              ImageEnhance.Brightness(original).enhance(1.1), original.resize((56, 56), Image.BICUBIC), _jpeg(original, 50)]
    thumbnails = [thumbnail(image) for image in [*copies, other]]
    sizes = [image.size for image in [*copies, other]]
    difference = aligned_differences(thumbnails, np.zeros(6, int), np.arange(1, 7), sizes=sizes)
    assert difference[0] < 1e-3                                     # shifted a pixel: aligned exactly
    assert (difference[1:5] < 0.3).all()                           # cropped, brighter, enlarged, JPEG
    assert difference[5] > 2 * MAX_PIXEL_DIFFERENCE                # another stroke
    assert aligned_differences([thumbnails[0], None], [0], [1])[0] == np.inf


def test_a_small_copy_pairs_with_its_original_not_with_a_look_alike_that_matches_it_only_small():
    original = _stroke(np.random.default_rng(0))
    spotted = np.asarray(original).copy()
    spotted[3:6, 3:6] = np.maximum(spotted[3:6, 3:6], 60)          # a faint spot: another picture
    small = original.resize((14, 14), Image.BICUBIC)
    thumbnails = [thumbnail(image) for image in (original, Image.fromarray(spotted), small)]
    difference = aligned_differences(thumbnails, [0, 1, 0], [1, 2, 2])
    finder = DuplicateFinder().fit(None, thumbnails=thumbnails)
    assert difference[0] > finder.limit_.limit_ >= difference[1] > difference[2]   # at 14 pixels the spot fades
    assert finder.pairs_[["a", "b"]].values.tolist() == [[0, 2]]


# ---- the finder on a set of look-alikes ---------------------------------------------------------

def test_finder_pairs_every_copy_and_no_look_alike_that_the_cosine_alone_groups(look_alikes):
    thumbnails, sizes = look_alikes
    finder = DuplicateFinder().fit(None, thumbnails=thumbnails, sizes=sizes)
    assert set(map(tuple, finder.pairs_[["a", "b"]].values.tolist())) == {(k, 300 + k) for k in range(7)}
    assert finder.limit_.limit_ < MAX_PIXEL_DIFFERENCE                # strict: a set of look-alikes
    assert np.nanmedian(finder.nearest_difference_) == pytest.approx(finder.limit_.typical_)
    cosine_only = DuplicateFinder(threshold=0.98).fit(signatures(thumbnails))    # the method before
    assert (cosine_only.groups_ >= 0).sum() > 50


def test_every_copy_is_a_candidate_in_one_of_the_two_rankings(look_alikes):
    thumbnails, sizes = look_alikes
    a, b, similarity = candidate_pairs(thumbnails, None, 3, sizes=sizes)
    pairs = set(zip(a.tolist(), b.tolist()))
    assert {(k, 300 + k) for k in range(7)} <= pairs
    assert (a < b).all() and len(pairs) == len(a)


def test_exact_copies_are_paired_by_hash_and_flat_or_unreadable_images_never_by_pixels():
    rng = np.random.default_rng(3)
    strokes = [thumbnail(_stroke(rng)) for _ in range(4)]
    thumbnails = [*strokes, None, np.full((28, 28), 128, np.uint8), np.full((28, 28), 130, np.uint8)]
    finder = DuplicateFinder().fit(None, ["h0", "h1", "h2", "h0", None, "f1", "f2"], thumbnails=thumbnails)
    exact = finder.pairs_[finder.pairs_["exact"]]
    assert exact[["a", "b"]].values.tolist() == [[0, 3]] and exact["difference"].isna().all()
    assert set(finder.pairs_["a"]) | set(finder.pairs_["b"]) <= {0, 3, 5, 6}
    assert np.isnan(finder.nearest_difference_[4])


def test_finder_says_what_it_needs_for_bad_input():
    with pytest.raises(InputError, match="Got 2 thumbnails for 3 feature rows"):
        DuplicateFinder().fit(np.eye(3), thumbnails=[None, None])
    with pytest.raises(InputError, match=r"neighbors=0 must be a positive number"):
        DuplicateFinder(neighbors=0).fit(None, thumbnails=[None, None])
    with pytest.raises(InputError, match="needs features, thumbnails or both"):
        DuplicateFinder().fit(None)


# ---- the built-in demo: 5,000 real handwritten digits ------------------------------------------

@pytest.fixture(scope="module")
def demo_queues(tmp_path_factory):
    """The default Duplicates queue of a copy of the demo, before and after planting 50 copies (seed 1)."""
    folder = bench.copy_dataset(demo_folder(), tmp_path_factory.mktemp("demo_duplicates") / "digits")
    with Project(folder) as project:
        embed(project.workspace)
        before = build_queues(project, queues=("duplicates",))["duplicates"]
        planted = bench.plant_copies(folder, [item.path for item in project.items], n=50, seed=1)
        project.refresh_items(rescan=True)
        after = build_queues(project, queues=("duplicates",))["duplicates"]
    return folder, before, after, planted


@pytest.mark.slow
@pytest.mark.weights
def test_demo_duplicates_list_no_look_alike_digits(demo_queues):
    folder, before, _, _ = demo_queues
    assert len(before) < 50                                         # under 1% of the 5,000 (it listed 645)
    for first, second in bench.group_pairs(before):                 # anything listed is a real copy
        assert np.array_equal(np.asarray(Image.open(folder / first)), np.asarray(Image.open(folder / second)))


@pytest.mark.slow
@pytest.mark.weights
def test_demo_planted_copies_are_all_found_without_false_pairs(demo_queues):
    _, before, after, planted = demo_queues
    scores = bench.duplicate_scores(after, planted, bench.group_pairs(before))
    print(f"demo: {scores['found']}/{scores['planted']} planted pairs found, {scores['false_pairs']} false of "
          f"{scores['pairs']} pairs; missed {scores['missed']}")
    assert scores["found"] == scores["planted"] == 50 and scores["false_pairs"] == 0

