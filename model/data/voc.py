"""VOC-style XML: a VOCdevkit (``VOC*/ImageSets/Main/{split}.txt``) or a flat folder of images and XMLs.

A VOC box has 1-based inclusive corners ``(xmin, ymin, xmax, ymax)``; it becomes
``(xmin - 1, ymin - 1, xmax, ymax)``, so it covers exactly the pixels the XML names.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from model.config import VOC_CLASSES
from model.data.base import IMAGE_SUFFIXES, Annotation, DataError, DetectionDataset, Record, image_size


@dataclass(frozen=True)
class VOCSample:
    image_path: Path
    annotation_path: Path


def parse_xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"{path}: not a readable VOC XML file ({exc})") from exc


def read_xml(path: Path, image_path: Path, image_id: str, root: ET.Element | None = None) -> Record:
    """One VOC XML file (``root``: already parsed) as a :class:`Record`; a malformed file is an
    error naming it."""
    root = parse_xml(path) if root is None else root
    size = root.find("size")
    try:
        width = int(float(size.findtext("width", "0"))) if size is not None else 0
        height = int(float(size.findtext("height", "0"))) if size is not None else 0
    except ValueError as exc:
        raise DataError(f"{path}: unreadable <size> ({exc})") from exc
    record = Record(image_path=image_path, image_id=image_id, width=width, height=height)
    for number, obj in enumerate(root.iter("object"), start=1):
        where = f"{path} (object {number})"
        name = (obj.findtext("name") or "").strip()
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DataError(f"{where}: object {name!r} has no bndbox")
        try:
            x1, y1, x2, y2 = (float(bnd.findtext(tag, "nan")) for tag in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as exc:
            raise DataError(f"{where}: unreadable bndbox ({exc})") from exc
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        record.add(name, [x1 - 1.0, y1 - 1.0, x2, y2], where, difficult)
    return record


def parse_annotation(path: Path, classes: Sequence[str] = VOC_CLASSES) -> Annotation:
    """Read one VOC XML file; an unknown class name is an error naming the file."""
    record = read_xml(path, path.with_suffix(".jpg"), path.stem)
    return DetectionDataset([record], classes).annotation(0)


def is_devkit(root: Path) -> bool:
    return (root / "ImageSets").is_dir() or any(
        p.is_dir() and (p / "ImageSets").is_dir() for p in root.iterdir() if p.name.startswith("VOC")
    )


def year_folders(root: Path) -> list[Path]:
    """``root`` itself when it is a year folder (has ``ImageSets``), else its ``VOC*`` children."""
    if (root / "ImageSets").is_dir():
        return [root]
    folders = sorted(p for p in root.iterdir() if p.is_dir() and (p / "ImageSets").is_dir())
    if not folders:
        raise FileNotFoundError(f"{root}: no VOC year folder (one with ImageSets/Main) found")
    return folders


def list_samples(roots: Sequence[str | Path], split: str) -> list[VOCSample]:
    """Every image named by ``ImageSets/Main/{split}.txt`` under each root's year folders."""
    samples: list[VOCSample] = []
    for root in roots:
        for year in year_folders(Path(root)):
            split_file = year / "ImageSets" / "Main" / f"{split}.txt"
            if not split_file.is_file():
                continue
            for line in split_file.read_text().split("\n"):
                image_id = line.strip().split(" ")[0]
                if image_id:
                    samples.append(
                        VOCSample(
                            year / "JPEGImages" / f"{image_id}.jpg",
                            year / "Annotations" / f"{image_id}.xml",
                        )
                    )
    if not samples:
        raise FileNotFoundError(f"no images in split {split!r} under {[str(r) for r in roots]}")
    return samples


def devkit_records(roots: Sequence[str | Path], split: str) -> list[Record]:
    """The split's images under VOCdevkit ``roots`` with their XMLs; a missing image is an error."""
    records = []
    for sample in list_samples(roots, split):
        if not sample.image_path.is_file():
            raise DataError(f"{sample.annotation_path}: missing image {sample.image_path}")
        records.append(read_xml(sample.annotation_path, sample.image_path, sample.image_path.stem))
    return records


def folder_records(root: Path) -> tuple[list[Record], int]:
    """Every XML under ``root`` with its image (found by the XML's ``<filename>``, else by the XML's
    name), plus the images that have no XML, as negatives; returns the records and that count."""
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    by_name = {p.name: p for p in images}
    by_stem = {p.stem: p for p in images}
    records: list[Record] = []
    used: set[Path] = set()
    for xml in sorted(root.rglob("*.xml")):
        parsed = parse_xml(xml)
        filename = (parsed.findtext("filename") or "").strip()
        candidates = [xml.parent / filename] if filename else []
        image = next((c for c in candidates if c.is_file()), None)
        image = image or by_name.get(Path(filename).name) or by_stem.get(xml.stem)
        if image is None:
            raise DataError(f"{xml}: missing image {filename or xml.stem + '.*'} under {root}")
        used.add(image)
        records.append(read_xml(xml, image, image.stem, parsed))
    negatives = [p for p in images if p not in used]
    for path in negatives:
        width, height = image_size(path)
        records.append(Record(image_path=path, image_id=path.stem, width=width, height=height))
    if not records:
        raise DataError(f"{root}: no images or VOC XML files found")
    return records, len(negatives)
