"""`labeler serve-model MODEL`: a trained model behind a small web page and a JSON API, on Starlette and uvicorn.

- `GET /`: a page where a person drops or picks an image and sees the prediction (label and probabilities; tags;
  the mask over the image for a U-Net; the points for a regressor) and the Grad-CAM heatmap of what the model
  looked at. Label names are put into the page as text, never as HTML.
- `POST /predict`: the image as the raw request body (`Content-Type: image/...` or application/octet-stream) or as
  a multipart file field; answers the prediction as JSON (`label` and `probabilities` for a classifier, `labels`
  and `probabilities` for tags, `mask` (a PNG of class indices, as a data URI) and `classes` for a U-Net, `points`
  in the image's pixels for a regressor); `?heatmap=1` adds `heatmap` and `picture` (PNG data URIs: the image as the
  model saw it with its prediction drawn, with and without Grad-CAM). 413 past the size limit, 415 for a body that
  is not an image (the reason given), 400 for no image at all.
- `GET /health`: the model's task, labels and input size, and how many batches and images it has predicted.

With `--basic-auth` (one password for any user name, or a JSON file of {"user": "password"}, read at start, as
`labeler serve` takes it) every route asks for HTTP basic auth: a browser shows its own login box, curl takes
`-u user:password`; without it, or with a wrong one, the answer is 401 and nothing of the model.

Concurrent requests are micro-batched (`Batcher`): the first waits up to `max_wait_ms` for others, and up to
`max_batch` are decoded and predicted in one forward pass (and one Grad-CAM pass), on one worker thread, so the
event loop keeps accepting requests. `max_batch=1` turns batching off (`bench/serve.py` measures both).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

MAX_BYTES = 10 * 2**20
EXAMPLES = """examples:
  labeler serve-model model.pt                       # http://127.0.0.1:8000/ : drop an image, see the prediction
  curl -X POST --data-binary @cat.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8000/predict
  curl -F file=@cat.jpg 'http://127.0.0.1:8000/predict?heatmap=1'
"""


class NotAnImage(Exception):
    """The request's body does not decode as an image."""


class Batcher:
    """Predictions for concurrent requests, `max_batch` at a time on one worker thread."""

    def __init__(self, predictor, *, max_batch: int = 16, max_wait_ms: float = 10.0):
        self.predictor, self.max_batch, self.max_wait = predictor, max(1, max_batch), max_wait_ms / 1000
        self.queue: asyncio.Queue | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labeler-model")
        self.batches: list[int] = []             # the size of each batch run (for the bench and the tests)

    async def predict(self, data: bytes, heatmap: bool) -> dict:
        """The JSON answer for one image's bytes (NotAnImage when they are not one)."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((data, heatmap, future))
        return await future

    async def run(self) -> None:
        self.queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time())))
                except asyncio.TimeoutError:
                    break
            self.batches.append(len(batch))
            try:
                answers = await loop.run_in_executor(self.executor, self._answers, [(d, h) for d, h, _ in batch])
            except Exception as err:        # a bug: every request of the batch hears of it, the log has the traceback
                logger.exception("prediction failed")
                answers = [RuntimeError(f"{type(err).__name__}: {err}")] * len(batch)
            for (_, _, future), answer in zip(batch, answers):
                if future.done():
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    def _answers(self, requests: list[tuple[bytes, bool]]) -> list:
        """Decode every image (each failure its own), then one forward pass and one Grad-CAM pass for the rest."""
        from engine.data import decode_image
        from engine.errors import ImageReadError
        answers: list = [None] * len(requests)
        images = {}
        for index, (data, _) in enumerate(requests):
            try:
                images[index] = decode_image(data, "the request's body")
            except ImageReadError as err:
                answers[index] = NotAnImage(err.reason)
        order = list(images)
        if order:
            heatmaps = {position for position, index in enumerate(order) if requests[index][1]}
            for index, answer in zip(order, self._predict([images[i] for i in order], heatmaps)):
                answers[index] = answer
        return answers

    def _predict(self, images: list, heatmaps: set[int]) -> list[dict]:
        import torch

        from engine.interpret import denormalize, explain, picture
        predictor = self.predictor
        task, labels = predictor.task, predictor.labels
        x = torch.cat([predictor.preprocess(image) for image in images])
        outputs = task.activation(predictor.raw_outputs(x))
        heat = {}
        if heatmaps:
            chosen = sorted(heatmaps)
            device = next(predictor.model.parameters()).device
            for i, cam in zip(chosen, explain(predictor.model, task, x[chosen].to(device))):
                heat[i] = cam
        answers = []
        for i, image in enumerate(images):
            answer = _jsonable(task.decode(outputs[i], image.size, labels), task)
            if i in heat:
                seen = denormalize(x[i], predictor.mean, predictor.std)
                answer["picture"] = _png_uri(picture(seen, task, outputs[i], labels))
                answer["heatmap"] = _png_uri(picture(seen, task, outputs[i], labels, heat=heat[i]))
            answers.append(answer)
        return answers


def _png_uri(pixels: np.ndarray) -> str:
    from PIL import Image
    out = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _jsonable(result: dict, task) -> dict:
    """A decoded prediction as JSON: a mask as a PNG of class indices (and each class's share, as `labeler predict`
    summarizes it: `task.summary`), arrays as lists."""
    answer = {}
    for key, value in result.items():
        if key == "mask":
            answer["mask"] = _png_uri(np.asarray(value).astype(np.uint8))
            answer["classes"] = {str(code): share for code, share in task.summary(result)["classes"].items()}
        elif isinstance(value, np.ndarray):
            answer[key] = np.round(value.astype(float), 3).tolist()
        elif isinstance(value, dict):
            answer[key] = {str(k): round(float(v), 6) for k, v in value.items()}
        else:
            answer[key] = value
    return answer


def create_app(model_file, *, max_batch: int = 16, max_wait_ms: float = 10.0, max_bytes: int = MAX_BYTES,
               basic_auth: str | None = None):
    """The Starlette app serving `model_file` (a file from `labeler train --out` or the Model tab); with
    `basic_auth` (as `--basic-auth` takes it) only to requests that log in."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    from engine.predictor import load_exported
    login = None if basic_auth is None else BasicAuth(basic_auth)     # a bad value stops us before the model loads
    predictor = load_exported(model_file)
    batcher = Batcher(predictor, max_batch=max_batch, max_wait_ms=max_wait_ms)

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(batcher.run())
        while batcher.queue is None:
            await asyncio.sleep(0)
        try:
            yield
        finally:
            task.cancel()
            batcher.executor.shutdown(wait=False, cancel_futures=True)

    async def page(request: Request):
        return HTMLResponse(_PAGE.replace("__TASK__", predictor.task.name))

    async def health(request: Request):
        return JSONResponse({"model": Path(model_file).name, "task": predictor.task.name, "size": predictor.size,
                             "labels": [str(label) for label in predictor.labels or []], "max_batch": batcher.max_batch,
                             "batches": len(batcher.batches), "images": sum(batcher.batches),
                             "largest_batch": max(batcher.batches, default=0)})

    async def predict(request: Request):
        try:
            data = await _image_bytes(request, max_bytes)
        except _Refused as err:
            return JSONResponse({"error": str(err)}, status_code=err.status)
        try:
            answer = await batcher.predict(data, request.query_params.get("heatmap", "") in ("1", "true", "yes"))
        except NotAnImage as err:
            return JSONResponse({"error": f"not an image: {err}"}, status_code=415)
        except RuntimeError as err:
            return JSONResponse({"error": f"the prediction failed: {err}"}, status_code=500)
        return JSONResponse(answer)

    app = Starlette(routes=[Route("/", page), Route("/health", health), Route("/predict", predict, methods=["POST"])],
                    lifespan=lifespan)
    app.state.batcher = batcher
    return app if login is None else login.guarding(app)


class BasicAuth:
    """ASGI middleware: HTTP requests without the right basic-auth credentials get 401 and never reach the app.

    `value` is `--basic-auth`'s: the password any user name may give, or a JSON file of {"user": "password"}.
    Passwords are compared in constant time; an unknown user name is compared against a stand-in, so the time
    taken does not say which names exist."""

    REALM = 'Basic realm="labeler serve-model", charset="UTF-8"'

    def __init__(self, value: str):
        from labeler.ui.serve import read_basic_auth
        self.users = read_basic_auth(value)
        self.password = value if self.users is None else None
        self.app = None

    def guarding(self, app) -> BasicAuth:
        self.app = app
        return self

    def allows(self, header: str) -> bool:
        import hmac
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except ValueError:                   # not base64, or not UTF-8
            return False
        if not sep:
            return False
        expected = self.password if self.users is None else self.users.get(user)
        matches = hmac.compare_digest(password.encode(), (expected or "\0 no such user").encode())
        return matches and expected is not None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            header = dict(scope.get("headers") or ()).get(b"authorization", b"").decode("latin-1")
            if not self.allows(header):
                from starlette.responses import JSONResponse
                refusal = JSONResponse({"error": "log in: this server asks for --basic-auth credentials"},
                                       status_code=401, headers={"WWW-Authenticate": self.REALM})
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _Refused(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


async def _image_bytes(request, max_bytes: int) -> bytes:
    """The image of a request: its raw body, or the first file of a multipart form; _Refused past `max_bytes`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _Refused(f"the request is {int(declared):,} bytes; the limit is {max_bytes:,}", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise _Refused(f"the request is larger than the limit of {max_bytes:,} bytes", 413)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        from starlette.formparsers import MultiPartParser
        from starlette.datastructures import UploadFile

        async def stream():
            yield bytes(body)
            yield b""
        try:
            form = await MultiPartParser(request.headers, stream(), max_files=4, max_fields=16).parse()
        except Exception as err:        # a malformed form: say so, as for any bad request
            raise _Refused(f"the multipart form cannot be read: {err}", 400) from None
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise _Refused("the form has no file field: send the image as a file (curl -F file=@photo.jpg)", 400)
        return await files[0].read()
    if not body:
        raise _Refused("no image in the request: send its bytes as the body (Content-Type: image/jpeg) or as a file "
                       "field of a multipart form", 400)
    return bytes(body)


def add_command(sub) -> None:
    text = ("serve a trained model: a web page to drop an image on and see the prediction and its heatmap, and a JSON "
            "API (POST /predict) with micro-batching")
    cmd = sub.add_parser("serve-model", help=text, description=text, epilog=EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    cmd.add_argument("model", metavar="MODEL", help="a model written by `labeler train --out` or the Model tab")
    cmd.add_argument("--address", default="127.0.0.1",
                     help="address to listen on (default %(default)s: this machine only; 0.0.0.0 for the network)")
    cmd.add_argument("--port", type=int, default=8000, help="(default %(default)s)")
    cmd.add_argument("--max-batch", type=int, default=16,
                     help="images predicted in one pass when requests arrive together; 1 turns batching off "
                          "(default %(default)s)")
    cmd.add_argument("--max-wait-ms", type=float, default=10.0,
                     help="how long a request waits for others to batch with (default %(default)s)")
    cmd.add_argument("--max-size", type=int, default=MAX_BYTES, metavar="BYTES",
                     help="largest request accepted (default %(default)s: 10 MiB)")
    cmd.add_argument("--basic-auth", metavar="PASSWORD|USERS.json",
                     help="ask every request for HTTP basic auth: one password for any user name, or (better: a "
                          "password given here shows in `ps`) a JSON file of {\"user\": \"password\"}, read at start")
    cmd.set_defaults(run=run)


def exposure(address: str, port: int, login: bool) -> list[str]:
    """What to tell the person starting the server: where it listens, and a warning when the network can use it
    without a login."""
    from labeler.ui.serve import is_loopback
    local = is_loopback(address)
    where = "this machine only" if local else "the network"
    lines = [f"labeler serve-model: http://{address}:{port}/ (listening on {where}); POST /predict with an image"]
    if login:
        lines.append("login: HTTP basic auth. Traffic is plain HTTP: put TLS in front (a reverse proxy) beyond a "
                     "trusted network.")
    elif not local:
        lines.append("WARNING: no login. Anyone who can reach this port can use the model and read its labels. Add "
                     "--basic-auth (see SECURITY.md).")
    return lines


def run(args) -> int:
    import sys

    import uvicorn
    app = create_app(args.model, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_bytes=args.max_size,
                     basic_auth=args.basic_auth)
    print("\n".join(exposure(args.address, args.port, args.basic_auth is not None)), file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.address, port=args.port, log_level="warning")
    return 0


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>labeler: a model</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font-family: system-ui, sans-serif; margin: 2em; max-width: 980px; color: #222; }
 #drop { border: 2px dashed #999; border-radius: 8px; padding: 2em; text-align: center; cursor: pointer; }
 #drop.over { background: #eef6ff; border-color: #3a7bd5; }
 .row { display: flex; gap: 1.5em; flex-wrap: wrap; margin-top: 1.5em; }
 figure { margin: 0; } figcaption { font-size: 0.9em; color: #555; }
 img { width: 256px; height: 256px; object-fit: contain; border: 1px solid #ddd; background: #fafafa; }
 img.model { image-rendering: pixelated; }    /* the model's input size is small: show its pixels as they are */
 table { border-collapse: collapse; } td { padding: 2px 10px 2px 0; }
 .bar { background: #3a7bd5; height: 10px; } #error { color: #b00020; } #label { font-size: 1.6em; }
</style></head>
<body>
<h1>What does the model see?</h1>
<p>A <b>__TASK__</b> model. Drop an image below, or pick one.</p>
<div id="drop">Drop an image here, or click to pick one<input id="file" type="file" accept="image/*" hidden></div>
<p id="error" role="alert"></p>
<div id="label"></div>
<div class="row">
 <figure><img id="original" alt=""><figcaption>your image</figcaption></figure>
 <figure><img id="picture" class="model" alt=""><figcaption>as the model saw it, with its prediction</figcaption></figure>
 <figure><img id="heatmap" class="model" alt=""><figcaption>where it looked (Grad-CAM)</figcaption></figure>
</div>
<table id="scores"></table>
<script>
const $ = (id) => document.getElementById(id);
const drop = $('drop'), input = $('file');
drop.addEventListener('click', () => input.click());
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over');
  if (e.dataTransfer.files.length) { send(e.dataTransfer.files[0]); } });
input.addEventListener('change', () => { if (input.files.length) { send(input.files[0]); } });
function row(name, value) {            // text only: label names come from people
  const tr = document.createElement('tr');
  const a = document.createElement('td'); a.textContent = name;
  const b = document.createElement('td'); b.textContent = (100 * value).toFixed(1) + '%';
  const c = document.createElement('td'); const bar = document.createElement('div');
  bar.className = 'bar'; bar.style.width = Math.round(200 * value) + 'px'; c.appendChild(bar);
  tr.append(a, b, c); return tr;
}
async function send(file) {
  $('error').textContent = ''; $('label').textContent = 'Predicting…'; $('scores').replaceChildren();
  $('original').src = URL.createObjectURL(file); $('picture').removeAttribute('src'); $('heatmap').removeAttribute('src');
  let answer;
  try {
    const response = await fetch('predict?heatmap=1', {method: 'POST', body: file,
                                 headers: {'Content-Type': file.type || 'application/octet-stream'}});
    answer = await response.json();
    if (!response.ok) { throw new Error(answer.error || response.statusText); }
  } catch (err) { $('label').textContent = ''; $('error').textContent = String(err.message || err); return; }
  if ('label' in answer) { $('label').textContent = answer.label; }
  else if ('labels' in answer) { $('label').textContent = answer.labels.length ? answer.labels.join(', ') : '(no tag)'; }
  else if ('classes' in answer) { $('label').textContent = 'mask (shares of the image below)'; }
  else if ('points' in answer) { $('label').textContent = 'points: ' + answer.points.map((p) => '(' + p.map((v) => v.toFixed(1)).join(', ') + ')').join(' '); }
  const scores = answer.probabilities || answer.classes || {};
  Object.entries(scores).sort((a, b) => b[1] - a[1]).slice(0, 10).forEach(([k, v]) => $('scores').appendChild(row(k, v)));
  if (answer.picture) { $('picture').src = answer.picture; }
  if (answer.heatmap) { $('heatmap').src = answer.heatmap; }
}
</script>
</body></html>
"""
