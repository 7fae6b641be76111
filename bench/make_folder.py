"""A folder of N distinct real photos made from ../shared/data, for measuring the workflow at scale.

Each file is one of the shared photos (cifar10, camvid, faces: about 5,000) through a seeded chain of
changes: a random crop (40-100% of each side), a flip, a colour shift (brightness, contrast, saturation, hue
turn), a resize to 64-128 px and a JPEG re-encode at quality 60-95. So every file has its own bytes and
pixels (the project's duplicate finder treats them as distinct images) while staying a real photo whose
features cluster as its source's do. The folders are `<source>/<shard>/` with at most 1,000 files each.

    python bench/make_folder.py OUT --count 100000 [--seed 0] [--workers 2]

Re-running with the same arguments keeps the files already there (a folder can grow from 10k to 100k).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image, ImageEnhance

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PER_SHARD = 1000


def sources(shared: Path = SHARED) -> list[Path]:
    """The shared photos, in a fixed order."""
    found = sorted((shared / "cifar10").rglob("*.jpg")) + sorted((shared / "camvid" / "images").glob("*.jpg")) \
        + sorted((shared / "faces" / "images").glob("*.jpg"))
    if not found:
        raise SystemExit(f"no photos under {shared}: the generator needs ../shared/data")
    return found


def target(out: Path, index: int, source: Path) -> Path:
    kind = source.relative_to(SHARED).parts[0] if SHARED in source.parents else "photo"
    return out / kind / f"{index // PER_SHARD:04d}" / f"{index:07d}.jpg"


def variant(source: Path, index: int, seed: int) -> Image.Image:
    """The `index`-th change of `source` (seeded: the same arguments give the same image)."""
    rng = random.Random(seed * 1_000_003 + index)
    image = Image.open(source).convert("RGB")
    width, height = image.size
    cw, ch = max(8, int(width * rng.uniform(0.4, 1.0))), max(8, int(height * rng.uniform(0.4, 1.0)))
    left, top = rng.randint(0, width - cw), rng.randint(0, height - ch)
    image = image.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.4))
    hsv = image.convert("HSV")
    h, s, v = hsv.split()
    turn = rng.randint(-12, 12)
    image = Image.merge("HSV", (h.point(lambda x: (x + turn) % 256), s, v)).convert("RGB")
    edge = rng.randint(64, 128)
    scale = edge / max(image.size)
    return image.resize((max(8, round(image.width * scale)), max(8, round(image.height * scale))),
                        Image.Resampling.BILINEAR)


def _make(job) -> int:
    out, start, stop, seed, photos = job
    made = 0
    for index in range(start, stop):
        source = photos[index % len(photos)]
        path = target(out, index, source)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        quality = random.Random(seed + index).randint(60, 95)
        part = path.with_suffix(".part")
        variant(source, index, seed).save(part, format="JPEG", quality=quality)
        part.replace(path)
        made += 1
    return made


def make_folder(out: Path, count: int, seed: int = 0, workers: int = 2, log=print) -> int:
    """Make (or complete) `out` with `count` files; returns how many were made now."""
    photos = sources()
    out.mkdir(parents=True, exist_ok=True)
    step = 2000
    jobs = [(out, start, min(count, start + step), seed, photos) for start in range(0, count, step)]
    started, made = time.perf_counter(), 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for done, n in enumerate(pool.map(_make, jobs), start=1):
            made += n
            if done % 10 == 0 or done == len(jobs):
                log(f"  {min(count, done * step):,} of {count:,} files ({time.perf_counter() - started:.0f} s)")
    return made


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    made = make_folder(args.out, args.count, args.seed, args.workers, log=lambda m: print(m, file=sys.stderr))
    print(f"{args.out}: {args.count:,} files ({made:,} made now)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
