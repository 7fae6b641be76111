"""The page of `labeler serve-model` in Chromium, on a cifar10 model trained here (`labeler train` on 300 real photos
of ../shared/data): a person picks a photo it did not train on and sees the label, the ten probabilities and the
Grad-CAM heatmap; a file that is no image gets the reason as text."""
import re
import shutil
import subprocess
import sys

import pytest

from _helpers import shared_data
from labeler.testing import start_model_server, stop_server

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.weights, pytest.mark.data]


@pytest.fixture(scope="module")
def cifar_model(tmp_path_factory):
    source = shared_data("cifar10")
    root = tmp_path_factory.mktemp("cifar-model")
    for label in sorted(p for p in source.iterdir() if p.is_dir()):
        (root / "train" / label.name).mkdir(parents=True)
        for image in sorted(label.glob("*.jpg"))[:30]:
            shutil.copy(image, root / "train" / label.name / image.name)
    done = subprocess.run([sys.executable, "-m", "labeler.cli", "train", str(root / "train"), "--folders", "--epochs",
                           "1", "--freeze-epochs", "1", "--size", "64", "--lr", "0.002", "--out", str(root / "model.pt"),
                           "--json"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    unseen = sorted((source / "cat").glob("*.jpg"))[-1]
    return root / "model.pt", unseen, sorted(p.name for p in source.iterdir() if p.is_dir())


def test_a_person_picks_a_photo_and_sees_the_label_the_probabilities_and_the_heatmap(cifar_model, browser, tmp_path):
    model, photo, classes = cifar_model
    proc, url = start_model_server(model)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(url + "/")
        page.locator("#file").set_input_files(str(photo))
        page.wait_for_function("() => document.getElementById('heatmap').src.startsWith('data:image/png')",
                               timeout=120_000)
        label = page.locator("#label").inner_text()
        assert label in classes
        rows = page.locator("#scores tr").all_inner_texts()
        assert len(rows) == 10 and rows[0].startswith(label)
        shares = [float(re.search(r"([\d.]+)%", row).group(1)) for row in rows]
        assert shares == sorted(shares, reverse=True) and 99 <= sum(shares) <= 101
        assert page.locator("#picture").get_attribute("src").startswith("data:image/png")
        page.screenshot(path=str(tmp_path / "serve-model.png"))

        bad = tmp_path / "notes.jpg"
        bad.write_text("<html>a web page named .jpg</html>")
        page.locator("#file").set_input_files(str(bad))
        page.wait_for_function("() => document.getElementById('error').textContent.length > 0", timeout=60_000)
        assert page.locator("#error").inner_text().startswith("not an image")
        assert not errors, errors
    finally:
        page.close()
        log = stop_server(proc)
    assert "Traceback" not in log, log[-3000:]


def test_behind_a_login_the_page_works_for_a_logged_in_browser_and_not_without(cifar_model, browser, tmp_path):
    model, photo, classes = cifar_model
    proc, url = start_model_server(model, ["--basic-auth", "correct horse"])
    logged = browser.new_context(http_credentials={"username": "ana", "password": "correct horse"})
    stranger = browser.new_context()
    try:
        page = logged.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url + "/")
        page.locator("#file").set_input_files(str(photo))    # the page's own request to /predict logs in too
        page.wait_for_function("() => document.getElementById('heatmap').src.startsWith('data:image/png')",
                               timeout=120_000)
        assert page.locator("#label").inner_text() in classes and not errors, errors
        with pytest.raises(Exception, match="ERR_INVALID_AUTH_CREDENTIALS"):   # a browser is asked to log in
            stranger.new_page().goto(url + "/")
        assert stranger.request.get(url + "/health").status == 401
    finally:
        logged.close()
        stranger.close()
        log = stop_server(proc)
    assert "login: HTTP basic auth" in log and "Traceback" not in log
