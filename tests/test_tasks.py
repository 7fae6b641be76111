"""Task objects are the one extension point: a fifth task is one class, and no module outside engine/tasks.py
decides anything by a task's name."""
from __future__ import annotations

import ast
import json
import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from engine import metrics
from engine.clean import model_losses
from engine.data import InputError, discover_images
from engine.datablock import RandomSplit, build_data, infer_task, label_from_folder
from engine.errors import LearnerError, ModelError
from engine.learner import Learner, load_exported, task_for
from engine.models import create_model
from engine.tasks import TASKS, ClassifyTask, MultiLabelTask, RegressTask, SegmentTask, Targets, Task, register_task

ROOT = Path(__file__).resolve().parents[1]


class BrightTask(Task):
    """A toy fifth task: is the image bright? One logit, its own encoding, loss, metric and decoding."""

    name = "bright"
    calls: ClassVar[list[str]] = []  # which of its methods the engine called

    @classmethod
    def from_data(cls, data):
        cls.calls.append("from_data")
        return cls()

    @classmethod
    def encode(cls, labeler, targets, folder):
        cls.calls.append("encode")
        return Targets(np.array([[label == "bright"] for label in targets], np.float32), n_out=1)

    @classmethod
    def to_xy(cls, targets, index, sample):
        cls.calls.append("to_xy")
        return super().to_xy(targets, index, sample)

    def loss(self, pred, target, reduction="mean"):
        self.calls.append("loss")
        return F.binary_cross_entropy_with_logits(pred, target, reduction=reduction)

    def activation(self, pred):
        self.calls.append("activation")
        return pred.sigmoid()

    def metrics(self, outputs, targets):
        self.calls.append("metrics")
        return {"accuracy": metrics.accuracy_multi(outputs, targets)}

    def decode(self, output, image_size, labels):
        self.calls.append("decode")
        return {"bright": bool(output[0] > 0.5), "probability": float(output[0])}

    def summary(self, result):
        self.calls.append("summary")
        return {"bright": result["bright"]}

    def encode_one(self, image, label, labels, size):
        self.calls.append("encode_one")
        return torch.tensor([float(label == "bright")])


@pytest.fixture
def bright_task():
    """BrightTask registered for one test, then taken out of the registry again."""
    BrightTask.calls.clear()
    register_task(BrightTask)
    yield BrightTask
    TASKS.pop(BrightTask.name)


def _bright_and_dark(root: Path, n: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        kind = "bright" if i % 2 else "dark"
        low = 170 if kind == "bright" else 0
        (root / kind).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(low, low + 80, size=(32, 32, 3), dtype=np.uint8)).save(root / kind / f"{i:02d}.png")
    return root


def test_a_fifth_task_is_one_registered_class_used_by_data_model_loop_export_and_losses(tmp_path, bright_task):
    folder = _bright_and_dark(tmp_path / "images")
    items = discover_images(folder)
    data = build_data(folder, items, RandomSplit(0.25, seed=0), label_from_folder, task="bright", size=32,
                      batch_size=4, backbone="resnet18", augment=False)
    assert data.task == "bright" and data.n_out == 1
    model = create_model("bright", "resnet18", data.n_out, pretrained=False)
    assert model.config["task"] == "bright" and type(model).__name__ == "BodyHeadModel"   # the classifier builder
    learner = Learner(data, model)
    assert isinstance(learner.task, BrightTask)
    history = learner.fit_one_cycle(2, 1e-3)
    assert "accuracy" in history[-1] and math.isfinite(history[-1]["valid_loss"])

    predictor = load_exported(learner.export(tmp_path / "bright.pt"))
    result = predictor.predict(folder / "bright" / "01.png")
    assert isinstance(predictor.task, BrightTask) and set(result) == {"bright", "probability"}
    assert predictor.task.summary(result) == {"bright": result["bright"]}
    table = model_losses(predictor, folder, items[:4], [label_from_folder(item) for item in items[:4]])
    assert table["loss"].notna().all() and table["predicted"].eq("").all()   # the base rows: loss only
    assert {"from_data", "encode", "to_xy", "loss", "activation", "metrics", "decode", "summary",
            "encode_one"} <= set(BrightTask.calls)


def test_the_cli_trains_and_predicts_a_registered_task(tmp_path, bright_task, capsys):
    from labeler.cli import main
    folder = _bright_and_dark(tmp_path / "images")
    model = tmp_path / "bright.pt"
    assert main(["train", str(folder), "--folders", "--task", "bright", "--backbone", "mobilenet_v2", "--size", "32",
                 "--batch-size", "4", "--freeze-epochs", "1", "--epochs", "1", "--lr", "1e-3", "--out", str(model),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["task"] == "bright"
    assert main(["predict", str(model), str(folder / "bright"), "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out)["predictions"]
    assert len(predictions) == 8 and all(set(row) == {"path", "bright"} for row in predictions)


def test_a_task_is_inferred_only_when_it_claims_the_labels(bright_task):
    assert infer_task(label_from_folder, ["bright", "dark"]) == "classify"   # the toy claims nothing
    assert infer_task(None, [[1.0, 2.0]]) == "regress" and infer_task(None, [["a", "b"]]) == "multilabel"


def test_registering_a_second_task_with_a_taken_name_says_which(bright_task):
    class Other(Task):
        name = "bright"
    with pytest.raises(LearnerError, match="needs a `name` no other task has.*bright"):
        register_task(Other)


def test_a_task_naming_an_unknown_architecture_is_a_model_error(bright_task, monkeypatch):
    monkeypatch.setattr(BrightTask, "architecture", "transformer")
    with pytest.raises(ModelError, match="architecture 'transformer'.*one of: classifier, unet, regressor"):
        create_model("bright", "resnet18", 1, pretrained=False)


def test_task_for_configures_each_task_from_the_data_and_rejects_unknown_options():
    data = type("Data", (), {"task": "regress", "size": 64, "points": 1, "void_code": None, "n_out": 2})
    task = task_for(data, label_smoothing=0.1, loss="l1")       # label smoothing is the classifier's: ignored
    assert isinstance(task, RegressTask) and task.config() == {"size": 64, "loss": "l1", "points": 1}
    with pytest.raises(LearnerError, match=r"Unknown task option\(s\) \['label_smothing'\].*label_smoothing, loss"):
        task_for(data, label_smothing=0.1)


def test_label_store_targets_come_from_the_task():
    names, single, multi = ["cat", "dog"], np.array([1, -1, 0]), np.array([[True, True], [False, False]])
    assert ClassifyTask().targets_from_labels(names, single) == ["dog", None, "cat"]
    assert MultiLabelTask().targets_from_labels(names, single) == [["dog"], None, ["cat"]]
    assert MultiLabelTask().targets_from_labels(names, multi) == [["cat", "dog"], None]
    with pytest.raises(InputError, match="single-label classifier but the labels are multi-label"):
        ClassifyTask().targets_from_labels(names, multi)
    with pytest.raises(InputError, match="Top losses of a segment model need its targets"):
        SegmentTask().targets_from_labels(names, single)


def test_a_multi_label_task_takes_a_single_name_as_one_tag(tmp_path):
    encoded = MultiLabelTask.encode(label_from_folder, ["cat", ["cat", "dog"]], tmp_path)
    assert encoded.classes == ["cat", "dog"] and encoded.values.tolist() == [[1, 0], [1, 1]]
    assert MultiLabelTask().encode_one(None, "dog", ["cat", "dog"], 32).tolist() == [0, 1]


def test_each_task_summarises_its_predictions_for_the_cli():
    assert ClassifyTask().summary({"label": "a", "probabilities": {"a": 0.81234, "b": 0.18766}}) == \
        {"label": "a", "confidence": 0.8123}
    assert MultiLabelTask().summary({"labels": ["a"], "probabilities": {"a": 0.9}}) == {"labels": ["a"]}
    mask = np.array([[0, 0], [0, 1]])
    assert SegmentTask().summary({"mask": mask, "codes": ["sky", "road"]}) == {"classes": {"sky": 0.75, "road": 0.25}}
    assert RegressTask().summary({"points": np.array([[1.234, 5.678]])}) == {"points": [[1.23, 5.68]]}


def test_per_item_losses_match_the_training_loss():
    pred, target = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    task = ClassifyTask(label_smoothing=0.1)
    assert task.item_losses(pred, target).mean().item() == pytest.approx(task.loss(pred, target).item(), rel=1e-6)
    void = SegmentTask(void_code=9)
    masks = torch.full((2, 4, 4), 9)
    masks[0, :2] = 1
    losses = void.item_losses(torch.randn(2, 3, 4, 4), masks)
    assert math.isfinite(losses[0]) and math.isnan(losses[1])
    assert [row[3] for row in void.loss_rows(torch.randn(2, 3, 4, 4), masks, [])] == [None, "only void pixels"]


# ---- no decision by a task's name outside engine/tasks.py

def _name_decisions(source: str, where: str) -> list[str]:
    """Comparisons of a task (or a `.name`) with a task name, and dicts keyed by task names, in `source`."""
    found, names = [], set(TASKS)

    def is_task_name(node) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(map(is_task_name, node.elts))

    def is_text(node) -> bool:
        if isinstance(node, ast.Constant):
            return isinstance(node.value, str)
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(map(is_text, node.elts))

    def mentions_task(node) -> bool:
        return any(isinstance(n, ast.Name) and "task" in n.id or isinstance(n, ast.Attribute) and n.attr == "task"
                   for n in ast.walk(node))

    for node in ast.walk(ast.parse(source, filename=where)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(map(is_task_name, operands)) or (any(map(is_text, operands)) and any(map(mentions_task, operands))):
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Dict) and sum(map(is_task_name, node.keys)) >= 2:
            found.append(f"{where}:{node.lineno}: a dict keyed by task names")
    return found


def test_no_module_but_engine_tasks_decides_by_a_task_name():
    modules = [path for folder in ("engine", "labeler") for path in sorted((ROOT / folder).rglob("*.py"))
               if path != ROOT / "engine" / "tasks.py"]
    found = [hit for path in modules for hit in _name_decisions(path.read_text(), str(path.relative_to(ROOT)))]
    found += [f"{path.relative_to(ROOT)}: 'task =='" for path in modules if "task ==" in path.read_text()]
    assert not found, "per-task decisions belong to the task classes (engine/tasks.py):\n  " + "\n  ".join(found)


def test_the_name_check_sees_the_disguises():
    source = ('if task == "segment": pass\nif data.task in ("classify", "multilabel"): pass\n'
              'if learner.task.name != "regress": pass\nif cfg.name == "mobilenet_v2": pass\n'
              'LOSS = {"classify": 1, "segment": 2}\n')
    assert [hit.split(":")[1] for hit in _name_decisions(source, "probe.py")] == ["1", "2", "3", "5"]


def test_the_soft_dice_loss_weighs_each_class_present_alike_and_skips_void():
    from engine.losses import segment_loss, soft_dice_loss
    from engine.tasks import SegmentTask
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0, 0] = 1                                            # class 1: one pixel of 16; class 2 absent
    target[0, 3, 3] = 9                                            # void
    perfect = F.one_hot(torch.where(target == 9, 0, target), 3).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(perfect, target, ignore_index=9) < 0.01
    # one pixel wrong: of the one-pixel class, a large share of the loss (one class of two, however few its
    # pixels); of the common class (taken for the absent one), a small one. Cross-entropy charges both alike.
    missed, common_missed = perfect.clone(), perfect.clone()
    missed[0, :, 0, 0] = torch.tensor([50.0, 0, 0])
    common_missed[0, :, 1, 1] = torch.tensor([0, 0, 50.0])
    assert soft_dice_loss(missed, target, 9) > 0.2 > 0.05 > soft_dice_loss(common_missed, target, 9)
    assert torch.isclose(F.cross_entropy(missed, target, ignore_index=9),
                         F.cross_entropy(common_missed, target, ignore_index=9))
    # a wrong void pixel costs nothing
    void_wrong = perfect.clone()
    void_wrong[0, :, 3, 3] = torch.tensor([0, 0, 50.0])
    assert torch.isclose(soft_dice_loss(void_wrong, target, 9), soft_dice_loss(perfect, target, 9))
    # the task adds it to the mean, weighted; per-item losses stay cross-entropy alone
    task = SegmentTask(void_code=9, n_classes=3, dice=2.0)
    ce = F.cross_entropy(missed, target, ignore_index=9)
    assert torch.isclose(task.loss(missed, target), ce + 2 * soft_dice_loss(missed, target, 9))
    assert torch.equal(task.loss(missed, target, reduction="none"), segment_loss(missed, target, 9, 0, "none"))
    assert SegmentTask(**task.config()).dice == 2.0
    with pytest.raises(LearnerError, match="0 or more"):
        SegmentTask(dice=-1)


def test_class_weights_follow_the_training_pixels_and_weigh_the_cross_entropy():
    from engine.losses import class_weights, segment_loss
    from engine.tasks import SegmentTask
    # pixels: class 0 60, class 1 30, class 2 10, class 3 none, void (4) 20 and a stray value 9 ignored
    mask = np.array([0] * 60 + [1] * 30 + [2] * 10 + [4] * 20 + [9] * 5).reshape(5, 25)
    median = class_weights([mask[:2], mask[2:]], n_classes=5, void_code=4, mode="median")
    # the median of the shares (0.6, 0.3, 0.1) is 0.3: weights 0.5, 1, 3; the absent class and void weigh 1
    assert median == pytest.approx([0.5, 1.0, 3.0, 1.0, 1.0])
    assert class_weights([mask], 5, 4, "sqrt") == pytest.approx(np.sqrt([0.5, 1.0, 3.0, 1.0, 1.0]), abs=1e-4)
    with pytest.raises(LearnerError, match="median, sqrt"):
        class_weights([mask], 5, 4, "inverse")
    with pytest.raises(LearnerError, match="nothing to weigh"):
        class_weights([np.full((3, 3), 4)], 5, 4, "median")
    # the loss: a miss of the rare class costs its weight, of the common class its weight, void nothing
    target = torch.tensor([[[0, 2, 4]]])
    right = F.one_hot(torch.where(target == 4, 0, target), 5).permute(0, 3, 1, 2).float() * 20
    rare_missed, common_missed = right.clone(), right.clone()
    rare_missed[0, :, 0, 1], common_missed[0, :, 0, 0] = right[0, :, 0, 0], right[0, :, 0, 1]
    per_pixel = [segment_loss(pred, target, 4, reduction="none", weight=median)[0, 0] for pred in
                 (rare_missed, common_missed)]
    assert per_pixel[0][1] == pytest.approx(3.0 * 20, rel=1e-3) and per_pixel[1][0] == pytest.approx(0.5 * 20, rel=1e-3)
    assert per_pixel[0][2] == 0
    task = SegmentTask(void_code=4, n_classes=5, class_weights=median)
    assert torch.isclose(task.loss(rare_missed, target), F.cross_entropy(rare_missed, target, torch.tensor(median),
                                                                          ignore_index=4))
    assert SegmentTask(**task.config()).class_weights == median
    assert SegmentTask(void_code=4, n_classes=5).config()["class_weights"] is None


def test_class_weights_leave_out_a_mask_that_cannot_be_read_as_training_does(tmp_path, caplog):
    from types import SimpleNamespace

    from engine.losses import training_class_weights
    Image.fromarray(np.array([[0, 0, 0, 1]], dtype=np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    paths = [str(tmp_path / name) for name in ("good.png", "broken.png", "missing.png")]
    data = SimpleNamespace(train=SimpleNamespace(dataset=SimpleNamespace(targets=SimpleNamespace(values=paths))),
                           n_out=2, void_code=None)
    assert training_class_weights(data, "median") == pytest.approx([0.5 / 0.75, 0.5 / 0.25], abs=1e-4)
    assert "broken.png" in caplog.text and "missing.png" in caplog.text
