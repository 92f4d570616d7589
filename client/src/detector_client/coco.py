"""COCO files from the CLI's records: a *results* array for scoring against a ground truth
(pycocotools' ``loadRes``), or a dataset-style file (images, annotations, categories) to import
detections into a labelling tool."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from detector_client.models import ImageResult


class CocoMatchError(ValueError):
    """Records or classes that the ground truth has no match for; the message lists them."""


def _result(record: dict[str, Any]) -> ImageResult:
    return ImageResult(filename=record["path"], **{k: record[k] for k in ("width", "height", "detections")})


def image_ids_by_name(gt: dict[str, Any], paths: Iterable[str]) -> dict[str, int]:
    """Each record path -> the ground truth's image id, by its ``file_name``: the whole relative path
    when it matches, else the file name alone when that names one image only."""
    by_path = {str(PurePosixPath(image["file_name"])): int(image["id"]) for image in gt["images"]}
    by_name: dict[str, list[int]] = {}
    for image in gt["images"]:
        by_name.setdefault(PurePosixPath(image["file_name"]).name, []).append(int(image["id"]))
    found, missing = {}, []
    for path in paths:
        posix = str(PurePosixPath(Path(path).as_posix()))
        candidates = [by_path[posix]] if posix in by_path else by_name.get(PurePosixPath(posix).name, [])
        if len(candidates) == 1:
            found[path] = candidates[0]
        else:
            missing.append(path)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CocoMatchError(
            f"{len(missing)} image(s) match no single file_name of the ground truth: {shown}"
        )
    return found


def write_coco_results(records: Iterable[dict[str, Any]], target: Path, gt_path: Path) -> int:
    """The standard COCO results array (``image_id``, ``category_id``, ``bbox`` xywh, ``score``),
    image ids and category ids taken from ``gt_path`` by file name and category name; returns how
    many detections it wrote."""
    gt = json.loads(gt_path.read_text(encoding="utf-8"))
    done = [r for r in records if "error" not in r]
    image_ids = image_ids_by_name(gt, [r["path"] for r in done])
    categories = {str(c["name"]): int(c["id"]) for c in gt.get("categories", [])}
    results: list[dict[str, Any]] = []
    unknown: set[str] = set()
    for record in done:
        for d in _result(record).detections:
            if d.class_name not in categories:
                unknown.add(d.class_name)
                continue
            results.append(
                {
                    "image_id": image_ids[record["path"]],
                    "category_id": categories[d.class_name],
                    "bbox": d.coco_bbox,
                    "score": d.score,
                }
            )
    if unknown:
        raise CocoMatchError(
            f"class(es) {sorted(unknown)} are no category of {gt_path} (it has {sorted(categories)})"
        )
    target.write_text(json.dumps(results))
    return len(results)


def write_coco_dataset(records: Iterable[dict[str, Any]], target: Path, classes: Sequence[str]) -> None:
    """A dataset-style file: images numbered 1..N in record order, detections as annotations."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, record in enumerate((r for r in records if "error" not in r), start=1):
        result = _result(record)
        images.append(
            {"id": image_id, "file_name": record["path"], "width": result.width, "height": result.height}
        )
        annotations.extend(result.coco_annotations(image_id, first_id=len(annotations) + 1))
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(classes)]
    target.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
