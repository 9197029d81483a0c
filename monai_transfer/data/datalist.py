# Copyright (c) monai-transfer contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Data lists for classification: ``[{"image": path, "label": int, ...}]`` from folders, CSV and JSON files.

Every problem is an error that names the file and the row/line (missing file, unknown label, duplicate path, a path
that escapes the data root, a class folder with no image, a single class, a file that is not an image). Nothing is
dropped silently; :func:`validate_datalist` can instead collect unreadable images into a report (logged at WARNING).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_transfer.transforms.io.array import (
    DICOM_EXTENSIONS,
    NIFTI_EXTENSIONS,
    MedicalImageLoadError,
    _is_dicom_file,
)

__all__ = [
    "DEFAULT_EXTENSIONS",
    "DatalistError",
    "datalist_from_folder",
    "datalist_from_csv",
    "datalist_from_json",
    "load_datalist",
    "validate_datalist",
]

logger = logging.getLogger(__name__)

#: file endings accepted as images by default (case-insensitive); extension-less files with the DICOM marker too
DEFAULT_EXTENSIONS = (".png", ".jpg", ".jpeg") + DICOM_EXTENSIONS + NIFTI_EXTENSIONS + (".bmp", ".tif", ".tiff")
_IGNORED_NAMES = {"thumbs.db", "desktop.ini"}


class DatalistError(ValueError):
    """A data list (folder, CSV, JSON) is invalid; the message names the file and the row or path."""


def _is_image(path: Path, extensions: Sequence[str]) -> bool:
    name = path.name.lower()
    if name.endswith(tuple(e.lower() for e in extensions)):
        return True
    return "." not in name and _is_dicom_file(path)


def _is_series_dir(path: Path) -> bool:
    files = [f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")]
    return bool(files) and all(f.name.lower().endswith(DICOM_EXTENSIONS) or _is_dicom_file(f) for f in files)


def datalist_from_folder(
    root: str | os.PathLike,
    extensions: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    on_unknown: str = "raise",
    dicom_ids: bool = True,
) -> list[dict[str, Any]]:
    """Data list from the usual ``root/<class>/<image>`` layout.

    Class folders are sorted by name and numbered from 0 (or follow ``class_names``). Inside a class folder every
    file must be an image (``extensions``, or an extension-less file with the DICOM marker); a sub-folder holding
    only DICOM files is one item (a DICOM series). Hidden files (``.name``) and ``Thumbs.db``/``desktop.ini`` are
    ignored.

    Args:
        root: folder with one sub-folder per class.
        extensions: accepted file endings; default :data:`DEFAULT_EXTENSIONS`.
        class_names: fixed class order (e.g. to keep train and test numbering equal); default sorted folder names.
        on_unknown: ``"raise"`` (default) on a non-image file, or ``"warn"``: leave it out and log the count and
            paths at WARNING.
        dicom_ids: when the folder holds DICOM files, fill ``patient_id``, ``study_uid``, ``series_uid`` from their
            headers (:func:`~monai_transfer.data.dicom_meta.add_dicom_ids`); default True.

    Returns:
        ``[{"image": str, "label": int, "class_name": str}]`` sorted by class then path (plus the DICOM ids).

    Raises:
        DatalistError: missing root, fewer than two classes, an empty class folder, an unknown file (``"raise"``),
            a class in ``class_names`` without folder or a folder not in ``class_names``.
    """
    if on_unknown not in ("raise", "warn"):
        raise ValueError(f"on_unknown must be 'raise' or 'warn', got {on_unknown!r}.")
    root = Path(root)
    if not root.is_dir():
        raise DatalistError(f"data folder '{root}' does not exist or is not a folder.")
    exts = tuple(extensions) if extensions is not None else DEFAULT_EXTENSIONS
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    stray = sorted(str(p) for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    if class_names is None:
        names = folders
    else:
        names = list(class_names)
        missing = [c for c in names if c not in folders]
        extra = [f for f in folders if f not in names]
        if missing or extra:
            raise DatalistError(
                f"class folders in '{root}' do not match class_names={names}: missing {missing}, unexpected {extra}."
            )
    if len(names) < 2:
        raise DatalistError(
            f"'{root}' must hold at least two class folders (root/<class>/<image>), found {len(names)}: {names}."
        )
    items: list[dict[str, Any]] = []
    unknown: list[str] = []
    for label, cname in enumerate(names):
        cdir = root / cname
        found = 0
        for p in sorted(cdir.iterdir()):
            if p.name.startswith(".") or p.name.lower() in _IGNORED_NAMES:
                continue
            if (p.is_file() and _is_image(p, exts)) or (p.is_dir() and _is_series_dir(p)):
                items.append({"image": str(p), "label": label, "class_name": cname})
                found += 1
            else:
                unknown.append(str(p))
        if found == 0:
            raise DatalistError(f"class folder '{cdir}' holds no image with an extension in {exts}.")
    unknown += stray
    if unknown:
        msg = f"{len(unknown)} non-image entr{'y' if len(unknown) == 1 else 'ies'} under '{root}': {unknown}"
        if on_unknown == "raise":
            raise DatalistError(msg + " (accepted: " + ", ".join(exts) + "; pass on_unknown='warn' to leave them out).")
        logger.warning("left out %s", msg)
    return _with_dicom_ids(items) if dicom_ids else items


def _with_dicom_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from monai_transfer.data.dicom_meta import add_dicom_ids

    try:
        return add_dicom_ids(items)
    except ValueError as e:
        raise DatalistError(str(e)) from e


def _resolve(base: Path, value: str, where: str, allow_outside: bool, check_files: bool) -> str:
    if not value:
        raise DatalistError(f"{where}: empty image path.")
    p = Path(value)
    full = (p if p.is_absolute() else base / p).resolve()
    if not allow_outside:
        try:
            full.relative_to(base.resolve())
        except ValueError:
            raise DatalistError(f"{where}: image path '{value}' escapes the data root '{base}'.") from None
    if check_files and not full.exists():
        raise DatalistError(f"{where}: image file '{full}' does not exist.")
    return str(full)


def _labels(raw: list[Any], class_names: Sequence[str] | None, wheres: list[str]) -> tuple[list[int], list[str] | None]:
    """Integer labels from ints / int strings / class names; returns the labels and the class names used."""
    if class_names is not None:
        names = [str(c) for c in class_names]
        out = []
        for v, w in zip(raw, wheres):
            s = str(v).strip()
            if s in names:
                out.append(names.index(s))
            elif s.lstrip("-").isdigit() and 0 <= int(s) < len(names):
                out.append(int(s))
            else:
                raise DatalistError(f"{w}: unknown label {v!r}; known classes: {names}.")
        return out, names
    as_int: list[int] = []
    for v in raw:
        s = str(v).strip()
        if isinstance(v, bool) or not s.lstrip("-").isdigit():
            break
        as_int.append(int(s))
    if len(as_int) == len(raw):
        for v, w in zip(as_int, wheres):
            if v < 0:
                raise DatalistError(f"{w}: label {v} is negative.")
        return as_int, None
    for v, w in zip(raw, wheres):
        if v is None or str(v).strip() == "":
            raise DatalistError(f"{w}: empty label.")
    names = sorted({str(v).strip() for v in raw})
    return [names.index(str(v).strip()) for v in raw], names


def _finish(
    rows: list[dict[str, Any]],
    wheres: list[str],
    base: Path,
    image_key: str,
    label_key: str | None,
    patient_key: str | None,
    class_names: Sequence[str] | None,
    allow_outside_root: bool,
    check_files: bool,
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for row, where in zip(rows, wheres):
        if image_key not in row:
            raise DatalistError(f"{where}: no {image_key!r} entry (has {sorted(row)}).")
        img = row[image_key]
        if isinstance(img, (list, tuple)):
            raise DatalistError(f"{where}: {image_key!r} must be one path, got a list.")
        path = _resolve(base, str(img).strip(), where, allow_outside_root, check_files)
        if path in seen:
            raise DatalistError(f"{where}: duplicate image '{path}' (already at {seen[path]}).")
        seen[path] = where
        item = {k: v for k, v in row.items() if k not in (image_key, label_key, patient_key)}
        item["image"] = path
        if patient_key is not None:
            pid = row.get(patient_key)
            if pid is None or str(pid).strip() == "":
                raise DatalistError(f"{where}: empty {patient_key!r}.")
            item["patient_id"] = str(pid).strip()
        items.append(item)
    if label_key is not None:
        missing = [w for r, w in zip(rows, wheres) if label_key not in r or r[label_key] is None]
        if missing:
            raise DatalistError(f"{missing[0]}: no {label_key!r} value.")
        labels, names = _labels([r[label_key] for r in rows], class_names, wheres)
        for item, lab in zip(items, labels):
            item["label"] = lab
            if names is not None:
                item["class_name"] = names[lab]
    return items


def datalist_from_csv(
    path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    image_col: str = "image",
    label_col: str | None = "label",
    patient_col: str | None = None,
    class_names: Sequence[str] | None = None,
    allow_outside_root: bool = False,
    check_files: bool = True,
    dicom_ids: bool = True,
) -> list[dict[str, Any]]:
    """Data list from a CSV with an image column, a label column and optionally a patient id column.

    Relative image paths are resolved against ``root`` (default: the CSV's folder); a path that resolves outside
    it raises unless ``allow_outside_root``. Labels may be integers or class names: with ``class_names``, names
    (or indices) outside it raise; without, integer labels are kept and text labels are numbered in sorted order.
    Other columns are kept as strings. Rows are reported by their line number in the file.

    Args:
        path: the CSV file.
        root: folder that relative paths are resolved against; default the CSV's folder.
        image_col: image column, default ``"image"``.
        label_col: label column, default ``"label"``; None for unlabelled lists.
        patient_col: patient id column; default None uses a ``patient_id`` column when there is one.
        class_names: class order; see above.
        allow_outside_root: accept paths outside ``root``; default False.
        check_files: require every image to exist; default True.
        dicom_ids: fill ``patient_id`` (unless the list has it), ``study_uid``, ``series_uid`` from the headers of
            DICOM images (:func:`~monai_transfer.data.dicom_meta.add_dicom_ids`); default True.

    Returns:
        ``[{"image": absolute path, "label": int, "class_name"?: str, "patient_id"?: str, ...other columns}]``.

    Raises:
        DatalistError: missing CSV or column, empty CSV, and per row: missing file, unknown/empty label, duplicate path,
            path outside the root, empty patient id.
    """
    path = Path(path)
    if not path.is_file():
        raise DatalistError(f"CSV data list '{path}' does not exist.")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        rows = [dict(r) for r in reader]
    needed = [c for c in (image_col, label_col, patient_col) if c is not None]
    absent = [c for c in needed if c not in cols]
    if absent:
        raise DatalistError(f"CSV '{path}' has no column(s) {absent}; columns are {cols}.")
    if not rows:
        raise DatalistError(f"CSV '{path}' has no data rows.")
    if patient_col is None and "patient_id" in cols:
        patient_col = "patient_id"
    wheres = [f"'{path}' line {i + 2}" for i in range(len(rows))]
    base = Path(root) if root is not None else path.parent
    items = _finish(rows, wheres, base, image_col, label_col, patient_col, class_names, allow_outside_root, check_files)
    return _with_dicom_ids(items) if dicom_ids and check_files else items


def datalist_from_json(
    path: str | os.PathLike,
    key: str = "training",
    root: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    allow_outside_root: bool = False,
    check_files: bool = True,
    dicom_ids: bool = True,
) -> list[dict[str, Any]]:
    """Data list from MONAI's datalist JSON (``{"training": [{"image": ..., "label": ...}]}``) or a plain list.

    Unlike MONAI's ``load_decathlon_datalist``, a string ``label`` is a class name here (not a path), and items
    are validated as in :func:`datalist_from_csv` (paths resolved against ``root`` or the JSON's folder; a
    ``patient_id`` entry is kept).

    Args:
        path: the JSON file.
        key: section of a MONAI datalist, default ``"training"`` (ignored for a plain list).
        root, class_names, allow_outside_root, check_files, dicom_ids: see :func:`datalist_from_csv`.

    Raises:
        DatalistError: unreadable JSON, missing section, non-dict entries, and the per-item errors of the CSV reader.
    """
    path = Path(path)
    if not path.is_file():
        raise DatalistError(f"JSON data list '{path}' does not exist.")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatalistError(f"JSON data list '{path}' is not valid JSON ({e}).") from e
    if isinstance(content, Mapping):
        if key not in content:
            raise DatalistError(f"JSON data list '{path}' has no {key!r} section (has {sorted(content)}).")
        rows = content[key]
    else:
        rows = content
    if not isinstance(rows, list) or not rows:
        raise DatalistError(f"JSON data list '{path}' section {key!r} must be a non-empty list.")
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise DatalistError(f"'{path}' item {i}: expected an object with 'image', got {type(r).__name__}.")
    wheres = [f"'{path}' item {i}" for i in range(len(rows))]
    labelled = any("label" in r for r in rows)
    patient = "patient_id" if any("patient_id" in r for r in rows) else None
    base = Path(root) if root is not None else path.parent
    items = _finish(
        [dict(r) for r in rows],
        wheres,
        base,
        "image",
        "label" if labelled else None,
        patient,
        class_names,
        allow_outside_root,
        check_files,
    )
    return _with_dicom_ids(items) if dicom_ids and check_files else items


def load_datalist(source: str | os.PathLike | Iterable[Mapping[str, Any]], **kwargs: Any) -> list[dict[str, Any]]:
    """Data list from a class folder, a ``.csv``, a ``.json`` or an existing list of dicts.

    Args:
        source: folder (:func:`datalist_from_folder`), ``.csv`` (:func:`datalist_from_csv`), ``.json``
            (:func:`datalist_from_json`), or a list of dicts with an ``image`` key (returned as a list copy).
        kwargs: passed to the reader.

    Raises:
        DatalistError: a missing source or an unsupported file type; the readers' errors.
    """
    if not isinstance(source, (str, os.PathLike)):
        items = [dict(x) for x in source]
        for i, x in enumerate(items):
            if "image" not in x:
                raise DatalistError(f"data list item {i} has no 'image' key: {x}.")
        return items
    p = Path(source)
    if p.is_dir():
        return datalist_from_folder(p, **kwargs)
    if p.suffix.lower() == ".csv":
        return datalist_from_csv(p, **kwargs)
    if p.suffix.lower() == ".json":
        return datalist_from_json(p, **kwargs)
    if not p.exists():
        raise DatalistError(f"data list source '{p}' does not exist.")
    raise DatalistError(f"data list source '{p}' must be a folder, a .csv or a .json file.")


def validate_datalist(
    items: Sequence[Mapping[str, Any]],
    loader: Callable[[Any], Any] | None = None,
    keys: Sequence[str] = ("image",),
    on_error: str = "raise",
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Try to load every image of a data list once; stop at the first bad file or collect them into a report.

    This reads each image fully (it is the only way to catch a truncated pixel stream), so run it once when a
    dataset is prepared, not every epoch.

    Args:
        items: the data list.
        loader: callable that loads one path; default :class:`~monai_transfer.transforms.LoadMedicalImage` with
            default options. Any exception it raises marks the file bad.
        keys: item keys holding paths, default ``("image",)``.
        on_error: ``"raise"`` (default): re-raise the first failure (as ``MedicalImageLoadError`` naming the file);
            ``"skip"``: leave bad items out, log their count and paths at WARNING and return them in the report.

    Returns:
        ``(good_items, report)``, where ``report`` is ``[{"image": path, "key": key, "error": message}]``.

    Raises:
        MedicalImageLoadError: with ``on_error="raise"``, for the first file that fails.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
    if loader is None:
        from monai_transfer.transforms.io.array import LoadMedicalImage

        loader = LoadMedicalImage()
    good: list[dict[str, Any]] = []
    report: list[dict[str, str]] = []
    for item in items:
        ok = True
        for key in keys:
            if key not in item:
                raise DatalistError(f"data list item has no {key!r} key: {dict(item)}.")
            try:
                loader(item[key])
            except Exception as e:
                if on_error == "raise":
                    if isinstance(e, MedicalImageLoadError):
                        raise
                    raise MedicalImageLoadError(item[key], f"{type(e).__name__}: {e}") from e
                report.append({"image": str(item[key]), "key": str(key), "error": str(e)})
                ok = False
                break
        if ok:
            good.append(dict(item))
    if report:
        logger.warning(
            "skipped %d of %d data list item(s) that could not be loaded: %s",
            len(report),
            len(items),
            [r["image"] for r in report],
        )
    return good, report
