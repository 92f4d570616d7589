"""``detector-client detect PHOTOS/ --url URL --out results.jsonl``: a folder of photos through
the service.

- Recursive over the folders given (JPEG, PNG, WebP and BMP by extension, any case).
- One JSON line per image in ``--out``, appended as results come: ``{"path", "width", "height",
  "detections"}`` or ``{"path", "error": {"status", "detail"}}``. A second run skips every path
  already in the file (results and errors alike), so it resumes where a run stopped.
- At the end, from every record: ``--format coco --coco-gt GT.json`` writes ``OUT.json``, the
  standard COCO results array (``image_id``, ``category_id``, ``bbox`` xywh, ``score``) with the
  ids of ``GT.json`` (images matched by file name, categories by name; what does not match is an
  error), for pycocotools' ``loadRes`` and ``COCOeval``; ``--format coco-dataset`` writes
  ``OUT.coco.json`` (images, annotations, categories, for a labelling tool); ``--format csv``
  writes ``OUT.csv``. ``--draw DIR`` writes a copy of each image with its boxes (needs Pillow).
- A bad file is reported and skipped, never the end of the run; a progress line on stderr; a
  summary at the end: images, detections per class, errors, images/s.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from detector_client.client import DEFAULT_URL, DetectorClient, DetectorError
from detector_client.coco import CocoMatchError, write_coco_dataset, write_coco_results
from detector_client.drawing import draw, drawing_name
from detector_client.models import CSV_HEADER, ImageResult

EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def find_images(roots: Sequence[Path]) -> dict[Path, Path]:
    """Each image file under ``roots`` -> its path relative to the root it was found under."""
    found: dict[Path, Path] = {}
    for root in roots:
        if root.is_file():
            found[root] = Path(root.name)
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix.lower() in EXTENSIONS:
                found[path] = path.relative_to(root)
    return found


def done_paths(out: Path) -> set[str]:
    """Paths already recorded in ``out`` (a torn last line from an interrupted run is ignored)."""
    if not out.exists():
        return set()
    seen = set()
    for line in out.read_text(encoding="utf-8").splitlines():
        try:
            seen.add(json.loads(line)["path"])
        except (ValueError, KeyError, TypeError):
            continue
    return seen


def read_records(out: Path) -> list[dict[str, Any]]:
    records = []
    for line in out.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def write_csv(records: Iterable[dict[str, Any]], target: Path) -> None:
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        for record in records:
            if "error" in record:
                row = [record["path"], "", "", "", "", "", "", "", "", record["error"]["detail"]]
                writer.writerow(row)
                continue
            result = ImageResult(
                filename=record["path"], **{k: record[k] for k in ("width", "height", "detections")}
            )
            writer.writerows(result.csv_rows(record["path"]))


class Progress:
    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.done, self.errors = total, 0, 0
        self.start = time.perf_counter()
        self.stream = stream

    def step(self, error: bool) -> None:
        self.done += 1
        self.errors += error
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        self.stream.write(f"\r{self.done}/{self.total} images, {rate:.1f}/s, {self.errors} errors ")
        self.stream.flush()

    def finish(self) -> float:
        self.stream.write("\n")
        return time.perf_counter() - self.start


def detect_folder(args: argparse.Namespace) -> int:
    if args.format == "coco" and args.coco_gt is None:
        raise SystemExit(
            "--format coco writes COCO results for a ground truth: give --coco-gt GT.json "
            "(or --format coco-dataset for a dataset-style file)"
        )
    out: Path = args.out.with_suffix(".jsonl") if args.out.suffix == ".json" else args.out
    images = find_images(args.paths)
    names = {path: str(path) for path in images}
    seen = done_paths(out)
    todo = [path for path in images if names[path] not in seen]
    print(
        f"{len(images)} images found, {len(images) - len(todo)} already in {out}, {len(todo)} to do",
        file=sys.stderr,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and out.stat().st_size and not out.read_bytes().endswith(b"\n"):
        with out.open("ab") as torn:  # a run stopped mid-line: the next record starts a line of its own
            torn.write(b"\n")
    try:
        return run_folder(args, out, images, names, todo)
    except DetectorError as exc:
        print(
            f"\nerror: {exc.detail} (status {exc.status}); the records so far are in {out}", file=sys.stderr
        )
        return 1


def run_folder(
    args: argparse.Namespace, out: Path, images: dict[Path, Path], names: dict[Path, str], todo: list[Path]
) -> int:
    per_class: Counter[str] = Counter()
    errors: list[tuple[str, str]] = []
    progress = Progress(len(todo), sys.stderr)
    options = {
        "score_threshold": args.score_threshold,
        "classes": args.classes.split(",") if args.classes else None,
    }
    with (
        DetectorClient(
            args.url, api_key=args.api_key, concurrency=args.concurrency, timeout=args.timeout
        ) as client,
        out.open("a", encoding="utf-8") as record_file,
    ):
        card = client.model()
        for index, outcome in client.detect_each(todo, **options):
            path = todo[index]
            record: dict[str, Any] = {"path": names[path]}
            if isinstance(outcome, DetectorError):
                record["error"] = {"status": outcome.status, "detail": outcome.detail}
                errors.append((names[path], outcome.detail))
            else:
                record.update(outcome.model_dump(exclude={"filename"}))
                per_class.update(d.class_name for d in outcome.detections)
                if args.draw is not None:
                    draw(path, outcome, args.draw / drawing_name(images[path]))
            record_file.write(json.dumps(record) + "\n")
            record_file.flush()
            progress.step(isinstance(outcome, DetectorError))
    seconds = progress.finish()
    if args.format == "coco":
        try:
            count = write_coco_results(read_records(out), out.with_suffix(".json"), args.coco_gt)
        except CocoMatchError as exc:
            raise SystemExit(f"--format coco: {exc}") from None
        print(f"{count} detections as COCO results in {out.with_suffix('.json')}", file=sys.stderr)
    elif args.format == "coco-dataset":
        write_coco_dataset(read_records(out), out.with_suffix(".coco.json"), card["classes"])
    elif args.format == "csv":
        write_csv(read_records(out), out.with_suffix(".csv"))
    done = len(todo)
    print(
        f"{done} images in {seconds:.1f} s ({done / max(seconds, 1e-9):.1f} images/s); "
        f"{sum(per_class.values())} detections: "
        + (", ".join(f"{name} {n}" for name, n in per_class.most_common()) or "none")
        + f"; {len(errors)} errors",
        file=sys.stderr,
    )
    for name, detail in errors:
        print(f"  error: {name}: {detail}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="detector-client", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    detect = commands.add_parser("detect", help="run folders or files of photos through the service")
    detect.add_argument("paths", nargs="+", type=Path, help="folders (searched recursively) or image files")
    detect.add_argument("--url", default=DEFAULT_URL)
    detect.add_argument("--api-key", default=None)
    detect.add_argument("--out", type=Path, default=Path("results.jsonl"), help="JSON lines; resumable")
    detect.add_argument("--format", choices=["jsonl", "coco", "coco-dataset", "csv"], default="jsonl")
    detect.add_argument("--coco-gt", type=Path, default=None, help="COCO ground truth for --format coco")
    detect.add_argument("--draw", type=Path, default=None, help="write annotated copies under this folder")
    detect.add_argument("--score-threshold", type=float, default=None)
    detect.add_argument("--classes", default=None, help="comma-separated class names to keep")
    detect.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    detect.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    return detect_folder(args)


if __name__ == "__main__":
    raise SystemExit(main())
