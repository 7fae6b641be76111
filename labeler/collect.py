"""`labeler download` and `labeler verify`: the folder of images, before labeling (`labeler.download`,
`labeler.verify`)."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from engine.errors import InputError

EXAMPLES = """examples:
  labeler download urls.txt photos/                 # one URL a line
  labeler download urls.csv photos/ --json          # url,label,folder columns; a report per URL on stdout
  labeler download urls.txt photos/                 # again: finishes what was left, fetches nothing twice
"""


def add_commands(sub, actor_option) -> None:
    text = ("download images from a list of URLs into FOLDER: in parallel, with timeouts, retries and size limits; "
            "only files that decode as images are kept, exact duplicates once; re-running resumes")
    cmd = sub.add_parser("download", help=text, description=text, epilog=EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    cmd.add_argument("urls", metavar="URLS", help="a text file of URLs (one a line; # comments) or a CSV with a url "
                                                  "column and optional label and folder columns")
    cmd.add_argument("into", metavar="FOLDER", help="where the images go (made if missing); a row's folder (or "
                                                    "label) column names a sub-folder")
    cmd.add_argument("--workspace", help="where the record of each URL and the labels go (default FOLDER/.labeler)")
    limits = cmd.add_argument_group("limits")
    limits.add_argument("--workers", type=int, default=8, help="downloads at once (default %(default)s)")
    limits.add_argument("--timeout", type=float, default=20.0,
                        help="seconds to connect, and between two reads (default %(default)s)")
    limits.add_argument("--deadline", type=float, default=120.0,
                        help="seconds for one whole download (default %(default)s)")
    limits.add_argument("--retries", type=int, default=3,
                        help="further tries after a timeout, a failed connection, 429 or 5xx (default %(default)s)")
    limits.add_argument("--max-size", type=_size, default="20MB", metavar="SIZE",
                        help="largest file, e.g. 20MB, 500kB (default 20MB)")
    limits.add_argument("--max-total", type=_size, default=None, metavar="SIZE",
                        help="stop starting downloads once this much is saved, e.g. 2GB (default: no limit)")
    limits.add_argument("--max-redirects", type=int, default=5, help="redirects followed for one URL (default %(default)s)")
    cmd.add_argument("--retry-failed", action="store_true",
                     help="also try again the URLs an earlier run found permanently failed (404, not an image)")
    cmd.add_argument("--json", action="store_true", help="the report, every URL's outcome, as JSON on stdout")
    actor_option(cmd)
    cmd.set_defaults(run=run_download)

    text = ("list every image file of FOLDER that cannot be read, or looks wrong (tiny, extreme aspect ratio, almost "
            "blank, greyscale among colour, an exact duplicate), with the reason; --quarantine moves them aside")
    cmd = sub.add_parser("verify", help=text, description=text)
    cmd.add_argument("folder", nargs="?", metavar="FOLDER",
                     help="the folder of images to check, its workspace aside (default: the built-in demo)")
    cmd.add_argument("--quarantine", metavar="DIR", help="move the files found to DIR (their paths kept below it); "
                                                         "nothing is ever deleted")
    cmd.add_argument("--unreadable-only", action="store_true", help="only the files that cannot be read")
    cmd.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    cmd.set_defaults(run=run_verify)


def _size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: give e.g. 20MB, 500kB or 1048576")
    unit = (match.group(2) or "").lower().rstrip("b").rstrip("i")
    return int(float(match.group(1)) * 1024 ** " kmgt".index(unit or " "))


def run_download(args) -> int:
    from tqdm import tqdm

    from .download import FAILED, Limits, download, read_urls
    rows = read_urls(args.urls)
    if not rows:
        raise InputError(f"The URL list {args.urls} holds no URL.")
    limits = Limits(timeout=args.timeout, deadline=args.deadline, retries=args.retries, max_bytes=args.max_size,
                    total_bytes=args.max_total, max_redirects=args.max_redirects, workers=args.workers)
    with tqdm(total=len(rows), desc="downloading", unit="url", file=sys.stderr, disable=None, leave=False) as bar:
        report = download(rows, args.into, workspace=args.workspace, limits=limits, retry_failed=args.retry_failed,
                          progress=lambda outcome: bar.update(1))
    labeled = None
    if any(outcome.label for outcome in report.outcomes):
        from .project import Project
        with Project(args.into, args.workspace, actor=args.actor) as project:
            labeled = label_downloads(project, report, Path(args.urls).name)
    out = report.as_json()
    if labeled is not None:
        out["labeled"] = {"images": labeled.assigned, "labels": labeled.labels, "conflicts": labeled.conflicts}
    print(json.dumps(out) if args.json else _download_text(out))
    return 1 if report.counts.get(FAILED) else 0


def label_downloads(project, report, source: str):
    """Give the saved (or already present, duplicate) images of rows with a label that label, as one undoable
    import event; returns the import's report (`labeler.io.assign_collected`)."""
    from ._files import ImportReport
    from .download import DUPLICATE, SAVED
    from .io import assign_collected
    collected: dict[str, list[str]] = {}
    for outcome in report.outcomes:
        if outcome.label and outcome.path and outcome.status in (SAVED, DUPLICATE):
            collected.setdefault(outcome.path, []).append(outcome.label)
    imported = ImportReport(source=source, rows=len(collected))
    if collected:
        assign_collected(project, collected, imported, f"labels of the URL list {source}")
    return imported


def _download_text(out: dict) -> str:
    counts = ", ".join(f"{status} {n:,}" for status, n in out["counts"].items())
    earlier = sum(url["resumed"] for url in out["urls"])
    lines = [f"{counts} ({out['fetched_now']:,} fetched now" + (f", {earlier:,} decided by an earlier run)" if earlier
                                                                else ")")]
    for url in out["urls"]:
        if url["status"] not in ("saved",):
            lines.append(f"  {url['status']}: {url['url']} ({url['where']}): {url['reason']}")
    if "labeled" in out:
        lines.append(f"labeled {out['labeled']['images']:,} images from the list's label column")
    return "\n".join(lines)


def run_verify(args) -> int:
    from tqdm import tqdm

    from engine.demo import demo_folder

    from .verify import quarantine, verify_folder
    folder = Path(args.folder) if args.folder else demo_folder()
    with tqdm(desc="checking", unit="img", file=sys.stderr, disable=None, leave=False) as bar:
        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)
        checked, findings = verify_folder(folder, unreadable_only=args.unreadable_only, progress=progress)
    if args.quarantine and findings:
        quarantine(folder, findings, args.quarantine)
    if args.json:
        print(json.dumps({"checked": checked, "found": [finding.to_json() for finding in findings]}))
    else:
        lines = [f"{checked:,} image files checked; {len(findings):,} "
                 f"{'cannot be read' if args.unreadable_only else 'cannot be read or look wrong'}"]
        for finding in findings:
            moved = f" -> moved to {finding.moved_to}" if finding.moved_to else ""
            lines.append(f"  {finding.path}: {finding.reason}{moved}")
        print("\n".join(lines))
    return 1 if findings else 0
