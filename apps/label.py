"""`panel serve apps/label.py --address 127.0.0.1 --args FOLDER`: the labeler app on FOLDER (default: the demo).

`panel serve` listens on every network interface unless `--address` says otherwise, unlike `labeler serve`;
its sharing options (`--basic-auth`, `--oauth-provider`, `--allow-websocket-origin`) are Panel's own.
See SECURITY.md.
"""
import sys

from labeler.ui.app import LabelApp

LabelApp(sys.argv[1] if len(sys.argv) > 1 else None).servable(title="labeler")
