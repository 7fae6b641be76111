"""`labeler predict` at scale and on labeled test sets: batched outputs, the task's metrics as training's validation
computes them, prediction files, and the errors a person sees."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from _helpers import colour_folder, shared_data
from labeler.cli import main
from test_cli_train import tiny_classifier  # noqa: F401  (a fixture: 16 images and a classifier of them)

TINY = ["--backbone", "mobilenet_v2", "--size", "32", "--batch-size", "4", "--freeze-epochs", "1", "--epochs", "0",
        "--lr", "1e-3", "--no-augment"]


class _TinyNet(nn.Module):
    """Mean colour -> two logits: a classifier that runs in microseconds."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(x.mean((2, 3)))


def _train(args: list[str], capsys) -> dict:
    assert main(["train", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _predict(args: list[str], capsys) -> dict:
    assert main(["predict", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_engine_exports_the_predictor_from_its_own_module_and_from_engine_learner():
    import engine
    from engine import learner, predictor
    assert engine.Predictor is learner.Predictor is predictor.Predictor
    assert engine.load_exported is learner.load_exported is predictor.load_exported


@pytest.mark.parametrize("workers", [0, 1])
def test_batched_outputs_equal_one_image_at_a_time_and_leave_unreadable_images_out(tmp_path, workers, caplog):
    from engine.data import load_image
    from engine.predictor import Predictor
    from engine.tasks import ClassifyTask
    folder = colour_folder(tmp_path / "images", n=6, size=24)
    (folder / "red" / "broken.png").write_bytes(b"not a png")
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    predictor = Predictor(_TinyNet(), ClassifyTask(), ["blue", "red"], 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    handled = []
    batched = list(predictor.outputs(folder, paths, batch_size=2, workers=workers, progress=handled.append))
    assert [path for path, _, _ in batched] == [p for p in paths if "broken" not in p]
    assert sum(handled) == len(paths) == 7 and len(handled) == 4
    assert "red/broken.png" in caplog.text
    for path, size, output in batched:
        image = load_image(folder / path)
        alone = predictor.task.activation(predictor.raw_outputs(predictor.preprocess(image)))[0]
        assert size == image.size and torch.allclose(output, alone, atol=1e-6)
        decoded = predictor.task.decode(output, size, predictor.labels)
        assert predictor.predict(folder / path)["label"] == decoded["label"]


def test_the_predictor_feeds_images_as_the_validation_pipeline_does(tmp_path):
    from torchvision import tv_tensors

    from engine.augment import build_transforms
    from engine.predictor import Predictor
    from engine.tasks import ClassifyTask
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8))
    predictor = Predictor(_TinyNet(), ClassifyTask(), ["a", "b"], 24, (0.4, 0.5, 0.6), (0.2, 0.3, 0.4))
    valid = build_transforms(24, train=False, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4))
    expected = valid(tv_tensors.Image(torch.from_numpy(np.array(image)).permute(2, 0, 1)))
    assert torch.equal(predictor.preprocess(image)[0], expected.as_subclass(torch.Tensor))


def test_predict_with_true_labels_prints_the_classifiers_accuracy_and_writes_a_csv(tiny_classifier, tmp_path,
                                                                                   capsys):
    import pandas as pd
    folder, model = tiny_classifier
    truth = tmp_path / "truth.csv"
    truth.write_text("image_name,tags\n" + "".join(f"{p.name},{p.parent.name}\n" for p in folder.glob("*/*.png")))
    out = tmp_path / "preds.csv"
    assert main(["predict", str(model), str(folder), "--labels", str(truth), "--out", str(out), "--workers", "0"]) == 0
    shown = capsys.readouterr().out
    assert "on the 16 images with a true label" in shown and "  accuracy: " in shown and "error_rate" in shown
    table = pd.read_csv(out)
    assert list(table.columns) == ["image_name", "label", "confidence"] and len(table) == 16
    assert set(table["label"]) <= {"red", "blue"} and table["confidence"].between(0.5, 1).all()


def test_predict_only_the_listed_images_and_report_metrics_in_json(tiny_classifier, tmp_path, capsys):
    folder, model = tiny_classifier
    truth = tmp_path / "truth.csv"
    truth.write_text("image_name,tags\nred/001.png,red\nblue/002.png,blue\nred/003.png,red\n")
    listed = tmp_path / "only.txt"
    listed.write_text("001.png\nblue/002.png\n")
    result = _predict([str(model), str(folder), "--only", str(listed), "--labels", str(truth)], capsys)
    assert [row["path"] for row in result["predictions"]] == ["blue/002.png", "red/001.png"]
    assert result["scored"] == 2 and set(result["metrics"]) == {"accuracy", "error_rate"}
    assert result["accuracy"] == result["metrics"]["accuracy"]


@pytest.mark.parametrize("bad, expected", [
    (["--masks", "{tmp}", "--codes", "{codes}"], "is a classify model, but {tmp} holds labels of a segment model"),
    (["--labels", "{tmp}/absent.csv"], "--labels '{tmp}/absent.csv' does not exist"),
    (["--labels", "{tmp}/columns.csv"], "columns.csv' has no column 'image_name'"),
    (["--labels", "{tmp}/unknown.csv"], "label 'green' is not one the model knows (blue, red)"),
    (["--only", "{tmp}/codes.txt"], "names none of the 16 images of the folder"),
])
def test_predict_says_which_file_is_wrong_and_why(tiny_classifier, tmp_path, capsys, bad, expected):
    folder, model = tiny_classifier
    (tmp_path / "codes.txt").write_text("background\nsquare\n")
    (tmp_path / "columns.csv").write_text("file,label\nred/001.png,red\n")
    (tmp_path / "unknown.csv").write_text("image_name,tags\nred/001.png,green\n")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "001.png")
    args = [arg.format(tmp=tmp_path, codes=tmp_path / "codes.txt") for arg in bad]
    assert main(["predict", str(model), str(folder), *args]) == 2
    err = capsys.readouterr().err
    assert expected.format(tmp=tmp_path) in err and "Traceback" not in err


def _square_masks(root, n: int = 12):
    """n images of different sizes, each with a bright square, and its mask (0 background, 1 square, 255 void rim)."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True), masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        width, height = 40 + 4 * (i % 3), 30 + 2 * (i % 4)
        pixels = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
        mask = np.zeros((height, width), np.uint8)
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        pixels[top:top + height // 2, left:left + width // 2] += 150
        mask[top:top + height // 2, left:left + width // 2] = 1
        mask[0] = 255
        Image.fromarray(pixels).save(images / f"img{i:02d}.jpg")
        Image.fromarray(mask).save(masks / f"img{i:02d}_P.png")
    (root / "codes.txt").write_text("background\nsquare\n")
    (root / "valid.txt").write_text("".join(f"img{i:02d}.jpg\n" for i in range(0, n, 3)))
    return images, masks


def _train_and_predict(folder, valid, train_labels: list, predict_labels: list, capsys, settings=TINY,
                       predict_args=()) -> tuple[dict, dict]:
    """Train on `folder` with the images `valid` lists held out, then predict those: (training summary, result)."""
    model = folder.parent / "model.pt"
    trained = _train([str(folder), *train_labels, *settings, "--valid-list", str(valid), "--out", str(model)], capsys)
    result = _predict([str(model), str(folder), *predict_labels, "--only", str(valid), *predict_args], capsys)
    return trained, result


def _labeled_colours(tmp_path, header: str, cell, every: int):
    """(folder, CSV, valid list): 16 colour images, a CSV row `cell(i, path)` for each, every `every`-th valid."""
    folder = colour_folder(tmp_path / "images", n=16, size=32)
    names = sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*.png"))
    labels, valid = tmp_path / "labels.csv", tmp_path / "valid.txt"
    labels.write_text(f"{header}\n" + "".join(f"{p},{cell(i, p)}\n" for i, p in enumerate(names)))
    valid.write_text("\n".join(names[::every]))
    return folder, labels, valid


def test_predict_scores_masks_exactly_as_training_validated_and_writes_them_at_the_image_size(tmp_path, capsys):
    import pandas as pd
    images, masks = _square_masks(tmp_path)
    mask_args = ["--masks", str(masks), "--codes", str(tmp_path / "codes.txt"), "--void", "255",
                 "--mask-suffix", "_P.png"]
    out = tmp_path / "preds.csv"
    trained, result = _train_and_predict(images, tmp_path / "valid.txt",
                                         [*mask_args, "--dice", "1.0", "--class-weights", "median"], mask_args,
                                         capsys, predict_args=["--out", str(out)])
    config = torch.load(images.parent / "model.pt", weights_only=False)["task_config"]
    assert config["dice"] == 1.0
    # the weights come from the training masks' pixels (void left out): the median share over each class's
    valid = set((tmp_path / "valid.txt").read_text().split())
    pixels = np.concatenate([np.asarray(Image.open(mask)).ravel() for mask in sorted(masks.iterdir())
                             if mask.name.replace("_P.png", ".jpg") not in valid])
    shares = np.bincount(pixels[pixels < 2], minlength=2) / (pixels < 2).sum()
    assert config["class_weights"] == pytest.approx(list(np.median(shares) / shares), abs=1e-4)
    assert config["class_weights"][1] > 1 > config["class_weights"][0]     # the square is the rarer class
    assert result["scored"] == trained["valid"] == 4
    for name in ("pixel_accuracy", "mean_iou"):
        assert result["metrics"][name] == pytest.approx(trained["metrics"][name], abs=5e-4)
    table = pd.read_csv(out)
    assert list(table.columns) == ["image_name", "mask"] and len(table) == 4
    for image_name, mask_file in zip(table["image_name"], table["mask"]):
        assert mask_file == f"preds_masks/{image_name[:-4]}_P.png"
        with Image.open(images / image_name) as image, Image.open(tmp_path / mask_file) as mask:
            assert mask.size == image.size and mask.mode == "L"
            assert set(np.unique(np.asarray(mask))) <= {0, 1}


def test_predict_scores_points_as_training_validated(tmp_path, capsys):
    folder, points, valid = _labeled_colours(tmp_path, "image_name,x0,y0,x1,y1",
                                             lambda i, _: f"{3 + i},{5 + i},{7 + i},{9 + i}", every=4)
    out = tmp_path / "points_pred.csv"
    trained, result = _train_and_predict(folder, valid, ["--points", str(points)], ["--points", str(points)], capsys,
                                         predict_args=["--out", str(out)])
    assert result["scored"] == 4 and set(result["metrics"]) == {"point_error_px", "point_error_rel"}
    assert result["metrics"]["point_error_px"] == pytest.approx(trained["metrics"]["point_error_px"], abs=5e-4)
    assert open(out).readline().strip() == "image_name,x0,y0,x1,y1"


def test_predict_scores_a_multi_label_model_with_map_and_f2(tmp_path, capsys):
    folder, tags, valid = _labeled_colours(tmp_path, "image_name,tags",
                                           lambda i, path: path.split("/")[0] + (" even" if i % 2 else ""), every=3)
    trained, result = _train_and_predict(folder, valid, ["--csv", str(tags), "--delimiter", " "],
                                         ["--labels", str(tags)], capsys)   # tags split on spaces by default
    assert {"mAP", "f2"} <= set(result["metrics"])
    for name in ("mAP", "f2"):
        assert result["metrics"][name] == pytest.approx(trained["metrics"][name], abs=5e-4)


@pytest.mark.data
@pytest.mark.slow
def test_camvid_metrics_of_predict_equal_what_training_reported_for_the_validation_images(tmp_path, capsys):
    """A tiny U-Net (size 64, one frozen epoch) on 30 CamVid frames: predict on its 10 validation frames reports
    the pixel accuracy and mean IoU training reported, to 3 decimals."""
    camvid = shared_data("camvid")
    valid_names = (camvid / "valid.txt").read_text().split()[:10]
    train_names = sorted(p.name for p in (camvid / "images").glob("*.jpg") if p.name not in set(valid_names))[:20]
    images = tmp_path / "images"
    images.mkdir()
    for name in train_names + valid_names:        # links, not copies: the data stays in ../shared/data
        (images / name).symlink_to(camvid / "images" / name)
    valid = tmp_path / "valid.txt"
    valid.write_text("\n".join(valid_names) + "\n")
    mask_args = ["--masks", str(camvid / "labels"), "--codes", str(camvid / "codes.txt"), "--void", "11",
                 "--mask-suffix", "_P.png"]
    settings = ["--backbone", "mobilenet_v2", "--size", "64", "--batch-size", "8", "--freeze-epochs", "1",
                "--epochs", "0", "--lr", "1e-3"]
    trained, result = _train_and_predict(images, valid, mask_args, mask_args, capsys, settings=settings)
    assert result["scored"] == trained["valid"] == 10
    for name in ("pixel_accuracy", "mean_iou"):                # the same to 3 decimals (in practice to all 4 shown)
        assert result["metrics"][name] == pytest.approx(trained["metrics"][name], abs=5e-4)


def test_a_segmentation_target_is_the_mask_the_validation_pipeline_makes(tmp_path):
    from torchvision import tv_tensors

    from engine._targets import load_mask
    from engine.augment import build_transforms
    from engine.tasks import SegmentTask
    values = np.random.default_rng(0).integers(0, 3, (37, 53)).astype(np.uint8)
    values[0] = 255
    Image.fromarray(values).save(tmp_path / "mask.png")
    image = Image.new("RGB", (53, 37))
    target = SegmentTask(void_code=255, n_classes=3).encode_one(image, tmp_path / "mask.png", ["a", "b", "c"], 16)
    sample = {"image": tv_tensors.Image(torch.zeros(3, 37, 53, dtype=torch.uint8)),
              "mask": tv_tensors.Mask(torch.from_numpy(load_mask(tmp_path / "mask.png", (53, 37), 3, 255)))}
    validated = build_transforms(16, train=False, mask_fill=255)(sample)["mask"]
    assert torch.equal(target, validated.as_subclass(torch.Tensor).long())
