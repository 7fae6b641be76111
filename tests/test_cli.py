import json

import pytest

from labeler.cli import main
from _helpers import write_image


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def salted(image_folder):
    (image_folder / "zero.jpg").write_bytes(b"")
    (image_folder / "text.png").write_text("not an image")
    return image_folder


def test_embed_json_reports_counts_skipped_files_and_layers(salted, capsys):
    code, out, _ = _run(capsys, "embed", str(salted), "--size", "32", "--workers", "0", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["embedded"] == 12 and result["cached"] == 0
    assert {s["path"] for s in result["skipped"]} == {"zero.jpg", "text.png"}
    assert result["layers"] == ["features.3", "features.6", "features.10", "features.13", "features.18"]
    code, out, _ = _run(capsys, "embed", str(salted), "--size", "32", "--json")
    again = json.loads(out)
    assert (again["embedded"], again["cached"], len(again["skipped"])) == (0, 12, 2)


def test_similar_json_ranks_a_near_copy_first_with_paths_relative_to_the_folder(image_folder, capsys):
    from PIL import Image
    source = image_folder / "a" / "img_04.png"
    Image.open(source).resize((50, 42)).save(image_folder / "b" / "copy_of_4.jpg", quality=80)
    code, out, _ = _run(capsys, "similar", str(image_folder), "--seed", "a/img_04.png", "-k", "3", "--layer", "features.6",
                        "--size", "64", "--workers", "0", "--json")
    assert code == 0
    results = json.loads(out)["results"]
    assert results[0]["path"] == "b/copy_of_4.jpg"
    assert len(results) == 3 and all("a/img_04.png" != r["path"] for r in results)
    assert results[0]["score"] >= results[1]["score"]


def test_project_writes_one_row_per_embedded_image(image_folder, tmp_path, capsys):
    out_csv = tmp_path / "coords.csv"
    code, out, _ = _run(capsys, "project", str(image_folder), "--method", "pca", "--layer", "features.6",
                        "--size", "32", "--workers", "0", "--out", str(out_csv))
    assert code == 0
    lines = out_csv.read_text().splitlines()
    assert lines[0] == "image_name,x,y" and len(lines) == 13


def test_bad_input_gives_a_message_not_a_traceback(tmp_path, capsys):
    code, _, err = _run(capsys, "embed", str(tmp_path / "nowhere"), "--json")
    assert code == 2 and "nowhere" in err and "not a folder" in err and "Traceback" not in err
    folder = tmp_path / "imgs"
    write_image(folder / "x.png", 1)
    code, _, err = _run(capsys, "similar", str(folder), "--seed", "missing.png", "--size", "32")
    assert code == 2 and "missing.png: not an image of" in err
    code, _, err = _run(capsys, "project", str(folder), "--method", "tsne", "--size", "32")
    assert code == 2 and "Unknown projection 'tsne'" in err
