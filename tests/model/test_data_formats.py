"""Every dataset format ``--data`` takes reads the same objects; bad data fails naming its file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from model.data import DataError, open_dataset, read_source
from tests.support.datasets import (
    generate,
    write_coco_splits,
    write_voc_folder,
    write_yolo,
    yolo_lines,
)

NAMES = ["widget", "gadget"]


def truth_boxes(data) -> dict[str, list[tuple[str, list[float]]]]:
    return {
        truth.name: sorted(
            (NAMES[c], [float(x1), float(y1), float(x2), float(y2)]) for c, x1, y1, x2, y2 in truth.objects
        )
        for truth, _ in data
    }


def read_boxes(dataset) -> dict[str, list[tuple[str, list[float]]]]:
    found = {}
    for k in range(len(dataset)):
        a = dataset.annotation(k)
        found[a.image_id] = sorted(
            (dataset.classes[int(label)], box)
            for label, box in zip(a.labels.tolist(), a.boxes_xyxy.tolist(), strict=True)
        )
    return found


def assert_same(found, expected):
    assert found.keys() == expected.keys()
    for name in expected:
        assert [n for n, _ in found[name]] == [n for n, _ in expected[name]], name
        for (_, got), (_, want) in zip(found[name], expected[name], strict=True):
            torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=2e-3 * 96, rtol=0)


@pytest.fixture(scope="module")
def data():
    return {"train": generate(10, 2, seed=1, negatives=2), "val": generate(4, 2, seed=2, prefix="val")}


def test_yolo_reads_splits_names_and_negatives(tmp_path: Path, data):
    yaml = write_yolo(tmp_path / "yolo", data, NAMES)
    train = open_dataset([yaml], "train")
    assert train.classes == tuple(NAMES) and len(train) == 10
    assert_same(read_boxes(train), truth_boxes(data["train"]))
    assert sum(len(train.annotation(k).labels) == 0 for k in range(10)) == 2  # empty label files
    assert_same(read_boxes(open_dataset([tmp_path / "yolo"], "val")), truth_boxes(data["val"]))  # the folder


def test_yolo_names_as_a_dict_and_polygons(tmp_path: Path, data):
    yaml = write_yolo(tmp_path / "yolo", data, NAMES, names_as_dict=True)
    label = tmp_path / "yolo" / "labels" / "val" / "val000.txt"
    label.write_text("1 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n")  # a polygon: its bounding box is used
    dataset = open_dataset([yaml], "val")
    assert dataset.classes == tuple(NAMES)
    truth = data["val"][0][0]
    a = dataset.annotation(0)
    assert a.labels.tolist() == [1]
    expected = [0.1 * truth.width, 0.2 * truth.height, 0.5 * truth.width, 0.6 * truth.height]
    torch.testing.assert_close(a.boxes_xyxy[0], torch.tensor(expected), atol=1e-3, rtol=0)


def test_coco_splits_and_voc_folder_read_the_same_objects(tmp_path: Path, data):
    coco = write_coco_splits(tmp_path / "coco", data, NAMES)
    assert_same(read_boxes(open_dataset([coco], "val")), truth_boxes(data["val"]))
    assert open_dataset([coco], "train").classes == tuple(NAMES)
    voc = write_voc_folder(tmp_path / "voc", data["train"] + data["val"], NAMES)
    everything = open_dataset([voc], "all")
    assert_same(read_boxes(everything), {**truth_boxes(data["train"]), **truth_boxes(data["val"])})
    assert everything.classes == tuple(sorted(NAMES))


def test_a_source_without_splits_is_split_by_a_fixed_seed(tmp_path: Path, data):
    voc = write_voc_folder(tmp_path / "voc", data["train"] + data["val"], NAMES)
    train, val = open_dataset([voc], "train"), open_dataset([voc], "val")
    train_ids = {train.annotation(k).image_id for k in range(len(train))}
    val_ids = {val.annotation(k).image_id for k in range(len(val))}
    assert not train_ids & val_ids and len(train_ids | val_ids) == 14 and len(val_ids) == 3  # 0.2 of 14
    again = open_dataset([voc], "val")
    assert {again.annotation(k).image_id for k in range(len(again))} == val_ids
    other = open_dataset([voc], "val", fraction=0.5, seed=7)
    assert len(other) == 7
    assert "--split-fraction 0.2" in val.description and "seed 0" in val.description
    with pytest.raises(DataError, match="no split 'test'"):
        open_dataset([voc], "test")


def test_a_single_coco_file_with_its_images_folder(tmp_path: Path, data):
    coco = write_coco_splits(tmp_path / "c", {"train": data["train"]}, NAMES)
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    moved = annotations / "instances.json"
    moved.write_text((coco / "train" / "_annotations.coco.json").read_text())
    (coco / "train").rename(tmp_path / "images")  # the COCO layout: annotations/ beside images/
    dataset = open_dataset([moved], "all")
    assert_same(read_boxes(dataset), truth_boxes(data["train"]))


def test_class_names_come_from_the_data_or_the_flag(tmp_path: Path, data):
    yaml = write_yolo(tmp_path / "yolo", data, NAMES)
    assert open_dataset([yaml], "val", classes=["gadget", "widget", "extra"]).classes == (
        "gadget",
        "widget",
        "extra",
    )
    other = write_yolo(tmp_path / "other", data, ["a", "b"])
    with pytest.raises(DataError, match="different class lists"):
        open_dataset([yaml, other], "val")
    with pytest.raises(DataError, match="unknown class 'widget'"):
        open_dataset([yaml], "val", classes=["gadget"])


# --- bad data: a clear error naming the file (and line) ----------------------------------------


def test_yolo_box_outside_the_image_names_file_and_line(tmp_path: Path, data):
    yaml = write_yolo(tmp_path / "yolo", data, NAMES)
    label = tmp_path / "yolo" / "labels" / "val" / "val001.txt"
    label.write_text(yolo_lines(data["val"][1][0]) + "0 0.9 0.5 0.4 0.2\n")
    lines = len(label.read_text().splitlines())
    with pytest.raises(DataError, match=rf"val001\.txt:{lines}: .*not normalized"):
        open_dataset([yaml], "val")


def test_yolo_unknown_class_id_and_garbage(tmp_path: Path, data):
    yaml = write_yolo(tmp_path / "yolo", data, NAMES)
    label = tmp_path / "yolo" / "labels" / "val" / "val002.txt"
    label.write_text("5 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"val002\.txt:1: unknown class id 5"):
        open_dataset([yaml], "val")
    label.write_text("0 0.5 zero 0.2 0.2\n")
    with pytest.raises(DataError, match=r"val002\.txt:1: expected"):
        open_dataset([yaml], "val")


def test_yolo_without_any_labels_says_where_they_belong(tmp_path: Path, data):
    yaml = write_yolo(tmp_path / "yolo", data, NAMES)
    for label in (tmp_path / "yolo" / "labels" / "val").iterdir():
        label.unlink()
    with pytest.raises(DataError, match="labels/ beside images/"):
        open_dataset([yaml], "val")


def test_coco_errors_name_the_annotation(tmp_path: Path, data):
    coco = write_coco_splits(tmp_path / "coco", {"val": data["val"]}, NAMES)
    path = coco / "valid" / "_annotations.coco.json"
    content = json.loads(path.read_text())
    content["annotations"][0]["bbox"] = [50, 10, 500, 20]
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=r"annotations\[0\].*outside its"):
        open_dataset([coco], "val")
    content["annotations"][0]["bbox"] = [1, 1, 5, 5]
    content["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=r"annotations\[0\].*unknown category_id 99"):
        open_dataset([coco], "val")
    content["annotations"][0]["category_id"] = 1
    content["images"][0]["file_name"] = "gone.jpg"
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=r"gone\.jpg"):
        open_dataset([coco], "val")


def test_voc_xml_errors_name_the_file(tmp_path: Path, data):
    voc = write_voc_folder(tmp_path / "voc", data["val"], NAMES)
    xml = voc / "annotations" / "val000.xml"
    xml.write_text(xml.read_text().replace("<xmax>", "<xmax>9").replace("<ymax>", "<ymax>9"))
    with pytest.raises(DataError, match=r"val000\.xml \(object 1\).*outside its"):
        open_dataset([voc], "all")
    (voc / "images" / "val000.jpg").unlink()
    with pytest.raises(DataError, match=r"val000\.xml: missing image"):
        open_dataset([voc], "all")


def test_exif_rotated_images_are_measured_as_seen(tmp_path: Path):
    from tests.support.datasets import Truth

    image = Image.new("RGB", (80, 40), (100, 100, 100))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: seen as 40 x 80
    truth = Truth("rot", 40, 80, [(0, 5, 10, 25, 70)])
    root = tmp_path / "yolo"
    write_yolo(root, {"train": [], "val": []}, NAMES)
    (root / "images" / "val" / "rot.jpg").parent.mkdir(parents=True, exist_ok=True)
    image.save(root / "images" / "val" / "rot.jpg", exif=exif)
    (root / "labels" / "val" / "rot.txt").write_text(yolo_lines(truth))
    dataset = open_dataset([root / "data.yaml"], "val")
    picture, annotation = dataset[0]
    assert tuple(picture.shape[1:]) == (80, 40) and (annotation.width, annotation.height) == (40, 80)
    torch.testing.assert_close(
        annotation.boxes_xyxy[0], torch.tensor([5.0, 10.0, 25.0, 70.0]), atol=1e-3, rtol=0
    )


def test_unreadable_paths_are_clear(tmp_path: Path):
    with pytest.raises(DataError, match="no such file"):
        read_source(tmp_path / "nothing", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no dataset found"):
        read_source(tmp_path / "empty", "train")


def test_a_roboflow_yolo_export_reads_as_ultralytics_reads_it(tmp_path: Path, data):
    """No ``path``, splits as ``../train/images`` beside the YAML, ``nc`` and float class ids."""
    root = tmp_path / "export"
    write_yolo(root / "tmp", data, NAMES)
    for split, folder in (("train", "train"), ("val", "valid")):
        (root / folder).mkdir(parents=True)
        (root / "tmp" / "images" / split).rename(root / folder / "images")
        (root / "tmp" / "labels" / split).rename(root / folder / "labels")
    label = root / "valid" / "labels" / "val000.txt"
    rows = [line.split(" ", 1) for line in label.read_text().splitlines()]
    label.write_text(
        "".join(f"{float(c)} {rest}\n" for c, rest in rows)
    )  # "1.0 0.44 ..." as some tools write
    (root / "data.yaml").write_text(f"train: ../train/images\nval: ../valid/images\nnc: 2\nnames: {NAMES}\n")
    assert_same(read_boxes(open_dataset([root / "data.yaml"], "val")), truth_boxes(data["val"]))
    (root / "data.yaml").write_text(
        "path: /content/datasets/elsewhere\ntrain: train/images\nval: valid/images\nnc: 2\n"
    )
    dataset = open_dataset([root], "train")
    assert dataset.classes == ("class0", "class1") and len(dataset) == 10


def test_stats_reads_any_format(tmp_path: Path, data, capsys):
    from model import stats

    yaml = write_yolo(tmp_path / "yolo", data, NAMES)
    assert stats.main(["--data", str(yaml), "--split", "train", "--out", str(tmp_path / "plots")]) == 0
    printed = capsys.readouterr().out
    assert "split train: 10 images" in printed and "widget" in printed and "gadget" in printed
    assert (tmp_path / "plots" / "stats_train.png").is_file()


def test_a_grouping_category_without_objects_is_not_a_class(tmp_path: Path, data):
    coco = write_coco_splits(tmp_path / "coco", {"val": data["val"]}, NAMES)
    path = coco / "valid" / "_annotations.coco.json"
    content = json.loads(path.read_text())
    content["categories"] = [{"id": 0, "name": "things", "supercategory": "none"}] + [
        {**c, "supercategory": "things"} for c in content["categories"]
    ]
    path.write_text(json.dumps(content))
    assert open_dataset([coco], "val").classes == tuple(NAMES)
