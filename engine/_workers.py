"""How many decoding processes run beside the network, and how they start.

Shared by `engine.activations` (features), `engine.embedding` (which decides what to compute)
and `labeler.thumbs` (thumbnails); it sits apart so that none of them imports another for it.
"""
from __future__ import annotations

import multiprocessing
import os
import threading


def default_workers() -> int:
    """Decoding processes beside the one running the network: one core is kept for the network."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def worker_start_method() -> str:
    """How decoding processes start: fork from a single-threaded process (a script or the CLI: quick,
    and no `__main__` guard needed); spawn from one with threads (the app's server), where a forked
    child can deadlock on a lock some other thread held."""
    single = threading.active_count() == 1
    return "fork" if single and "fork" in multiprocessing.get_all_start_methods() else "spawn"
