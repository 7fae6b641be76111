"""`labeler download URLS FOLDER`: image URLs to a folder of images that open, resumably, with a report per URL.

The list is a text file (one URL a line; blank lines and `#` comments skipped) or a CSV with a `url` column and
optional `label` and `folder` columns (`read_urls`). `download` fetches them in parallel threads with httpx:

- each request has a connect/read timeout and the whole download a deadline (a server that trickles bytes
  past it fails as a timeout); timeouts, refused connections, 429 and 5xx answers are tried again with
  exponential back-off (and the server's Retry-After, capped); 4xx answers are not;
- redirects are followed up to a limit (a loop ends there); a body past the per-file limit is abandoned as soon
  as it passes it (at once when Content-Length says so), and no download starts once the run's total limit is
  reached;
- what arrives is kept only when it decodes as an image with the same reader the engine uses
  (`engine.data.decode_image`), whatever the name or Content-Type say; an image whose bytes equal an earlier
  one's (SHA-1) is reported as a duplicate of it and not saved again;
- a saved file's name is stable and safe: the URL's last path segment reduced to letters, digits, `-` and
  `_`, a hash of the URL, and the extension of the format the bytes decoded as, in FOLDER/<folder> (or
  FOLDER/<label>) when the row gives one; it is written under a temporary name and renamed when whole.

Every URL's outcome is recorded as it ends in the workspace's `downloads.sqlite` (`DownloadLog`): a run that is
stopped (killed, Ctrl+C) and started again skips every URL already saved (its file still there) or found to be
a duplicate or a permanent failure (404, not an image, too large), and tries the rest. The record keeps each
saved file's source URL, which the labels CSV export carries (`source_urls`).
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from engine._atomic import atomic_output
from engine.errors import ImageReadError, InputError

logger = logging.getLogger(__name__)

LOG_NAME = "downloads.sqlite"
SAVED, DUPLICATE, FAILED, NOT_TRIED = "saved", "duplicate", "failed", "not tried"
USER_AGENT = "labeler-download/1 (+https://github.com/; image dataset collection)"
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif",
               "MPO": ".jpg", "ICO": ".ico", "PPM": ".ppm"}
_DECODING = threading.Lock()     # decode_image switches warnings filters: not thread-safe


@dataclass(frozen=True)
class UrlRow:
    """One URL of the list, where it was (for messages), and the label and subfolder it asks for."""

    url: str
    where: str
    label: str | None = None
    folder: str | None = None


@dataclass
class Limits:
    """How patient and how large a download may be."""

    timeout: float = 20.0                  # seconds to connect, and between two reads
    deadline: float = 120.0                # seconds for one whole download (a trickling server fails)
    retries: int = 3                       # further tries after a timeout, a refused connection, 429 or 5xx
    backoff: float = 1.0                   # seconds before the first retry; doubled each time (with jitter)
    max_bytes: int = 20 * 2**20            # per file
    total_bytes: int | None = None         # the whole run: no download starts past it
    max_redirects: int = 5
    workers: int = 8                       # downloads at once


@dataclass
class Outcome:
    """How one URL ended: `status` is saved, duplicate, failed or not tried; `path` the saved file (relative to
    the folder) or, for a duplicate, the file it equals; `reason` why it was not saved; `resumed`: decided by an
    earlier run (nothing fetched now)."""

    url: str
    where: str
    status: str
    path: str | None = None
    reason: str | None = None
    label: str | None = None
    bytes: int = 0
    attempts: int = 0
    resumed: bool = False


@dataclass
class DownloadReport:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return counts

    def as_json(self) -> dict:
        return {"counts": self.counts, "fetched_now": sum(not o.resumed and o.attempts > 0 for o in self.outcomes),
                "urls": [asdict(o) for o in self.outcomes]}


class _Permanent(Exception):
    """A failure trying again would not change (404, not an image, too large, a redirect loop)."""


class _Transient(Exception):
    """A failure worth another try (a timeout, a refused connection, 429, 5xx)."""

    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.wait = wait


# ---- the list -------------------------------------------------------------------------------------------------

def read_urls(path) -> list[UrlRow]:
    """The URLs of a text file (one a line) or a CSV with a `url` column (and optional `label`, `folder`)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise InputError(f"Cannot read the URL list {path}: {err.strerror or err}.") from None
    except UnicodeDecodeError as err:
        raise InputError(f"The URL list {path} is not UTF-8 text (byte {err.start}): save it as UTF-8.") from None
    first = next((line for line in text.splitlines() if line.strip()), "")
    if path.suffix.lower() == ".csv" or re.search(r"(^|,)\s*\"?url\"?\s*(,|$)", first, re.IGNORECASE):
        return _csv_rows(path, text)
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(UrlRow(line, f"{path.name} line {number}"))
    return rows


def _csv_rows(path: Path, text: str) -> list[UrlRow]:
    reader = csv.DictReader(io.StringIO(text))
    columns = {name.strip().lower(): name for name in reader.fieldnames or [] if name}
    if "url" not in columns:
        raise InputError(f"The CSV {path} has no 'url' column (its columns: {', '.join(reader.fieldnames or [])}). "
                         f"Give a column named url, and optionally label and folder.")
    rows = []
    try:
        for number, record in enumerate(reader, start=2):
            url = (record.get(columns["url"]) or "").strip()
            if not url:
                continue
            cell = lambda key: ((record.get(columns[key]) or "").strip() or None) if key in columns else None
            rows.append(UrlRow(url, f"{path.name} line {number}", cell("label"), cell("folder")))
    except csv.Error as err:
        raise InputError(f"The CSV {path} cannot be read: {err}.") from None
    return rows


# ---- names ----------------------------------------------------------------------------------------------------

def safe_part(text: str, limit: int = 60) -> str:
    """`text` as one safe path component: letters, digits, '-', '_' and '.', no leading dot or dash."""
    cleaned = re.sub(r"[^\w.-]+", "_", text, flags=re.ASCII).strip("._-")
    return cleaned[:limit].rstrip("._-")


def file_name(url: str, image_format: str) -> str:
    """A stable, safe name for the image at `url`: its last path segment, a hash of the URL, the format's extension."""
    segment = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    stem = safe_part(segment.rsplit(".", 1)[0] if "." in segment else segment) or "image"
    return f"{stem}-{hashlib.sha1(url.encode('utf-8')).hexdigest()[:10]}{_EXTENSIONS.get(image_format, '.img')}"


def _subfolder(row: UrlRow) -> str:
    parts = [safe_part(part) for part in re.split(r"[/\\]+", row.folder or row.label or "")]
    return "/".join(part for part in parts if part)


# ---- the record -----------------------------------------------------------------------------------------------

class DownloadLog:
    """Every URL's latest outcome, in the workspace (`downloads.sqlite`), written as each one ends."""

    def __init__(self, workspace_root):
        from engine._sqlite import connect
        self.path = Path(workspace_root) / LOG_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.conn = connect(self.path)
        self.conn.execute("CREATE TABLE IF NOT EXISTS urls (url TEXT PRIMARY KEY, status TEXT NOT NULL, path TEXT, "
                          "reason TEXT, sha1 TEXT, bytes INTEGER, label TEXT, permanent INTEGER, updated REAL)")

    def known(self) -> dict[str, dict]:
        cursor = self.conn.execute("SELECT url, status, path, reason, sha1, bytes, label, permanent FROM urls")
        keys = [column[0] for column in cursor.description]
        return {row[0]: dict(zip(keys, row)) for row in cursor}

    def record(self, outcome: Outcome, sha1: str | None = None, permanent: bool = False) -> None:
        with self._lock:
            self.conn.execute("INSERT OR REPLACE INTO urls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              (outcome.url, outcome.status, outcome.path, outcome.reason, sha1, outcome.bytes,
                               outcome.label, int(permanent), time.time()))

    def close(self) -> None:
        self.conn.close()


def source_urls(workspace_root) -> dict[str, str]:
    """Saved file (relative to the folder) -> the URL it was downloaded from; {} when nothing was downloaded."""
    path = Path(workspace_root) / LOG_NAME
    if not path.is_file():
        return {}
    import sqlite3
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT path, url FROM urls WHERE status = ? AND path IS NOT NULL", (SAVED,)))
    except sqlite3.Error:
        return {}
    finally:
        conn.close()


# ---- fetching -------------------------------------------------------------------------------------------------

class _Run:
    """One call of `download`: the shared client, the limits, and what is saved so far (by content, by bytes)."""

    def __init__(self, folder: Path, limits: Limits, log: DownloadLog, known: dict[str, dict],
                 stop: Callable[[], bool] | None):
        import httpx
        self.folder, self.limits, self.log, self.stop = folder, limits, log, stop
        self.client = httpx.Client(follow_redirects=True, max_redirects=limits.max_redirects,
                                   timeout=httpx.Timeout(limits.timeout),
                                   headers={"User-Agent": USER_AGENT, "Accept": "image/*,*/*;q=0.5"},
                                   limits=httpx.Limits(max_connections=max(limits.workers, 1)))
        self.lock = threading.Lock()
        self.by_sha1 = {entry["sha1"]: entry["path"] for entry in known.values()
                        if entry["status"] == SAVED and entry["sha1"] and entry["path"]}
        self.total = 0

    def one(self, row: UrlRow) -> Outcome:
        outcome = Outcome(row.url, row.where, FAILED, label=row.label)
        scheme = urlsplit(row.url).scheme.lower()
        if scheme not in ("http", "https"):
            outcome.reason = f"not an http(s) URL: {row.url[:200]!r}"
            self.log.record(outcome, permanent=True)
            return outcome
        if self.stop is not None and self.stop():
            return Outcome(row.url, row.where, NOT_TRIED, reason="stopped", label=row.label)
        with self.lock:
            if self.limits.total_bytes is not None and self.total >= self.limits.total_bytes:
                return Outcome(row.url, row.where, NOT_TRIED, label=row.label,
                               reason=f"the total limit of {self.limits.total_bytes:,} bytes was reached")
        try:
            data = self._fetch(row.url, outcome)
            image_format = _image_format(data, row.url)
        except _Permanent as err:
            outcome.reason = str(err)
            self.log.record(outcome, permanent=True)
            return outcome
        except _Transient as err:
            outcome.reason = f"{err} (after {outcome.attempts} tries)"
            self.log.record(outcome, permanent=False)
            return outcome
        digest = hashlib.sha1(data).hexdigest()
        outcome.bytes = len(data)
        with self.lock:
            earlier = self.by_sha1.get(digest)
            if earlier is None:
                relative = "/".join(part for part in (_subfolder(row), file_name(row.url, image_format)) if part)
                self.by_sha1[digest] = relative
                self.total += len(data)
        if earlier is not None:
            outcome.status, outcome.path, outcome.reason = DUPLICATE, earlier, f"the same bytes as {earlier}"
            self.log.record(outcome, digest, permanent=True)
            return outcome
        target = self.folder / relative
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(target) as f:
                f.write(data)
        except OSError as err:
            with self.lock:
                self.by_sha1.pop(digest, None)
            outcome.reason = f"cannot write {target}: {err}"
            self.log.record(outcome, permanent=False)
            return outcome
        outcome.status, outcome.path = SAVED, relative
        self.log.record(outcome, digest)
        return outcome

    def _fetch(self, url: str, outcome: Outcome) -> bytes:
        limits = self.limits
        for attempt in range(limits.retries + 1):
            outcome.attempts = attempt + 1
            try:
                return self._get(url)
            except _Transient as err:
                if attempt == limits.retries or (self.stop is not None and self.stop()):
                    raise
                wait = limits.backoff * 2 ** attempt * random.uniform(0.8, 1.2)
                time.sleep(min(max(wait, err.wait or 0.0), 60.0))
        raise AssertionError("unreachable")

    def _get(self, url: str) -> bytes:
        import httpx
        limits = self.limits
        started = time.monotonic()
        try:
            with self.client.stream("GET", url) as response:
                if response.status_code >= 400:
                    reason = f"HTTP {response.status_code} {response.reason_phrase}".strip()
                    if response.status_code == 429 or response.status_code >= 500:
                        raise _Transient(reason, _retry_after(response.headers.get("Retry-After")))
                    raise _Permanent(reason)
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > limits.max_bytes:
                    raise _Permanent(f"too large: {int(declared):,} bytes (the limit is {limits.max_bytes:,})")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limits.max_bytes:
                        raise _Permanent(f"too large: more than {limits.max_bytes:,} bytes")
                    if time.monotonic() - started > limits.deadline:
                        raise _Transient(f"timed out: not finished after {limits.deadline:g} s")
                return bytes(body)
        except httpx.TooManyRedirects:
            raise _Permanent(f"too many redirects (more than {limits.max_redirects})") from None
        except httpx.TimeoutException:
            raise _Transient(f"timed out (no answer within {limits.timeout:g} s)") from None
        except httpx.InvalidURL as err:
            raise _Permanent(f"not a valid URL: {err}") from None
        except (httpx.TransportError, httpx.DecodingError) as err:
            raise _Transient(f"connection failed: {type(err).__name__}: {err}") from None

    def close(self) -> None:
        self.client.close()


def _retry_after(value: str | None) -> float | None:
    return float(value) if value and value.strip().isdigit() else None


def _image_format(data: bytes, url: str) -> str:
    """The format `data` decodes as (the engine's reader decides), or _Permanent with the reader's reason."""
    from PIL import Image

    from engine.data import decode_image
    try:
        with _DECODING:
            decode_image(data, url)
        with Image.open(io.BytesIO(data)) as image:
            return image.format or ""
    except ImageReadError as err:
        raise _Permanent(f"not an image: {err.reason}") from None


# ---- the whole list -------------------------------------------------------------------------------------------

def download(rows: Iterable[UrlRow], folder, *, workspace=None, limits: Limits | None = None,
             retry_failed: bool = False, progress: Callable[[Outcome], None] | None = None,
             stop: Callable[[], bool] | None = None) -> DownloadReport:
    """Download `rows` into `folder`; every URL ends in the report, in the order of `rows`.

    URLs an earlier run decided (saved and still there, duplicates, permanent failures; with `retry_failed`
    only the first two) are not fetched again. `progress(outcome)` hears of each URL as it ends; `stop()` True
    leaves the URLs not yet started untried.
    """
    from engine import Workspace
    limits = limits or Limits()
    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    log = DownloadLog(Workspace(folder, workspace).root)
    known = log.known()
    run = _Run(folder, limits, log, known, stop)
    outcomes: list[Outcome | None] = []
    todo: list[tuple[int, UrlRow]] = []
    seen: dict[str, str] = {}
    for row in rows:
        index = len(outcomes)
        decided = _decided(row, known.get(row.url), folder, retry_failed)
        if row.url in seen:
            decided = Outcome(row.url, row.where, DUPLICATE, reason=f"the same URL as {seen[row.url]}", label=row.label)
        seen.setdefault(row.url, row.where)
        outcomes.append(decided)
        if decided is None:
            todo.append((index, row))
        elif progress is not None:
            progress(decided)
    try:
        with ThreadPoolExecutor(max_workers=max(1, limits.workers), thread_name_prefix="download") as pool:
            futures = {pool.submit(run.one, row): index for index, row in todo}
            for future in as_completed(futures):
                outcomes[futures[future]] = outcome = future.result()
                if progress is not None:
                    progress(outcome)
    finally:
        run.close()
        log.close()
    return DownloadReport([outcome for outcome in outcomes if outcome is not None])


def _decided(row: UrlRow, entry: dict | None, folder: Path, retry_failed: bool) -> Outcome | None:
    """The outcome an earlier run already gave `row`, or None when it is to be fetched (again)."""
    if entry is None:
        return None
    status = entry["status"]
    if status == SAVED and entry["path"] and (folder / entry["path"]).is_file():
        return Outcome(row.url, row.where, SAVED, entry["path"], label=row.label, bytes=entry["bytes"] or 0,
                       resumed=True)
    if status == DUPLICATE:
        return Outcome(row.url, row.where, DUPLICATE, entry["path"], entry["reason"], row.label, resumed=True)
    if status == FAILED and entry["permanent"] and not retry_failed:
        return Outcome(row.url, row.where, FAILED, reason=entry["reason"], label=row.label, resumed=True)
    return None
