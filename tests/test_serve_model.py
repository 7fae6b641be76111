"""`labeler serve-model` on 127.0.0.1 (started and stopped here): 200 concurrent requests from 20 clients all answered
with what the model predicts for each image, in batches; raw bodies and multipart files; Grad-CAM on request; and a
clear refusal for a body that is no image, one past the size limit, and none."""
from __future__ import annotations

import base64
import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from _helpers import write_image
from labeler.testing import exported_classifier, start_model_server, stop_server

SIZE = 32
CLASSES = ["<b>bold</b>", "cat", "dog"]       # a label name with HTML in it


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    model_file = exported_classifier(root / "model.pt", CLASSES, backbone="resnet18", size=SIZE, pretrained=False,
                                     mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    images = [write_image(root / "images" / f"{i}.png", seed=i, size=(40 + i, 30 + i)).read_bytes() for i in range(20)]
    proc, url = start_model_server(model_file)
    yield SimpleNamespace(url=url, model=model_file, images=images, root=root)
    stop_server(proc)


def _expected(model_file, data: bytes) -> dict:
    from engine.predictor import load_exported
    return load_exported(model_file).predict(Image.open(io.BytesIO(data)))


def test_200_concurrent_requests_from_20_clients_are_all_answered_with_the_models_prediction(served):
    expected = [_expected(served.model, data) for data in served.images]

    def client(number: int) -> list:
        with httpx.Client(timeout=120) as http:
            answers = []
            for k in range(10):
                index = (number + k) % len(served.images)
                response = http.post(served.url + "/predict", content=served.images[index],
                                     headers={"Content-Type": "image/png"})
                answers.append((index, response.status_code, response.json()))
            return answers
    with ThreadPoolExecutor(20) as pool:
        answers = [answer for batch in pool.map(client, range(20)) for answer in batch]
    assert len(answers) == 200 and {status for _, status, _ in answers} == {200}
    for index, _, answer in answers:
        assert answer["label"] == expected[index]["label"]
        for name, p in expected[index]["probabilities"].items():
            assert answer["probabilities"][name] == pytest.approx(p, abs=1e-4)
    health = httpx.get(served.url + "/health").json()
    assert health["labels"] == CLASSES and health["task"] == "classify"
    assert health["images"] >= 200 and health["largest_batch"] > 1 and health["batches"] < health["images"]


def test_a_multipart_file_and_the_heatmap(served):
    response = httpx.post(served.url + "/predict?heatmap=1", files={"file": ("photo.png", served.images[3], "image/png")},
                          timeout=60)
    assert response.status_code == 200
    answer = response.json()
    assert answer["label"] == _expected(served.model, served.images[3])["label"]
    for key in ("picture", "heatmap"):
        assert answer[key].startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(answer[key].split(",", 1)[1])))
        assert image.size == (SIZE, SIZE)
    picture, heatmap = (np.asarray(Image.open(io.BytesIO(base64.b64decode(answer[k].split(",", 1)[1]))))
                        for k in ("picture", "heatmap"))
    assert np.abs(picture.astype(int) - heatmap.astype(int)).mean() > 1       # the heatmap is drawn over it


def test_what_is_no_image_too_large_or_missing_is_refused_with_the_reason(served):
    html = httpx.post(served.url + "/predict", content=b"<html>not a picture</html>",
                      headers={"Content-Type": "image/jpeg"})
    assert html.status_code == 415 and html.json()["error"].startswith("not an image")
    truncated = httpx.post(served.url + "/predict", content=served.images[0][:100], headers={"Content-Type": "image/png"})
    assert truncated.status_code == 415
    big = httpx.post(served.url + "/predict", content=b"\xff" * (11 * 2**20), headers={"Content-Type": "image/jpeg"},
                     timeout=60)
    assert big.status_code == 413 and "limit" in big.json()["error"]
    empty = httpx.post(served.url + "/predict", content=b"")
    assert empty.status_code == 400 and "no image" in empty.json()["error"]
    form = httpx.post(served.url + "/predict", files={"note": (None, "no file")})
    assert form.status_code == 400
    assert httpx.post(served.url + "/predict", content=served.images[1]).status_code == 200     # still answering


def test_the_page_shows_label_names_as_text(served):
    page = httpx.get(served.url + "/").text
    assert "textContent" in page and "innerHTML" not in page and "classify" in page


def test_the_help_shows_a_curl_example():
    done = subprocess.run([sys.executable, "-m", "labeler.cli", "serve-model", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "curl -X POST --data-binary @" in done.stdout and "127.0.0.1" in done.stdout


@pytest.mark.parametrize("task", ["segment", "regress"])
def test_a_unet_answers_its_mask_and_a_regressor_its_points_with_their_pictures(task, tmp_path):
    from starlette.testclient import TestClient
    from torch.utils.data import DataLoader, TensorDataset

    from engine.learner import Learner
    from engine.models import create_model
    from labeler.serve_model import create_app
    torch.manual_seed(0)
    n_out, codes = (2, ["background", "<i>square</i>"]) if task == "segment" else (4, None)
    y = torch.zeros(2, SIZE, SIZE, dtype=torch.int64) if task == "segment" else torch.zeros(2, 4)
    loader = DataLoader(TensorDataset(torch.randn(2, 3, SIZE, SIZE), y), batch_size=2)
    data = SimpleNamespace(task=task, classes=None, codes=codes, void_code=None, n_out=n_out, train=loader,
                           valid=loader, size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    model = Learner(data, create_model(task, "resnet18", n_out, pretrained=False), device="cpu").export(tmp_path / "m.pt")
    image = write_image(tmp_path / "photo.png", seed=3, size=(50, 40)).read_bytes()
    with TestClient(create_app(model)) as client:
        response = client.post("/predict?heatmap=1", content=image, headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["picture"].startswith("data:image/png") and answer["heatmap"].startswith("data:image/png")
    if task == "segment":
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask"].split(",", 1)[1]))))
        assert mask.shape == (40, 50) and set(np.unique(mask)) <= {0, 1}
        assert set(answer["classes"]) <= set(codes) and sum(answer["classes"].values()) == pytest.approx(1, abs=1e-3)
    else:
        points = np.asarray(answer["points"])
        assert points.shape == (2, 2) and np.isfinite(points).all()


@pytest.fixture(scope="module")
def logged(served):
    users = served.root / "users.json"
    users.write_text('{"ana": "correct horse", "bo": "battery staple"}', encoding="utf-8")
    proc, url = start_model_server(served.model, ["--basic-auth", str(users)])
    yield SimpleNamespace(url=url, proc=proc)
    stop_server(proc)


def test_with_basic_auth_nothing_of_the_model_without_the_right_login(served, logged):
    image = served.images[2]
    for answer in (httpx.get(logged.url + "/"), httpx.get(logged.url + "/health"),
                   httpx.post(logged.url + "/predict", content=image)):
        assert answer.status_code == 401, answer.text
        assert answer.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert "cat" not in answer.text and "classify" not in answer.text
    wrong = [("ana", "battery staple"), ("nobody", "correct horse"), ("ana", ""), ("", "correct horse")]
    for user, password in wrong:
        assert httpx.post(logged.url + "/predict", content=image, auth=(user, password)).status_code == 401
    for header in ("Basic !!!not base64", "Bearer correct horse", "Basic " + base64.b64encode(b"ana").decode(),
                   "Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "Basic"):
        assert httpx.get(logged.url + "/health", headers={"Authorization": header}).status_code == 401
    right = httpx.post(logged.url + "/predict", content=image, auth=("bo", "battery staple"))
    expected = _expected(served.model, image)
    assert right.status_code == 200 and right.json()["label"] == expected["label"]
    assert right.json()["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-4)
    assert httpx.get(logged.url + "/", auth=("ana", "correct horse")).status_code == 200
    log = stop_server(logged.proc)
    assert "login: HTTP basic auth" in log and "Traceback" not in log


def test_one_password_serves_any_user_name_and_a_bad_login_option_stops_before_the_model_loads(served, tmp_path):
    from starlette.testclient import TestClient

    from labeler.serve_model import create_app
    with TestClient(create_app(served.model, basic_auth="s3cret")) as client:
        assert client.get("/health").status_code == 401
        assert client.get("/health", auth=("anyone", "s3cret")).status_code == 200
        assert client.get("/health", auth=("anyone", "s3cret ")).status_code == 401
    missing, broken = tmp_path / "nobody.json", tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    for value, said in ((str(missing), "no such file"), (str(broken), "cannot read it as JSON"), ("", "is empty")):
        done = subprocess.run([sys.executable, "-m", "labeler.cli", "serve-model", str(tmp_path / "no-model.pt"),
                               "--basic-auth", value], capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and said in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_the_start_message_warns_when_the_network_can_use_the_model_without_a_login():
    from labeler.serve_model import exposure
    assert exposure("127.0.0.1", 8000, login=False) == [
        "labeler serve-model: http://127.0.0.1:8000/ (listening on this machine only); POST /predict with an image"]
    shared = exposure("0.0.0.0", 8000, login=False)
    assert "the network" in shared[0] and shared[1].startswith("WARNING: no login")
    assert exposure("0.0.0.0", 8000, login=True)[1].startswith("login: HTTP basic auth")
