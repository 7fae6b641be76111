"""The training engine's targets on real data: one `labeler train` run per task, as a user types it.

Each run is the CLI on ../shared/data (read-only; derived data goes to a temporary workspace),
timed from start to exit, with its metrics beside the image-blind baseline the same run reports
(most common class, every tag, or the training mean point). The must-show targets:

  classify    cifar10, seeded 80/20 split, mobilenet_v2          accuracy, aim 0.80
  segment     camvid U-Net, valid.txt                            pixel accuracy without void >= 0.82, mean IoU
  multilabel  camvid/presence.csv, valid.txt                     mAP >= 0.80, F2 beside all-positive F2
  regress     faces head centre (mean of 68 points), by person   error <= half the training-mean error

    .venv/bin/python bench/tasks.py [--data ../shared/data] [--tasks classify,segment,multilabel,regress] [--json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABELER = [sys.executable, "-m", "labeler.cli"]

# task -> (folder under data, label/split arguments, training settings, headline metric)
RUNS = {
    "classify": ("cifar10", ["--folders", "--seed", "0"],
                 ["--size", "160", "--freeze-epochs", "1", "--epochs", "12", "--lr", "2e-3", "--label-smoothing", "0.1"],
                 "accuracy"),
    "segment": ("camvid/images", ["--masks", "{data}/camvid/labels", "--mask-suffix", "_P.png",
                                  "--codes", "{data}/camvid/codes.txt", "--void", "11",
                                  "--valid-list", "{data}/camvid/valid.txt"],
                ["--size", "192", "--batch-size", "8", "--freeze-epochs", "1", "--epochs", "5", "--lr", "2e-3"],
                "pixel_accuracy"),
    "multilabel": ("camvid/images", ["--csv", "{data}/camvid/presence.csv", "--delimiter", " ",
                                     "--valid-list", "{data}/camvid/valid.txt"],
                   ["--size", "192", "--batch-size", "16", "--freeze-epochs", "1", "--epochs", "4", "--lr", "2e-3"],
                   "mAP"),
    "regress": ("faces/images", ["--points", "{data}/faces/keypoints.csv", "--points-mean",
                                 "--group-regex", r"^(.*)_\d+$"],
                ["--size", "160", "--freeze-epochs", "1", "--epochs", "8", "--lr", "1e-3", "--loss", "l1"],
                "point_error_px"),
}


def run(task: str, data: Path, workdir: Path) -> dict:
    folder, labels, settings, metric = RUNS[task]
    labels = [arg.replace("{data}", str(data)) for arg in labels]
    command = [*LABELER, "train", str(data / folder), *labels, *settings, "--workspace", str(workdir / task),
               "--out", str(workdir / f"{task}.pt"), "--json"]
    print(f"[{task}] {' '.join(command[2:])}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return {"task": task, "error": f"exit {done.returncode}", "time_s": seconds}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"task": task, "metric": metric, "time_s": seconds, "settings": " ".join(settings), **result}


def table(rows: list[dict]) -> str:
    lines = ["| task | train / valid | metric | ours | ours, flip TTA | image-blind baseline | other | time s |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['task']} | - | - | failed: {row['error']} | - | - | - | {row['time_s']:.0f} |")
            continue
        metric, ours, base = row["metric"], row["metrics"], row.get("baseline", {})
        tta = row.get("metrics_tta", {}).get(metric)
        other = {"classify": "", "segment": f"mean IoU {ours.get('mean_iou', float('nan')):.4f}",
                 "multilabel": f"F2 {ours.get('f2', float('nan')):.4f} (all-positive F2 {base.get('f2', float('nan')):.4f})",
                 "regress": f"{ours.get('point_error_rel', float('nan')):.4f} of the image side"}[row["task"]]
        lines.append(f"| {row['task']} | {row['train']} / {row['valid']} | {metric} | {ours[metric]:.4f} | "
                     f"{'-' if tta is None else f'{tta:.4f}'} | {base.get(metric, float('nan')):.4f} | {other} | "
                     f"{row['time_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--tasks", default="classify,segment,multilabel,regress")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if unknown := set(tasks) - set(RUNS):
        parser.error(f"unknown task(s) {sorted(unknown)}; choose from {sorted(RUNS)}")
    data = Path(args.data).resolve()
    if not data.is_dir():
        parser.error(f"{data} does not exist: this benchmark needs ../shared/data")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(task, data, Path(tmp)) for task in tasks]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(table(rows))
        for row in rows:
            if "settings" in row:
                print(f"{row['task']}: {row['settings']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
