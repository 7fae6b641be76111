"""A local image site on 127.0.0.1 for the download tests (started and stopped by the test): good images, HTML
named .jpg, truncated files, 50 MB bodies, a response slower than a timeout, redirects and a redirect loop, 404,
500, a server that fails once, and duplicate content; it counts the requests per path."""
from __future__ import annotations

import io
import threading
import time
from collections import Counter
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg(seed: int, size=(40, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


class Site:
    """What the local server serves, and how many times each path was asked for."""

    def __init__(self, delay: float = 0.0):
        self.hits: Counter = Counter()
        self.delay = delay          # seconds before each good image (a download to kill halfway)
        self.lock = threading.Lock()

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?")[0]
        with self.lock:
            self.hits[path] += 1
            hits = self.hits[path]
        if path.startswith("/good/"):
            time.sleep(self.delay)
            number = int(Path(path).stem)
            return self.send(handler, 200, jpeg(number) if number % 2 else png(number),
                             "image/jpeg" if number % 2 else "image/png")
        if path == "/html.jpg":
            return self.send(handler, 200, b"<html><body>not found, but 200</body></html>", "image/jpeg")
        if path == "/truncated.jpg":
            return self.send(handler, 200, jpeg(99, (400, 300))[:600], "image/jpeg")
        if path == "/dup-a.jpg" or path == "/dup-b.jpg":
            return self.send(handler, 200, jpeg(7), "image/jpeg")
        if path == "/big-declared.jpg":
            handler.send_response(200)
            handler.send_header("Content-Type", "image/jpeg")
            handler.send_header("Content-Length", str(50 * 2**20))
            handler.end_headers()
            return self.stream(handler, 50 * 2**20)
        if path == "/big-streamed.jpg":        # no Content-Length: the limit is found while reading
            handler.send_response(200)
            handler.send_header("Content-Type", "image/jpeg")
            handler.end_headers()
            return self.stream(handler, 50 * 2**20)
        if path == "/slow.jpg":
            handler.send_response(200)
            handler.send_header("Content-Type", "image/jpeg")
            handler.end_headers()
            time.sleep(3.0)                    # past the test's 1 s timeout
            return None
        if path == "/redirect.jpg":
            return self.redirect(handler, "/good/3.jpg")
        if path in ("/loop-a", "/loop-b"):
            return self.redirect(handler, "/loop-b" if path == "/loop-a" else "/loop-a")
        if path == "/missing.jpg":
            return self.send(handler, 404, b"no", "text/plain")
        if path == "/broken.jpg":
            return self.send(handler, 500, b"oops", "text/plain")
        if path == "/flaky.jpg":             # fails the first time only
            return self.send(handler, 503, b"busy", "text/plain") if hits == 1 else \
                self.send(handler, 200, jpeg(55), "image/jpeg")
        return self.send(handler, 404, b"unknown", "text/plain")

    @staticmethod
    def send(handler, status: int, body: bytes, kind: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    @staticmethod
    def redirect(handler, to: str) -> None:
        handler.send_response(302)
        handler.send_header("Location", to)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    @staticmethod
    def stream(handler, size: int) -> None:
        chunk = b"\xff" * 2**16
        try:
            for _ in range(size // len(chunk)):
                handler.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass                               # the client gave up at its limit, as it should


@contextmanager
def serving(site: Site):
    """`site` served on 127.0.0.1 (its `base` URL set) until the block ends."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            site.answer(self)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    site.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
