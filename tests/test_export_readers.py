"""Each export read back by the client people use it with: pandas, fastai, torchvision, Hugging Face datasets.

One small project of generated images: two folders holding files of the same names, two labels,
one image relabeled from cat to dog, one excluded, one unlabeled. Every label a reader gets is
checked against the label store. fastai and datasets run in a subprocess each: fastai patches
torch's classes when imported, and datasets must start offline with its cache in tmp_path.
"""
import json
import os
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labeler.cli import main
from labeler.io import MAPPING_FILE, export_hf_metadata
from labeler.project import Project
from _helpers import write_image

RELABELED = "day1/0002.png"    # labeled cat, then dog
EXCLUDED = "day2/0005.png"     # labeled dog, then excluded: left out of every export
UNLABELED = "day2/0006.png"


@pytest.fixture
def pets(tmp_path) -> Path:
    """day1/000{1..6}.png and day2/000{1..6}.png: cat 1-3, dog 4-6, with one relabel, one exclusion, one unlabeled."""
    folder = tmp_path / "pets"
    for day in (1, 2):
        for number in range(1, 7):
            write_image(folder / f"day{day}" / f"{number:04d}.png", seed=10 * day + number)
    with Project(folder) as project:
        names = [item.path for item in project.items]
        project.store.assign(project.ids_for([n for n in names if int(n[-6:-4]) <= 3]), "cat")
        project.store.assign(project.ids_for([n for n in names if 4 <= int(n[-6:-4]) and n != UNLABELED]), "dog")
        project.store.assign(project.ids_for([RELABELED]), "dog")
        project.store.exclude(project.ids_for([EXCLUDED]))
    return folder


def store_labels(folder: Path) -> dict[str, str]:
    """image_name -> label of what an export must hold: labeled, not excluded, not missing."""
    with Project(folder) as project:
        table = project.labels
    kept = table[~table["excluded"] & ~table["missing"]]
    labels = dict(zip(kept["image_name"], kept["label"]))
    assert labels[RELABELED] == "dog" and EXCLUDED not in labels and UNLABELED not in labels and len(labels) == 10
    return labels


def export(folder: Path, fmt: str, out: Path, *extra) -> Path:
    assert main(["export", str(folder), "--format", fmt, "--out", str(out), *extra]) == 0
    return out


def originals(tree: Path) -> dict[str, str]:
    """Exported file (relative to the tree) -> original image name, from the tree's labels.csv."""
    mapping = pd.read_csv(tree / MAPPING_FILE)
    return dict(zip(mapping["file_name"], mapping["image_name"]))


def run_reader(script: str, *args, tmp_path: Path) -> dict:
    """Run `script` (which prints one JSON object) in a fresh, offline Python; return that object."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"),
           "HF_DATASETS_CACHE": str(tmp_path / "hf-cache")}
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


FASTAI_LABELS = """
import json, sys
from pathlib import Path

def labels(dls, name_of):
    found = {}
    for ds in (dls.train_ds, dls.valid_ds):
        for index in range(len(ds)):
            _, category = ds[index]
            found[name_of(ds, index)] = dls.vocab[int(category)]
    return found
"""


# ---- csv ------------------------------------------------------------------------------------

def test_csv_export_reads_back_in_pandas(pets, tmp_path):
    out = export(pets, "csv", tmp_path / "labels.csv")
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["image_name", "tags"]
    assert dict(zip(frame["image_name"], frame["tags"])) == store_labels(pets)


@pytest.mark.slow
def test_csv_export_reads_back_in_fastai_from_csv(pets, tmp_path):
    pytest.importorskip("fastai")
    out = export(pets, "csv", tmp_path / "labels.csv")
    script = FASTAI_LABELS + """
from fastai.vision.all import ImageDataLoaders
folder, csv = sys.argv[1:3]
dls = ImageDataLoaders.from_csv(folder, csv_fname=csv, fn_col=0, label_col=1, valid_pct=0.25, seed=0, bs=4)
print(json.dumps(labels(dls, lambda ds, i: ds.items.iloc[i, 0])))
"""
    assert run_reader(script, pets, out, tmp_path=tmp_path) == store_labels(pets)


# ---- folders --------------------------------------------------------------------------------

def test_folder_export_reads_back_in_torchvision_image_folder(pets, tmp_path):
    from torchvision.datasets import ImageFolder
    tree = export(pets, "folders", tmp_path / "tree")                 # relative links (the default)
    dataset = ImageFolder(str(tree))
    read = {Path(path).resolve().relative_to(pets.resolve()).as_posix(): dataset.classes[index]
            for path, index in dataset.samples}
    assert read == store_labels(pets)
    assert dataset.classes == ["cat", "dog"]                          # labels.csv and the marker are no class
    assert {Path(path).parent.name for path, _ in dataset.samples if Path(path).name == "0002.png"} == {"cat", "dog"}
    assert (tree / "dog" / "0002.png").resolve() == (pets / RELABELED).resolve()


@pytest.mark.slow
def test_folder_export_reads_back_in_fastai_parent_label_and_its_labels_csv_in_from_csv(pets, tmp_path):
    pytest.importorskip("fastai")
    tree = export(pets, "folders", tmp_path / "tree", "--copy")
    script = FASTAI_LABELS + """
from fastai.vision.all import ImageDataLoaders, parent_label
tree = Path(sys.argv[1])
dls = ImageDataLoaders.from_folder(tree, valid_pct=0.25, seed=0, bs=4)
by_folder = labels(dls, lambda ds, i: Path(ds.items[i]).relative_to(tree).as_posix())
assert all(parent_label(tree / name) == label for name, label in by_folder.items())
dls = ImageDataLoaders.from_csv(tree, valid_pct=0.25, seed=0, bs=4)   # OUT/labels.csv, as it is
by_csv = labels(dls, lambda ds, i: ds.items.iloc[i, 0])
print(json.dumps({"folder": by_folder, "csv": by_csv}))
"""
    read = run_reader(script, tree, tmp_path=tmp_path)
    to_original = originals(tree)
    assert sorted(to_original) == sorted(read["folder"]) and "cat/0001-2.png" in to_original
    for reader in ("folder", "csv"):
        assert {to_original[name]: label for name, label in read[reader].items()} == store_labels(pets), reader


# ---- Hugging Face imagefolder ---------------------------------------------------------------

HF_LABELS = """
import json, sys
import datasets
folder = sys.argv[1]
ds = datasets.load_dataset("imagefolder", data_dir=folder, split="train")
column = "labels" if "labels" in ds.features else "label"
feature = ds.features[column]
rows = ds.cast_column("image", datasets.Image(decode=False))
print(json.dumps({"feature": type(feature).__name__, "inner": type(getattr(feature, "feature", None)).__name__,
                  "names": getattr(feature, "names", None), "offline": datasets.config.HF_HUB_OFFLINE,
                  "rows": [[row["image"]["path"], row[column]] for row in rows]}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["--copy", "--link"])
def test_hf_export_loads_offline_with_the_label_as_a_class_label(pets, tmp_path, how):
    pytest.importorskip("datasets")
    out = export(pets, "hf", tmp_path / "hf", how)
    read = run_reader(HF_LABELS, out, tmp_path=tmp_path)
    assert read["offline"] and read["feature"] == "ClassLabel" and read["names"] == ["cat", "dog"]
    to_original = originals(out)
    loaded = {to_original[Path(path).relative_to(out).as_posix()]: read["names"][index]
              for path, index in read["rows"]}
    assert loaded == store_labels(pets) and loaded[RELABELED] == "dog"


@pytest.mark.slow
def test_hf_export_of_a_multi_label_project_loads_a_list_of_labels(tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "scenes"
    for i, name in enumerate(["a/x.png", "b/x.png", "c/y.png"]):
        write_image(folder / name, seed=i)
    with Project(folder, multi_label=True) as project:
        project.store.assign(project.ids_for(["a/x.png", "b/x.png"]), "indoor")
        project.store.assign(project.ids_for(["a/x.png", "c/y.png"]), "cat")
        project.store.unassign(project.ids_for(["c/y.png"]), "cat")     # its only label taken back: left out
        project.store.assign(project.ids_for(["c/y.png"]), "dog")
        expected = dict(zip(project.labels["image_name"], project.labels["labels"]))
    out = export(folder, "hf", tmp_path / "hf")
    read = run_reader(HF_LABELS, out, tmp_path=tmp_path)
    assert read["feature"] == "List" and read["inner"] == "Value"
    to_original = originals(out)
    assert sorted(to_original) == ["x-2.png", "x.png", "y.png"]
    loaded = {to_original[Path(path).relative_to(out).as_posix()]: labels for path, labels in read["rows"]}
    assert loaded == expected == {"a/x.png": ["indoor", "cat"], "b/x.png": ["indoor"], "c/y.png": ["dog"]}


# ---- file names a spreadsheet would run as formulas -----------------------------------------

@pytest.fixture
def formula_names(tmp_path) -> Path:
    """Files whose names start with -, =, @ and +: an export writes them as ./-1.png, so readers find them."""
    folder = tmp_path / "odd"
    for i, name in enumerate(["-1.png", "=2.png", "@3.png", "+4.png", "5.png", "6.png", "7.png", "8.png"]):
        write_image(folder / name, seed=i)
    with Project(folder) as project:
        for name in ("-1.png", "=2.png", "5.png", "6.png"):
            project.store.assign(project.ids_for([name]), "cat")
        for name in ("@3.png", "+4.png", "7.png", "8.png"):
            project.store.assign(project.ids_for([name]), "dog")
    return folder


@pytest.mark.slow
def test_file_names_starting_with_formula_characters_are_found_by_fastai_and_datasets(formula_names, tmp_path):
    pytest.importorskip("fastai")
    pytest.importorskip("datasets")
    out = export(formula_names, "csv", tmp_path / "labels.csv")
    assert "./-1.png" in set(pd.read_csv(out)["image_name"])
    script = FASTAI_LABELS + """
from fastai.vision.all import ImageDataLoaders
folder, csv = sys.argv[1:3]
dls = ImageDataLoaders.from_csv(folder, csv_fname=csv, fn_col=0, label_col=1, valid_pct=0.25, seed=0, bs=2)
print(json.dumps(labels(dls, lambda ds, i: ds.items.iloc[i, 0])))
"""
    by_fastai = run_reader(script, formula_names, out, tmp_path=tmp_path)
    expected = {"-1.png": "cat", "=2.png": "cat", "@3.png": "dog", "+4.png": "dog", "5.png": "cat", "6.png": "cat",
                "7.png": "dog", "8.png": "dog"}
    assert {name.removeprefix("./"): label for name, label in by_fastai.items()} == expected
    with Project(formula_names) as project:
        export_hf_metadata(project, formula_names)
    read = run_reader(HF_LABELS, formula_names, tmp_path=tmp_path)
    assert {Path(path).name: label for path, label in read["rows"]} == expected


# ---- predictions ----------------------------------------------------------------------------

@pytest.mark.slow
def test_predictions_stored_by_predict_export_and_read_back_in_pandas(pets, tmp_path, capsys):
    tiny = ["--backbone", "mobilenet_v2", "--size", "32", "--batch-size", "2", "--freeze-epochs", "1", "--epochs",
            "1", "--lr", "1e-3", "--no-augment"]
    model = tmp_path / "pets.pt"
    assert main(["train", str(pets), *tiny, "--out", str(model)]) == 0
    assert main(["predict", str(model), str(pets), "--store", "--json"]) == 0
    stored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stored"]
    frame = pd.read_csv(export(pets, "predictions", tmp_path / "predictions.csv"), keep_default_na=False)
    with Project(pets) as project:
        assert project.store.predictions()[0] == stored["model_id"] and stored["items"] == 12
    assert list(frame.columns) == ["image_name", "prediction", "confidence", "label", "prob_cat", "prob_dog"]
    assert sorted(frame["image_name"]) == sorted(set(store_labels(pets)) | {UNLABELED})   # excluded left out
    assert dict(zip(frame["image_name"], frame["label"])) == {**store_labels(pets), UNLABELED: ""}
    probs = frame[["prob_cat", "prob_dog"]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert frame["prediction"].tolist() == [["cat", "dog"][k] for k in probs.argmax(axis=1)]


# ---- permissions ----------------------------------------------------------------------------

@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Permission bits of `root` and everything under it that is not a link."""
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    return {path.relative_to(root.parent).as_posix(): stat.S_IMODE(path.lstat().st_mode)
            for path in paths if not path.is_symlink()}


@pytest.mark.parametrize(("mask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_exports_get_the_users_normal_permissions(pets, tmp_path, mask, file_mode, folder_mode):
    from engine._atomic import save_npy
    with Project(pets) as project:
        project.store.set_predictions("m", project.ids_for(["day1/0001.png"]), ["cat", "dog"], [[0.9, 0.1]])
    made = tmp_path / "made"
    made.mkdir()
    with umask(mask):
        outputs = [export(pets, "csv", made / "labels.csv"), export(pets, "predictions", made / "pred.csv"),
                   export(pets, "folders", made / "tree", "--copy"), export(pets, "hf", made / "hf"),
                   export(pets, "folders", made / "links")]
        save_npy(made / "array.npy", np.zeros(3))
    found = {name: mode for out in [*outputs, made / "array.npy"] for name, mode in modes(out).items()}
    assert "tree/cat/0001-2.png" in found and "hf/.labeler-export" in found and "links/labels.csv" in found
    wrong = {name: oct(mode) for name, mode in found.items()
             if mode != (folder_mode if (made / name).is_dir() else file_mode)}
    assert not wrong, f"expected files {oct(file_mode)} and folders {oct(folder_mode)} under umask {oct(mask)}"
