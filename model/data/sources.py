"""Which format a ``--data`` path is, the split it asks for, and the class list the data implies.

Detected from the path: a pack (``index.json``, read by training only), an Ultralytics ``data.yaml``
(the file, or a folder holding one), a COCO JSON file or a folder with one COCO file per split, a
VOCdevkit (``VOC*/ImageSets``), or any folder of VOC-style XMLs beside their images. A source with
splits of its own uses them; one without (a flat XML folder, a single COCO file, a YAML without
``val``) is split into ``train``/``val`` by ``fraction`` with a fixed seed, and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from model.config import VOC_CLASSES
from model.data import coco, voc, yolo
from model.data.base import (
    DEFAULT_SPLIT_SEED,
    DEFAULT_VAL_FRACTION,
    DataError,
    DetectionDataset,
    Record,
    split_by_fraction,
)

FORMATS = ("VOCdevkit", "VOC XML folder", "COCO JSON", "COCO folder", "YOLO data.yaml")


@dataclass(frozen=True)
class Source:
    """One ``--data`` path read for one split: its records, the class list it declares (``None``
    when the format has none) and a line saying what was read and how it was split."""

    path: Path
    format: str
    records: list[Record]
    declared_classes: tuple[str, ...] | None
    note: str

    def names_found(self) -> tuple[str, ...]:
        return tuple(sorted({n for r in self.records for n in r.names}))


def _yaml_in(folder: Path) -> Path | None:
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
    return found[0] if len(found) == 1 else None


def detect_format(path: Path) -> str:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() in (".yaml", ".yml"):
            return "YOLO data.yaml"
        if path.suffix.lower() == ".json":
            return "COCO JSON"
        raise DataError(f"{path}: not a dataset; --data takes a folder, a data.yaml or a COCO JSON file")
    if _yaml_in(path) is not None:
        return "YOLO data.yaml"
    if voc.is_devkit(path):
        return "VOCdevkit"
    if coco.has_split_files(path):
        return "COCO folder"
    if next(path.rglob("*.xml"), None) is not None:
        return "VOC XML folder"
    raise DataError(f"{path}: no dataset found; --data takes one of: {', '.join(FORMATS)}")


def _fraction_note(total: int, split: str, kept: int, fraction: float, seed: int) -> str:
    if split == "all":
        return f"all {total} images"
    return (
        f"no splits of its own: {split!r} is {kept} of {total} images "
        f"(--split-fraction {fraction} val, seed {seed})"
    )


def read_source(
    path: str | Path, split: str, fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SPLIT_SEED
) -> Source:
    path = Path(path)
    kind = detect_format(path)
    declared: tuple[str, ...] | None = None
    if kind == "VOCdevkit":
        records = voc.devkit_records([path], split)
        note = f"split {split!r} from ImageSets/Main: {len(records)} images"
        found = {n for r in records for n in r.names}
        declared = VOC_CLASSES if found <= set(VOC_CLASSES) else None
    elif kind == "VOC XML folder":
        everything, negatives = voc.folder_records(path)
        records = split_by_fraction(everything, split, fraction, seed, str(path))
        note = _fraction_note(len(everything), split, len(records), fraction, seed)
        note += f"; {negatives} images without XML taken as negatives" if negatives else ""
    elif kind == "YOLO data.yaml":
        yaml_path = path if path.is_file() else _yaml_in(path)
        assert yaml_path is not None
        if split == "all":
            records, names = [], None
            for name in ("train", "val", "test"):
                found_split = yolo.read_split(yaml_path, name)
                if found_split is not None:
                    records += found_split[0]
                    names = found_split[1]
            if names is None:
                raise DataError(f"{yaml_path}: no 'train', 'val' or 'test' images")
            declared, note = names, f"all {len(records)} images of every split"
        else:
            read = yolo.read_split(yaml_path, split)
            if read is None and split in ("train", "val"):
                base = yolo.read_split(yaml_path, "train")
                if base is None:
                    raise DataError(f"{yaml_path}: no 'train' entry")
                records = split_by_fraction(base[0], split, fraction, seed, str(yaml_path))
                declared = base[1]
                note = "no 'val' entry: " + _fraction_note(len(base[0]), split, len(records), fraction, seed)
            elif read is None:
                raise DataError(f"{yaml_path}: no {split!r} entry")
            else:
                records, declared = read
                note = f"split {split!r} from the YAML: {len(records)} images"
        path = yaml_path
    elif kind == "COCO folder":
        files = [coco.split_file(path, s) for s in (("train", "val") if split == "all" else (split,))]
        if not any(files):
            raise DataError(f"{path}: no COCO file for split {split!r} (looked for {coco.SPLIT_FILES})")
        records = []
        for file in files:
            if file is not None:
                part, declared = coco.read_coco(file)
                records += part
        note = f"split {split!r} from {', '.join(str(f) for f in files if f)}: {len(records)} images"
    else:  # a single COCO file
        everything, declared = coco.read_coco(path)
        records = split_by_fraction(everything, split, fraction, seed, str(path))
        note = _fraction_note(len(everything), split, len(records), fraction, seed)
    if not records:
        raise DataError(f"{path}: split {split!r} has no images")
    return Source(path, kind, records, declared, f"{path} ({kind}): {note}")


def resolve_classes(sources: Sequence[Source], classes: Sequence[str] | None = None) -> tuple[str, ...]:
    """``classes`` when given; else the one list the sources declare (every source must agree),
    else the names they use, sorted."""
    if classes:
        return tuple(classes)
    declared = {s.declared_classes for s in sources if s.declared_classes is not None}
    if len(declared) > 1:
        listed = "; ".join(f"{s.path}: {list(s.declared_classes or ())}" for s in sources)
        raise DataError(f"the datasets declare different class lists ({listed}); pass --classes a,b,c")
    if declared:
        return declared.pop()
    names = tuple(sorted({n for s in sources for n in s.names_found()}))
    if not names:
        raise DataError(f"no objects in {[str(s.path) for s in sources]}: pass --classes a,b,c")
    return names


def open_dataset(
    paths: Sequence[str | Path],
    split: str,
    classes: Sequence[str] | None = None,
    fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SPLIT_SEED,
) -> DetectionDataset:
    """One dataset over every path's ``split``; labels follow ``classes`` (default: the data's)."""
    sources = [read_source(p, split, fraction, seed) for p in paths]
    names = resolve_classes(sources, classes)
    records = [r for s in sources for r in s.records]
    return DetectionDataset(records, names, "; ".join(s.note for s in sources))


def describe(dataset: DetectionDataset) -> dict[str, object]:
    """What a model card records of a dataset."""
    return {
        "read": dataset.description,
        "classes": list(dataset.classes),
        "images": len(dataset),
        "objects": dataset.object_count(),
    }


def split_canary(dataset: DetectionDataset, count: int) -> tuple[DetectionDataset, DetectionDataset]:
    """``(the rest, the canary)`` of a split: the canary is every ``k``-th image of its list
    (``k = len // count``), the first ``count`` of them, so a pack, a training run and an
    evaluation that name the same split and count agree on it without a file between them."""
    if not 0 < count < len(dataset):
        raise ValueError(f"a canary of {count} images needs a split of more ({len(dataset)} here)")
    step = len(dataset) // count
    chosen = set(range(0, step * count, step))
    canary = [r for k, r in enumerate(dataset.records) if k in chosen]
    rest = [r for k, r in enumerate(dataset.records) if k not in chosen]
    note = f"{dataset.description}, canary of {count} (one image in {step})"
    return (
        DetectionDataset(rest, dataset.classes, f"{note} left out"),
        DetectionDataset(canary, dataset.classes, f"{note} only"),
    )
