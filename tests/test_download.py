"""`labeler download` and `labeler verify` against a local HTTP server on 127.0.0.1 (started and stopped here): good
images, HTML named .jpg, truncated files, a 50 MB body, a response slower than the timeout, redirects and a redirect
loop, 404 and 500, a server that fails once, and duplicate content. Each URL ends in the report with its outcome;
a download killed halfway finishes on the next run without fetching anything twice."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from _http import Site, serving
from engine.errors import InputError
from labeler.download import DUPLICATE, FAILED, NOT_TRIED, SAVED, Limits, UrlRow, download, read_urls, source_urls


@pytest.fixture
def site():
    with serving(Site()) as served:
        yield served


FAST = Limits(timeout=1.0, deadline=10.0, retries=2, backoff=0.05, max_bytes=2 * 2**20, workers=4)


def test_every_url_ends_in_the_report_with_its_outcome(site, tmp_path):
    names = ["good/1.jpg", "good/2.jpg", "html.jpg", "truncated.jpg", "big-declared.jpg", "big-streamed.jpg",
             "slow.jpg", "redirect.jpg", "loop-a", "missing.jpg", "broken.jpg", "flaky.jpg", "dup-a.jpg", "dup-b.jpg"]
    rows = [UrlRow(f"{site.base}/{name}", f"line {i}") for i, name in enumerate(names, 1)]
    rows += [UrlRow("ftp://example.org/x.jpg", "line 15"), UrlRow(f"{site.base}/good/1.jpg", "line 16")]
    report = download(rows, tmp_path / "photos", limits=FAST)
    by_url = {(o.url.removeprefix(site.base + "/"), o.where): o for o in report.outcomes}
    outcome = lambda name, where=None: next(o for (u, w), o in by_url.items() if u == name and (where is None or w == where))
    assert [o.where for o in report.outcomes] == [f"line {i}" for i in range(1, 17)]      # the list's order

    for name in ("good/1.jpg", "good/2.jpg", "redirect.jpg", "flaky.jpg", "dup-a.jpg"):
        assert outcome(name).status == SAVED, outcome(name)
    assert outcome("good/1.jpg", "line 1").path.endswith(".jpg") and outcome("good/2.jpg").path.endswith(".png")
    assert outcome("flaky.jpg").attempts == 2
    assert "not an image" in outcome("html.jpg").reason and outcome("html.jpg").status == FAILED
    assert "not an image" in outcome("truncated.jpg").reason
    assert outcome("big-declared.jpg").reason == f"too large: {50 * 2**20:,} bytes (the limit is {2 * 2**20:,})"
    assert outcome("big-streamed.jpg").reason == f"too large: more than {2 * 2**20:,} bytes"
    assert outcome("slow.jpg").reason.startswith("timed out") and outcome("slow.jpg").attempts == 3
    assert outcome("loop-a").reason == "too many redirects (more than 5)"
    assert outcome("missing.jpg").reason == "HTTP 404 Not Found" and outcome("missing.jpg").attempts == 1
    assert outcome("broken.jpg").reason.startswith("HTTP 500") and outcome("broken.jpg").attempts == 3
    assert outcome("dup-b.jpg").status == DUPLICATE and outcome("dup-b.jpg").path == outcome("dup-a.jpg").path
    assert outcome("ftp://example.org/x.jpg").reason.startswith("not an http(s) URL")
    assert outcome("good/1.jpg", "line 16").status == DUPLICATE          # the same URL twice in the list

    saved = sorted(p.relative_to(tmp_path / "photos").as_posix() for p in (tmp_path / "photos").rglob("*")
                   if p.is_file() and ".labeler" not in p.parts)
    assert saved == sorted(o.path for o in report.outcomes if o.status == SAVED and o.where != "line 16")
    assert len(saved) == 5 and not list((tmp_path / "photos").glob(".*.tmp"))
    # the source URL of each saved file stays in the workspace, for the exports
    assert source_urls(tmp_path / "photos" / ".labeler")[outcome("redirect.jpg").path] == f"{site.base}/redirect.jpg"

    # a second run fetches nothing decided, and tries the transient failures again
    before = Counter(site.hits)
    again = download(rows, tmp_path / "photos", limits=FAST)
    fetched = Counter(site.hits) - before
    assert set(fetched) == {"/slow.jpg", "/broken.jpg"}
    assert [o.status for o in again.outcomes] == [o.status for o in report.outcomes]
    assert all(o.resumed for o in again.outcomes if o.status == SAVED)


def test_names_are_stable_and_safe_and_the_total_limit_stops_new_downloads(site, tmp_path):
    rows = [UrlRow(f"{site.base}/good/{i}.jpg?x=../../etc", f"line {i}", label="<b>cat</b>", folder="../../out")
            for i in range(1, 7)]
    report = download(rows, tmp_path / "photos", limits=Limits(max_bytes=2**20, total_bytes=1, workers=1))
    saved = [o for o in report.outcomes if o.status == SAVED]
    assert len(saved) == 1 and {o.status for o in report.outcomes[1:]} == {NOT_TRIED}
    assert "total limit" in report.outcomes[1].reason
    assert saved[0].path.startswith("out/1-") and (tmp_path / "photos" / saved[0].path).is_file()
    assert not (tmp_path / "out").exists()
    second = download(rows[:1], tmp_path / "elsewhere", limits=FAST)
    assert Path(second.outcomes[0].path).name == Path(saved[0].path).name      # the same URL, the same name


def test_a_url_list_is_text_or_a_csv_with_a_url_column(tmp_path):
    text = tmp_path / "urls.txt"
    text.write_text("# photos\nhttp://a/1.jpg\n\n  http://a/2.jpg  \n")
    assert [(r.url, r.where) for r in read_urls(text)] == [("http://a/1.jpg", "urls.txt line 2"),
                                                           ("http://a/2.jpg", "urls.txt line 4")]
    table = tmp_path / "urls.csv"
    table.write_bytes("\ufeffURL,label,folder\nhttp://a/1.jpg,cat,\nhttp://a/2.jpg,,dogs\n".encode())
    assert [(r.url, r.label, r.folder) for r in read_urls(table)] == [("http://a/1.jpg", "cat", None),
                                                                      ("http://a/2.jpg", None, "dogs")]
    bad = tmp_path / "bad.csv"
    bad.write_text("link,label\nhttp://a/1.jpg,cat\n")
    with pytest.raises(InputError, match="bad.csv has no 'url' column"):
        read_urls(bad)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("http://a/caf\xe9.jpg\n".encode("latin-1"))
    with pytest.raises(InputError, match="latin.txt is not UTF-8"):
        read_urls(latin)


def test_the_cli_labels_from_the_list_and_a_killed_run_finishes_without_fetching_twice(tmp_path):
    with serving(Site(delay=0.4)) as site:
        base = site.base
        urls = tmp_path / "urls.csv"
        urls.write_text("url,label\n" + "".join(f"{base}/good/{i}.jpg,{'odd' if i % 2 else 'even'}\n"
                                                for i in range(1, 21)))
        folder = tmp_path / "photos"
        command = [sys.executable, "-m", "labeler.cli", "download", str(urls), str(folder), "--workers", "2",
                   "--json"]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        log = folder / ".labeler" / "downloads.sqlite"
        deadline = time.time() + 120
        while time.time() < deadline and len(_saved_urls(log)) < 6:
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        finished = _saved_urls(log)
        assert 6 <= len(finished) < 20
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        out = json.loads(done.stdout)
        assert out["counts"] == {"saved": 20} and out["fetched_now"] == 20 - len(finished)
        # every file saved before the kill was asked for once; the ones in flight at the kill (2 workers) again
        assert all(site.hits[url.removeprefix(base)] == 1 for url in finished)
        assert sum(n > 1 for n in site.hits.values()) <= 2 and len(site.hits) == 20
        assert out["labeled"]["images"] == 20 and sorted(out["labeled"]["labels"]) == ["even", "odd"]
        from labeler.io import export_labels_csv
        from labeler.project import Project
        with Project(folder) as project:
            assert project.store.counts() == {"odd": 10, "even": 10}
            export_labels_csv(project, tmp_path / "labels.csv")
        # the export carries each image's source URL, in a column pandas (and fastai, by position) read
        import pandas as pd
        table = pd.read_csv(tmp_path / "labels.csv")
        assert list(table.columns) == ["image_name", "tags", "url"] and len(table) == 20
        for name, tag, url in table.itertuples(index=False):
            number = int(url.rsplit("/", 1)[1].split(".")[0])
            assert tag == ("odd" if number % 2 else "even") and Path(name).name.startswith(f"{number}-")


def _saved_urls(log: Path) -> list[str]:
    if not log.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{log}?mode=ro", uri=True, timeout=1)
        try:
            return [url for url, in conn.execute("SELECT url FROM urls WHERE status = 'saved'")]
        finally:
            conn.close()
    except sqlite3.Error:
        return []
