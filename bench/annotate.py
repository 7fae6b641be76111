"""A simulated annotator: how many of the app's actions it takes to label a folder, beside two baselines.

The entry script of the package `bench/annotate/` (its docstring describes the policies). Python puts this
script's folder first on `sys.path`, and there the package directory `annotate/` takes precedence over this
file, so `import annotate` below imports the package, not this script.

    .venv/bin/python bench/annotate.py FOLDER [--labels CSV | --faces-direction KEYPOINTS] [--json] [--seed N]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # engine/ and labeler/ without an install
import annotate  # noqa: E402

if __name__ == "__main__":
    sys.exit(annotate.main())
