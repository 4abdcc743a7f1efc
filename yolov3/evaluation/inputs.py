"""COCO-format evaluation inputs: reading, checking and normalizing ground truth and detections.

Both evaluators (:mod:`yolov3.evaluation.coco`, :mod:`yolov3.evaluation.voc`) take the same two inputs:

- ground truth: a COCO *instances* mapping (or the path of its JSON file) with ``images`` (``id``),
  ``categories`` (``id``, ``name``) and ``annotations`` (``image_id``, ``category_id``, ``bbox`` as
  ``[x, y, width, height]`` in pixels, optional ``area``, ``iscrowd``, ``difficult``, ``ignore``);
- detections: a COCO *results* list (or the path of its JSON file) of ``{"image_id", "category_id",
  "bbox": [x, y, width, height], "score"}``.

Everything is checked up front, so a bad file is one :class:`EvaluationInputError` naming the file, the
entry and what was expected, never an assertion deep inside pycocotools. The loaders return copies
(pycocotools adds keys to the dictionaries it is given) with these normalizations:

- a missing ``area`` becomes the box area ``width * height``, a missing ``iscrowd`` becomes 0;
- annotation ids are renumbered 1..N in file order (pycocotools treats an annotation with id 0 as
  "not matched", and needs ids to be unique).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

GroundTruthSource = Mapping[str, Any] | str | os.PathLike
DetectionsSource = Sequence[Mapping[str, Any]] | str | os.PathLike


class EvaluationInputError(ValueError):
    """Ground truth or detections that cannot be evaluated; the message names the file and the entry."""


def source_name(source: object, default: str) -> str:
    """The file path of ``source`` when it is one, else ``default`` (used to name the source in errors)."""
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else default


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; missing files and invalid JSON raise :class:`EvaluationInputError`."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationInputError(f"{path}: {'no such file' if not path.exists() else 'not a file'}")
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise EvaluationInputError(
            f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise EvaluationInputError(f"{path}: cannot read ({error})") from error


def _is_integer(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _check_box(box: object, where: str) -> list[float]:
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_is_number(value) for value in box):
        raise EvaluationInputError(f"{where}: 'bbox' must be [x, y, width, height] of 4 finite numbers, got {box!r}")
    x, y, width, height = (float(value) for value in box)
    if width < 0 or height < 0:
        raise EvaluationInputError(f"{where}: 'bbox' width and height must be >= 0, got {box!r}")
    return [x, y, width, height]


def _require_keys(entry: object, keys: Iterable[str], where: str) -> Mapping[str, Any]:
    if not isinstance(entry, Mapping):
        raise EvaluationInputError(f"{where}: expected an object, got {type(entry).__name__}")
    missing = [key for key in keys if key not in entry]
    if missing:
        raise EvaluationInputError(f"{where}: missing key {', '.join(repr(key) for key in missing)}")
    return entry


def _check_id(entry: Mapping[str, Any], key: str, where: str) -> int:
    value = entry[key]
    if not _is_integer(value):
        raise EvaluationInputError(f"{where}: {key!r} must be an integer, got {value!r}")
    return int(value)


def _id_list(ids: Iterable[int], limit: int = 10) -> str:
    ordered = sorted(ids)
    shown = ", ".join(str(value) for value in ordered[:limit])
    return shown + (f", ... ({len(ordered)} in all)" if len(ordered) > limit else "")


def load_ground_truth(source: GroundTruthSource) -> dict[str, Any]:
    """A checked, normalized copy of a COCO instances mapping (or of the JSON file at ``source``)."""
    name = source_name(source, "ground truth")
    dataset = read_json(source) if isinstance(source, (str, os.PathLike)) else source
    if not isinstance(dataset, Mapping):
        raise EvaluationInputError(f"{name}: expected a COCO instances object, got {type(dataset).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise EvaluationInputError(f"{name}: expected key {key!r} with a list (COCO instances format)")

    images: list[dict[str, Any]] = []
    for index, image in enumerate(dataset["images"]):
        where = f"{name}: images[{index}]"
        images.append({**_require_keys(image, ["id"], where), "id": _check_id(image, "id", where)})
    image_ids = [image["id"] for image in images]
    if len(set(image_ids)) != len(image_ids):
        raise EvaluationInputError(f"{name}: 'images' has duplicate ids")

    categories: list[dict[str, Any]] = []
    for index, category in enumerate(dataset["categories"]):
        where = f"{name}: categories[{index}]"
        _require_keys(category, ["id", "name"], where)
        categories.append({**category, "id": _check_id(category, "id", where), "name": str(category["name"])})
    category_ids = [category["id"] for category in categories]
    if len(set(category_ids)) != len(category_ids):
        raise EvaluationInputError(f"{name}: 'categories' has duplicate ids")

    known_images, known_categories = set(image_ids), set(category_ids)
    annotations: list[dict[str, Any]] = []
    for index, annotation in enumerate(dataset["annotations"]):
        where = f"{name}: annotations[{index}]"
        _require_keys(annotation, ["image_id", "category_id", "bbox"], where)
        image_id, category_id = _check_references(
            annotation, where, (known_images, "in 'images'"), (known_categories, "in 'categories'")
        )
        box = _check_box(annotation["bbox"], where)
        area = annotation.get("area", box[2] * box[3])
        if not _is_number(area):
            raise EvaluationInputError(f"{where}: 'area' must be a finite number, got {area!r}")
        annotations.append(
            {
                **annotation,
                "id": index + 1,
                "image_id": image_id,
                "category_id": category_id,
                "bbox": box,
                "area": float(area),
                "iscrowd": int(bool(annotation.get("iscrowd", 0))),
            }
        )
    return {**dataset, "images": images, "annotations": annotations, "categories": categories}


def _check_references(
    entry: Mapping[str, Any], where: str, images: tuple[set[int], str], categories: tuple[set[int], str]
) -> tuple[int, int]:
    """``entry``'s image_id and category_id, each checked to be one of the known ids; the texts say where
    they were looked for (``"in 'images'"``, ``"a category of val.json"``)."""
    image_id = _check_id(entry, "image_id", where)
    category_id = _check_id(entry, "category_id", where)
    (known_images, images_place), (known_categories, categories_place) = images, categories
    if image_id not in known_images:
        raise EvaluationInputError(f"{where}: image_id {image_id} is not {images_place}")
    if category_id not in known_categories:
        raise EvaluationInputError(
            f"{where}: category_id {category_id} is not {categories_place} ({_id_list(known_categories)})"
        )
    return image_id, category_id


def load_detections(
    source: DetectionsSource, ground_truth: Mapping[str, Any], ground_truth_name: str = "the ground truth"
) -> list[dict[str, Any]]:
    """A checked copy of a COCO results list (or of the JSON file at ``source``).

    ``ground_truth`` is a mapping from :func:`load_ground_truth`; every detection's ``image_id`` and
    ``category_id`` must be one of its images and categories.
    """
    name = source_name(source, "detections")
    entries = read_json(source) if isinstance(source, (str, os.PathLike)) else source
    if not isinstance(entries, Sequence) or isinstance(entries, (str, bytes)):
        raise EvaluationInputError(f"{name}: expected a list of detections (COCO results format)")
    known_images = {image["id"] for image in ground_truth["images"]}
    known_categories = {category["id"] for category in ground_truth["categories"]}
    detections: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        where = f"{name}: detection {index}"
        _require_keys(entry, ["image_id", "category_id", "bbox", "score"], where)
        image_id, category_id = _check_references(
            entry,
            where,
            (known_images, f"an image of {ground_truth_name}"),
            (known_categories, f"a category of {ground_truth_name}"),
        )
        if not _is_number(entry["score"]):
            raise EvaluationInputError(f"{where}: 'score' must be a finite number, got {entry['score']!r}")
        detections.append(
            {
                "image_id": image_id,
                "category_id": category_id,
                "bbox": _check_box(entry["bbox"], where),
                "score": float(entry["score"]),
            }
        )
    return detections


def select_images(ground_truth: Mapping[str, Any], image_ids: Iterable[int] | None, name: str) -> list[int]:
    """The sorted image ids to evaluate: all of the ground truth's, or ``image_ids`` after checking them."""
    known = sorted(image["id"] for image in ground_truth["images"])
    if image_ids is None:
        return known
    selected = sorted({int(image_id) for image_id in image_ids})
    unknown = set(selected) - set(known)
    if unknown:
        raise EvaluationInputError(f"{name}: image_ids not in the ground truth: {_id_list(unknown)}")
    return selected


def filter_by_score(detections: Iterable[Mapping[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """The detections whose score is at least ``threshold`` (input order kept)."""
    return [dict(detection) for detection in detections if detection["score"] >= threshold]
