"""Labels survive a killed process and two processes labeling at once.

A child process streams label actions and prints one flushed acknowledgement line after each
committed action; the parent kills it with SIGKILL at random moments (seeded), reopens the
store and checks that every acknowledged action is there and the database is intact.
"""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from labeler._changes import Changes
from labeler.store import LabelStore

ROOT = Path(__file__).resolve().parents[1]
N_ACTIONS = 1000
N_ITEMS = 200
LABELS = ["cat", "dog", "bird", "fish", "=formula"]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

# The child: performs the planned actions from index `start`, acknowledging each after its commit.
CHILD = """
import json, sys
from labeler.store import LabelStore
db, plan, start = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3])
store = LabelStore(db, actor="child")
for index in range(start, len(plan)):
    kind, *args = plan[index]
    if kind in ("undo", "redo"):
        getattr(store, kind)(actor="child")
    else:
        getattr(store, kind)(*args)
    print(f"ack {index}", flush=True)
"""

# Two children labeling the same store at once, one item per transaction, starting together:
# each says it is ready (store open) by creating a file, then waits for the parent's go file.
WRITER = """
import os, sys, time
from pathlib import Path
from labeler.store import LabelStore
db, actor, label, first, last, go, ready = sys.argv[1:8]
store = LabelStore(db, actor=actor)
Path(ready).touch()
while not os.path.exists(go):
    time.sleep(0.001)
for item in range(int(first), int(last)):
    store.assign([item], label)
print("done", flush=True)
"""


def plan_actions(seed: int):
    """Actions that each change something (so each bumps the store version by one) and the
    expected (labels, excluded) state after every prefix of them."""
    rng = random.Random(seed)
    labels, excluded = {}, set()
    undo, redo = [], []
    actions, states = [], [({}, frozenset())]
    for _ in range(N_ACTIONS):
        roll = rng.random()
        state = (dict(labels), frozenset(excluded))
        if roll < 0.1 and undo:
            redo.append(state)
            labels, excluded = dict(undo[-1][0]), set(undo.pop()[1])
            actions.append(["undo"])
        elif roll < 0.15 and redo:
            undo.append(state)
            labels, excluded = dict(redo[-1][0]), set(redo.pop()[1])
            actions.append(["redo"])
        else:
            undo.append(state)
            redo.clear()
            actions.append(_change(rng, roll, labels, excluded))
        states.append((dict(labels), frozenset(excluded)))
    return actions, states


def _change(rng, roll, labels, excluded):
    if roll < 0.25 and labels:
        items = rng.sample(sorted(labels), min(len(labels), rng.randint(1, 3)))
        for item in items:
            del labels[item]
        return ["unassign", items]
    if roll < 0.35 and len(excluded) < N_ITEMS:
        items = rng.sample(sorted(set(range(N_ITEMS)) - excluded), 1)
        excluded.update(items)
        return ["exclude", items, "durability"]
    if roll < 0.4 and excluded:
        items = rng.sample(sorted(excluded), 1)
        excluded.difference_update(items)
        return ["restore", items]
    label = rng.choice([name for name in LABELS if list(labels.values()).count(name) < N_ITEMS])
    candidates = [i for i in range(N_ITEMS) if labels.get(i) != label]
    items = rng.sample(candidates, min(len(candidates), 150 if roll > 0.97 else rng.randint(1, 4)))
    labels.update(dict.fromkeys(items, label))
    return ["assign", items, label]


def stored_state(db):
    with LabelStore(db, actor="checker") as store:
        table = store.assignments()
        return (dict(zip(table["item_id"].tolist(), table["label"].tolist())), frozenset(store.excluded()),
                store.version)


def integrity(db) -> str:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def child_env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def test_every_acknowledged_action_survives_sigkill_at_random_moments(tmp_path):
    actions, states = plan_actions(seed=11)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(actions))
    db = tmp_path / "labels.sqlite"
    rng = random.Random(5)
    done, kills, acks_checked = 0, 0, 0
    while done < N_ACTIONS:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(plan), str(done)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=child_env())
        last_ack = done - 1
        for _ in range(rng.randint(1, 60)):
            line = child.stdout.readline()
            if not line:
                break
            last_ack = int(line.split()[1])
        time.sleep(rng.random() * 0.003)
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate()
        assert child.returncode in (0, -signal.SIGKILL), err
        kills += child.returncode == -signal.SIGKILL
        labels, excluded, version = stored_state(db)
        assert version >= last_ack + 1, f"acknowledged action {last_ack} is lost (store has {version} actions)"
        assert (labels, excluded) == states[version]
        assert integrity(db) == "ok"
        acks_checked += last_ack + 1 - done
        done = version
    assert kills >= 20 and acks_checked > 0
    print(f"\n{kills} SIGKILLs, {acks_checked} acknowledged actions checked, all {N_ACTIONS} actions present")


@pytest.mark.parametrize("multi_label", [True, False], ids=["multi", "single"])
def test_two_processes_labeling_at_once_lose_no_update_and_never_see_a_lock(tmp_path, multi_label):
    db = tmp_path / "labels.sqlite"
    with LabelStore(db) as store:
        store.set_multi_label(multi_label)
    go = tmp_path / "go"
    spec = (("alice", "a", "0", "200"), ("bob", "b", "100", "300"))
    ready = [tmp_path / f"ready-{actor}" for actor, *_ in spec]
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), actor, label, first, last, str(go), str(flag)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
               for (actor, label, first, last), flag in zip(spec, ready)]
    wait_until_ready(writers, ready, timeout=120)   # both have imported and opened the store
    go.touch()
    outputs = [writer.communicate(timeout=120) for writer in writers]
    for writer, (out, err) in zip(writers, outputs):
        assert writer.returncode == 0 and out.strip() == "done", err
        assert "locked" not in err.lower()
    with LabelStore(db) as store:
        table = store.assignments()
        events = store.history(limit=1000)
    assert len(events) == 400
    got = table.groupby("item_id")["label"].apply(sorted).to_dict()
    if multi_label:
        expected = {item: ["a"] * (item < 200) + ["b"] * (item >= 100) for item in range(300)}
    else:
        expected = _latest_label_per_item(db)
    assert got == expected


def wait_until_ready(children, flags, timeout):
    """Return once every child has created its flag file; fail with its stderr if one exits first."""
    deadline = time.monotonic() + timeout
    while not all(flag.exists() for flag in flags):
        for child in children:
            if child.poll() is not None:
                raise AssertionError(f"a writer exited before opening the store: {child.communicate()[1]}")
        if time.monotonic() > deadline:
            for child in children:
                child.kill()
            raise AssertionError(f"writers not ready after {timeout}s")
        time.sleep(0.01)


def _latest_label_per_item(db):
    """Single-label: each item carries the label of the last event that touched it."""
    latest = {}
    with closing(sqlite3.connect(db)) as conn:
        names = dict(conn.execute("SELECT id, name FROM label_defs"))
        for payload, in conn.execute("SELECT payload FROM events ORDER BY id"):
            for item, _, rows in Changes.decode(payload).assign:
                latest[item] = [names[row[0]] for row in rows]
    return latest
