"""`labeler serve-model` under load, with and without micro-batching, in the same run (issue 19).

A classifier as the Model tab exports one (mobilenet_v2 with its ImageNet body, 10 classes, at 128 px) is served
by `labeler serve-model` on 127.0.0.1 twice: `--max-batch 16` (batching) and `--max-batch 1` (one image per forward
pass). Each time 20 clients (threads with their own connection) send 10 real cifar10 photos each as raw bodies, all
at once; every answer is checked against the model's prediction for that photo. The table gives requests per
second (200 / the wall time from the first request to the last answer), the latency percentiles of one request,
and the batches the server formed.

    .venv/bin/python bench/serve.py [--clients 20] [--requests 10] [--heatmap]
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "cifar10"


def load(url: str, photos: list[bytes], expected: list[str], clients: int, requests: int, heatmap: bool) -> dict:
    import httpx
    latencies, wrong = [], []

    def client(number: int) -> None:
        with httpx.Client(timeout=600) as http:
            for k in range(requests):
                index = (number * requests + k) % len(photos)
                began = time.perf_counter()
                response = http.post(url + "/predict" + ("?heatmap=1" if heatmap else ""), content=photos[index],
                                     headers={"Content-Type": "image/jpeg"})
                latencies.append(time.perf_counter() - began)
                if response.status_code != 200 or response.json()["label"] != expected[index]:
                    wrong.append((index, response.status_code, response.text[:200]))
    before = httpx.get(url + "/health").json()["batches"]
    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - began
    health = httpx.get(url + "/health").json()
    cuts = statistics.quantiles(latencies, n=100)
    return dict(requests=len(latencies), wall=wall, rps=len(latencies) / wall, p50=cuts[49] * 1000,
                p95=cuts[94] * 1000, wrong=len(wrong), batches=health["batches"] - before,
                largest=health["largest_batch"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10, help="per client (default 10)")
    parser.add_argument("--heatmap", action="store_true", help="ask for the Grad-CAM heatmap with each prediction")
    args = parser.parse_args(argv)
    from PIL import Image

    from engine.predictor import load_exported
    from labeler.testing import exported_classifier, start_model_server, stop_server
    paths = sorted(SHARED.rglob("*.jpg"))[::50][:100]
    if not paths:
        raise SystemExit(f"no photos under {SHARED}")
    photos = [path.read_bytes() for path in paths]
    with tempfile.TemporaryDirectory() as tmp:
        model = exported_classifier(Path(tmp) / "model.pt", [str(i) for i in range(10)])
        predictor = load_exported(model)
        expected = [predictor.predict(Image.open(io.BytesIO(data)))["label"] for data in photos]
        rows = []
        for name, batch in (("micro-batching (--max-batch 16)", 16), ("one at a time (--max-batch 1)", 1)):
            proc, url = start_model_server(model, ["--max-batch", str(batch)])
            try:
                load(url, photos[:20], expected[:20], 4, 2, args.heatmap)          # warm up: the first passes
                rows.append((name, load(url, photos, expected, args.clients, args.requests, args.heatmap)))
            finally:
                stop_server(proc)
    print(f"{args.clients} clients x {args.requests} requests, all at once, on 127.0.0.1; mobilenet_v2 classifier at "
          f"128 px; real cifar10 photos as raw bodies{'; with the Grad-CAM heatmap' if args.heatmap else ''}\n")
    print("| server | requests | wrong | requests/s | p50 ms | p95 ms | batches (largest) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['requests']} | {r['wrong']} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} | "
              f"{r['batches']} ({r['largest']}) |")
    base = rows[1][1]
    print(f"\nmicro-batching: {rows[0][1]['rps'] / base['rps']:.2f}x the requests/s of one at a time, p50 "
          f"{rows[0][1]['p50'] / base['p50']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
