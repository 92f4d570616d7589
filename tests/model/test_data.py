from pathlib import Path

import pytest
import torch

from model.data import VOCDetection, list_samples, parse_annotation
from tests.support.synthetic import make_synthetic_voc


def test_reader_reads_every_split_image(voc_root: Path):
    train = VOCDetection([voc_root], "train")
    val = VOCDetection([voc_root], "val")
    assert (len(train), len(val)) == (24, 8)
    image, annotation = train[0]
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    assert (annotation.height, annotation.width) == tuple(image.shape[1:])
    assert annotation.boxes_xyxy.shape[1] == 4 and annotation.labels.dtype == torch.int64


def test_voc_corners_become_zero_based_edges(tmp_path: Path):
    xml = tmp_path / "a.xml"
    xml.write_text(
        "<annotation><size><width>50</width><height>40</height></size>"
        "<object><name>dog</name><difficult>1</difficult>"
        "<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>50</xmax><ymax>40</ymax></bndbox></object>"
        "<object><name>cat</name><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>7</xmax><ymax>8</ymax></bndbox>"
        "</object></annotation>"
    )
    annotation = parse_annotation(xml)
    assert annotation.boxes_xyxy.tolist() == [[0, 1, 50, 40], [4, 5, 7, 8]]
    assert annotation.labels.tolist() == [11, 7]
    assert annotation.difficult.tolist() == [True, False]


def test_unknown_class_names_the_file(tmp_path: Path):
    xml = tmp_path / "b.xml"
    xml.write_text(
        "<annotation><object><name>unicorn</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>"
    )
    with pytest.raises(ValueError, match=r"b\.xml.*unicorn"):
        parse_annotation(xml)


def test_several_roots_and_year_folders(tmp_path: Path):
    first = make_synthetic_voc(tmp_path / "a", {"train": 3}, year="VOC2007", seed=1)
    second = make_synthetic_voc(tmp_path / "b", {"train": 2}, year="VOC2012", seed=2)
    make_synthetic_voc(tmp_path / "b", {"train": 4}, year="VOC2010", seed=3)
    assert len(list_samples([first, second], "train")) == 3 + 2 + 4
    assert len(list_samples([second / "VOC2012"], "train")) == 2  # a year folder given directly
    with pytest.raises(FileNotFoundError):
        list_samples([first], "test")


def test_difficult_flag_survives_the_generator(tmp_path: Path):
    root = make_synthetic_voc(tmp_path, {"train": 30}, difficult_rate=0.5, seed=4)
    flags = torch.cat([a.difficult for a in (VOCDetection([root], "train").annotation(k) for k in range(30))])
    assert flags.any() and not flags.all()
