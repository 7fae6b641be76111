"""An empty folder served in Chromium offers "Add images from URLs": URLs pasted one a line are downloaded from a
local site on 127.0.0.1 (good images, an HTML page named .jpg, a 404 whose URL is HTML), the page says what became of
each (the HTML in a URL shown as text), Download pressed again while it runs starts nothing more, and the map opens
with the saved images."""
import re

import pytest

from _http import Site, serving
from labeler.testing import assert_no_traceback, injected_elements, start_server, stop_server, watched_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]
HOSTILE = "<img src=x onerror=\"document.title='PWNED'\">.jpg"


def test_an_empty_folder_gets_its_images_from_pasted_urls_and_opens(browser, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with serving(Site(delay=0.3)) as site:
        urls = [f"{site.base}/good/{i}.jpg" for i in range(1, 13)] + [f"{site.base}/html.jpg",
                                                                     f"{site.base}/{HOSTILE}"]
        proc, url = start_server(folder, tmp_path / "workspace")
        context, page, errors = watched_page(browser)
        try:
            page.goto(url)
            page.get_by_text("holds no images yet").first.wait_for(timeout=60_000)
            page.get_by_placeholder(re.compile("one URL a line")).fill("\n".join(urls))
            page.screenshot(path=str(tmp_path / "from-urls-box.png"))
            download = page.get_by_role("button", name="Download")
            download.click()
            download.click(force=True)                 # again while it runs: nothing more starts
            page.get_by_text("12 of 14 URLs gave an image.").first.wait_for(timeout=120_000)
            status = page.get_by_text("12 of 14 URLs gave an image.").first.inner_text()
            assert "not an image" in status and "HTTP 404" in status and "<img src=x" in status
            page.get_by_text(re.compile(r"^Layer: ")).first.wait_for(timeout=300_000)     # the map opened
            page.screenshot(path=str(tmp_path / "from-urls.png"))
            assert max(site.hits.values()) == 1               # nothing fetched twice
            assert page.title() != "PWNED" and sum(injected_elements(page).values()) == 0
            assert not errors, errors
            saved = [p for p in folder.rglob("*.*") if ".labeler" not in p.parts]
            assert len(saved) == 12
        finally:
            context.close()
            log = stop_server(proc)
    assert_no_traceback(log)
