"""`panel serve apps/label.py --args FOLDER`: the labeler app on FOLDER (default: the built-in demo)."""
import sys

from labeler.ui.app import LabelApp

LabelApp(sys.argv[1] if len(sys.argv) > 1 else None).servable(title="labeler")
