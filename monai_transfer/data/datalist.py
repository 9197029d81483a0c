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
that escapes the data root or holds a NUL byte, a CSV that is not UTF-8, a class folder with no image, a single class,
a file that is not an image). Nothing is dropped silently; :func:`validate_datalist` can instead collect unreadable
images into a report (logged at WARNING).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_transfer.transforms.io.array import (
    DICOM_EXTENSIONS,
    NIFTI_EXTENSIONS,
    MedicalImageLoadError,
    is_dicom_file,
)
from monai_transfer.utils.task import TASK_MODES, derive_task  # TASK_MODES re-exported

__all__ = [
    "DEFAULT_EXTENSIONS",
    "DatalistError",
    "datalist_from_folder",
    "datalist_from_csv",
    "datalist_from_json",
    "load_datalist",
    "validate_datalist",
    "TASK_MODES",
    "UNCERTAIN_POLICIES",
    "IGNORED_LABEL",
    "infer_task_mode",
    "list_image_files",
    "inference_datalist",
]

logger = logging.getLogger(__name__)

#: file endings accepted as images by default (case-insensitive); extension-less files with the DICOM marker too
DEFAULT_EXTENSIONS = (".png", ".jpg", ".jpeg") + DICOM_EXTENSIONS + NIFTI_EXTENSIONS + (".bmp", ".tif", ".tiff")
_IGNORED_NAMES = {"thumbs.db", "desktop.ini"}


class DatalistError(ValueError):
    """A data list (folder, CSV, JSON) is invalid; the message names the file and the row or path."""


#: what an uncertain multi-label value (``-1``, CheXpert style) becomes: 0, 1, or ``IGNORED_LABEL`` (masked out of
#: the training loss; metrics refuse it, so validation/test labels must be certain)
UNCERTAIN_POLICIES = ("zeros", "ones", "ignore")
#: the entry of a multi-hot label that ``uncertain="ignore"`` leaves out of the loss
IGNORED_LABEL = -1


def _is_image(path: Path, extensions: Sequence[str]) -> bool:
    name = path.name.lower()
    if name.endswith(tuple(e.lower() for e in extensions)):
        return True
    return "." not in name and is_dicom_file(path)


def _is_series_dir(path: Path) -> bool:
    files = [f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")]
    return bool(files) and all(f.name.lower().endswith(DICOM_EXTENSIONS) or is_dicom_file(f) for f in files)


def _class_folders(root: Path, class_names: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """``(class names, stray files)`` of a class-folder root; checks the folders against ``class_names``."""
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
    return names, stray


def _scan_class_folders(root: Path, names: list[str], exts: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[str]]:
    """``(items, unknown entries)`` of the class folders; an empty class folder raises."""
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
    return items, unknown


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
    names, stray = _class_folders(root, class_names)
    items, unknown = _scan_class_folders(root, names, exts)
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
    if "\x00" in value:
        raise DatalistError(f"{where}: image path {value!r} contains a NUL byte (a damaged or binary file?).")
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


_INT_RE = re.compile(r"[+-]?\d+")
_NUMBER_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _label_text(v: Any) -> str:
    """A label as text, with numbers in one canonical form: ``1``, ``"1"``, ``"1.0"``, ``"+1"`` all give ``"1"``."""
    s = str(v).strip()
    if isinstance(v, bool):
        return s
    if _INT_RE.fullmatch(s):
        return str(int(s))
    if _NUMBER_RE.fullmatch(s):
        f = float(s)
        return str(int(f)) if f.is_integer() else repr(f)
    return s


def _labels(raw: list[Any], class_names: Sequence[str] | None, wheres: list[str]) -> tuple[list[int], list[str] | None]:
    """Integer labels from ints / int strings / class names; returns the labels and the class names used.

    Numbers that are equal are one label (``0``/``1``/``1.0``/``0.0`` is two classes); other strings are compared
    as they are (after stripping spaces).
    """
    if class_names is not None:
        names = [str(c) for c in class_names]
        canonical = [_label_text(c) for c in names]
        out = []
        for v, w in zip(raw, wheres):
            s, t = str(v).strip(), _label_text(v)
            if s in names:
                out.append(names.index(s))
            elif t in canonical:
                out.append(canonical.index(t))
            elif _INT_RE.fullmatch(t) and 0 <= int(t) < len(names):
                out.append(int(t))
            else:
                raise DatalistError(f"{w}: unknown label {v!r}; known classes: {names}.")
        return out, names
    texts = [_label_text(v) for v in raw]
    if not any(isinstance(v, bool) for v in raw) and all(_INT_RE.fullmatch(t) for t in texts):
        as_int = [int(t) for t in texts]
        for v, w in zip(as_int, wheres):
            if v < 0:
                raise DatalistError(f"{w}: label {v} is negative.")
        return as_int, None
    for v, w in zip(raw, wheres):
        if v is None or str(v).strip() == "":
            raise DatalistError(f"{w}: empty label.")
    names = sorted(set(texts))
    return [names.index(t) for t in texts], names


def _multilabel_value(v: Any, where: str, name: str, uncertain: str | None, uncertain_value: int) -> int:
    """One 0/1 entry of a multi-label vector; ``uncertain_value`` follows the ``uncertain`` policy."""
    s = "" if v is None else str(v).strip()
    if s == "":
        raise DatalistError(
            f"{where}: empty value for label {name!r}; write 0 or 1 (CheXpert leaves unmentioned findings blank: "
            "fill those with 0 first)."
        )
    try:
        f = float(s)
    except ValueError:
        f = float("nan")
    if isinstance(v, bool):
        f = float(v)
    if f in (0.0, 1.0):
        return int(f)
    if f == uncertain_value:
        if uncertain == "zeros":
            return 0
        if uncertain == "ones":
            return 1
        if uncertain == "ignore":
            return IGNORED_LABEL
        raise DatalistError(
            f"{where}: label {name!r} is uncertain ({v!r}); choose a policy with uncertain='zeros', 'ones' or 'ignore'."
        )
    raise DatalistError(f"{where}: label {name!r} must be 0 or 1 (or {uncertain_value} = uncertain), got {v!r}.")


def _check_uncertain(uncertain: str | None) -> None:
    if uncertain is not None and uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be None or one of {UNCERTAIN_POLICIES}, got {uncertain!r}.")


def _multilabel_from_lists(
    raw: list[Any], class_names: Sequence[str] | None, wheres: list[str], uncertain: str | None, uncertain_value: int
) -> tuple[list[list[int]], list[str]]:
    """Multi-hot labels from per-item lists: finding names (``["Effusion"]``, ``[]`` = none) or 0/1 vectors."""
    kinds = set()
    for v, w in zip(raw, wheres):
        if not isinstance(v, (list, tuple)):
            raise DatalistError(f"{w}: label {v!r} is not a list, but other items hold label lists (multi-label).")
        for e in v:
            kinds.add("name" if isinstance(e, str) else "value")
    if kinds == {"name", "value"}:
        raise DatalistError(
            f"{wheres[0]}..: label lists mix finding names and 0/1 values; use one form (names of the positive "
            "findings, or one 0/1 value per class)."
        )
    if kinds == {"value"}:  # 0/1 vectors, one value per class
        sizes = {len(v) for v in raw}
        if class_names is not None:
            names = [str(c) for c in class_names]
        elif len(sizes) == 1:
            names = [f"class_{i}" for i in range(sizes.pop())]
        else:
            raise DatalistError(f"{wheres[0]}..: 0/1 label vectors have different lengths {sorted(sizes)}.")
        out = []
        for v, w in zip(raw, wheres):
            if len(v) != len(names):
                raise DatalistError(f"{w}: label vector {list(v)} has {len(v)} values, expected one per class {names}.")
            out.append([_multilabel_value(e, w, n, uncertain, uncertain_value) for e, n in zip(v, names)])
        return out, names
    names = (
        [str(c) for c in class_names] if class_names is not None else sorted({str(e).strip() for v in raw for e in v})
    )
    if not names:
        raise DatalistError(f"{wheres[0]}..: every label list is empty: no finding names to learn.")
    out = []
    for v, w in zip(raw, wheres):
        row = [0] * len(names)
        for e in v:
            s = str(e).strip()
            if s not in names:
                raise DatalistError(f"{w}: unknown finding {e!r}; known findings: {names}.")
            row[names.index(s)] = 1
        out.append(row)
    return out, names


def _base_items(
    rows: list[dict[str, Any]],
    wheres: list[str],
    base: Path,
    image_key: str,
    label_key: str | None,
    patient_key: str | None,
    allow_outside_root: bool,
    check_files: bool,
    label_cols: Sequence[str] | None,
) -> list[dict[str, Any]]:
    """One item per row: the resolved ``image`` (unique), ``patient_id`` and the other columns (labels follow)."""
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
        item = {k: v for k, v in row.items() if k not in (image_key, label_key, patient_key, *(label_cols or ()))}
        item["image"] = path
        if patient_key is not None:
            pid = row.get(patient_key)
            if pid is None or str(pid).strip() == "":
                raise DatalistError(f"{where}: empty {patient_key!r}.")
            item["patient_id"] = str(pid).strip()
        items.append(item)
    return items


def _set_class_labels(
    items: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    wheres: list[str],
    label_key: str,
    class_names: Sequence[str] | None,
) -> None:
    """Single-label items: ``label`` (class index) and ``class_name`` from the ``label_key`` value of each row."""
    missing = [w for r, w in zip(rows, wheres) if label_key not in r or r[label_key] is None]
    if missing:
        raise DatalistError(f"{missing[0]}: no {label_key!r} value.")
    for r, w in zip(rows, wheres):
        v = str(r[label_key]).strip()
        if v[:1] in "[(" and v[-1:] in "])":
            raise DatalistError(
                f"{w}: label {r[label_key]!r} looks like a multi-label vector, not a class; give one 0/1 column "
                "per finding (label_cols) or a JSON list."
            )
    labels, names = _labels([r[label_key] for r in rows], class_names, wheres)
    for item, lab in zip(items, labels):
        item["label"] = lab
        if names is not None:
            item["class_name"] = names[lab]


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
    label_cols: Sequence[str] | None = None,
    uncertain: str | None = None,
    uncertain_value: int = -1,
) -> list[dict[str, Any]]:
    items = _base_items(
        rows, wheres, base, image_key, label_key, patient_key, allow_outside_root, check_files, label_cols
    )
    if label_cols is not None:  # multi-label: one 0/1 column per finding
        for item, row, where in zip(items, rows, wheres):
            item["label"] = [
                _multilabel_value(row.get(c), where, str(c), uncertain, uncertain_value) for c in label_cols
            ]
        return items
    if label_key is not None and any(isinstance(r.get(label_key), (list, tuple)) for r in rows):
        labels_ml, _ = _multilabel_from_lists(
            [r.get(label_key) for r in rows], class_names, wheres, uncertain, uncertain_value
        )
        for item, lab in zip(items, labels_ml):
            item["label"] = lab
        return items
    if label_key is not None:
        _set_class_labels(items, rows, wheres, label_key, class_names)
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
    label_cols: Sequence[str] | None = None,
    uncertain: str | None = None,
    uncertain_value: int = -1,
    dicom_ids: bool = True,
) -> list[dict[str, Any]]:
    """Data list from a CSV with an image column, a label column and optionally a patient id column.

    Multi-label CSVs (NIH ChestX-ray14 / CheXpert style) have one 0/1 column per finding instead of ``label_col``:
    name them with ``label_cols`` (in class order), or leave ``label_cols`` None and give ``class_names``: when the
    CSV has no ``label_col`` column but one column per class name, those columns are used. Each item's ``label`` is
    then a list of 0/1 ints (multi-hot). Values are ``0``/``1`` (``0.0``/``1.0`` too); ``uncertain_value`` (``-1``,
    CheXpert's "uncertain") follows ``uncertain``: ``"zeros"`` (U-Zeros), ``"ones"`` (U-Ones) or ``"ignore"``
    (U-Ignore: the entry becomes :data:`IGNORED_LABEL` = -1, which the BCE/focal losses of
    :mod:`monai_transfer.losses.classification` leave out; the metrics refuse it, so use it for training data only);
    ``None`` raises on the first uncertain value. Blank cells raise.

    Relative image paths are resolved against ``root`` (default: the CSV's folder); a path that resolves outside
    it raises unless ``allow_outside_root``. Labels may be integers or class names: with ``class_names``, names
    (or indices) outside it raise; without, integer labels are kept and text labels are numbered in sorted order.
    Numbers that are equal are one label (``1``, ``1.0``, ``+1``); other text is compared as written.
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
        label_cols: multi-label: the 0/1 finding columns, in class order.
        uncertain: multi-label: policy for ``uncertain_value`` entries, ``"zeros"``/``"ones"``/``"ignore"`` (or None:
            raise).
        uncertain_value: the value that marks an uncertain finding; default -1.
        dicom_ids: fill ``patient_id`` (unless the list has it), ``study_uid``, ``series_uid`` from the headers of
            DICOM images (:func:`~monai_transfer.data.dicom_meta.add_dicom_ids`); default True.

    Returns:
        ``[{"image": absolute path, "label": int, "class_name"?: str, "patient_id"?: str, ...other columns}]``
        (multi-label: ``"label": [0, 1, ...]``).

    Raises:
        DatalistError: missing CSV or column, empty CSV, and per row: missing file, unknown/empty label, duplicate path,
            path outside the root, empty patient id.
    """
    path = Path(path)
    if not path.is_file():
        raise DatalistError(f"CSV data list '{path}' does not exist.")
    rows, cols = _read_csv_rows(path)
    _check_uncertain(uncertain)
    label_cols, label_col = _csv_label_columns(path, cols, label_col, label_cols, class_names)
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
    cols_used = (image_col, label_col, patient_col, class_names, allow_outside_root, check_files)
    items = _finish(
        rows, wheres, base, *cols_used, label_cols=label_cols, uncertain=uncertain, uncertain_value=uncertain_value
    )
    return _with_dicom_ids(items) if dicom_ids and check_files else items


def _csv_label_columns(
    path: Path,
    cols: list[str],
    label_col: str | None,
    label_cols: Sequence[str] | None,
    class_names: Sequence[str] | None,
) -> tuple[list[str] | None, str | None]:
    """``(label_cols, label_col)``: the multi-label 0/1 columns (given, or one column per class name when the CSV has
    no ``label_col``) and then no ``label_col``; checked against the CSV's columns and ``class_names``."""
    if (
        label_cols is None
        and class_names is not None
        and label_col not in cols
        and all(str(c) in cols for c in class_names)
    ):
        label_cols = [str(c) for c in class_names]  # multi-label: one column per class
    if label_cols is not None:
        label_cols = [str(c) for c in label_cols]
        if class_names is not None and len(class_names) != len(label_cols):
            raise DatalistError(
                f"CSV '{path}': {len(label_cols)} label columns {label_cols} but {len(class_names)} class names "
                f"{list(class_names)}."
            )
        absent_labels = [c for c in label_cols if c not in cols]
        if absent_labels:
            raise DatalistError(f"CSV '{path}' has no label column(s) {absent_labels}; columns are {cols}.")
        label_col = None
    return label_cols, label_col


def _read_csv_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows and columns of a UTF-8 CSV; encoding and CSV syntax errors name the file and the line."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatalistError(f"CSV data list '{path}' cannot be read ({e}).") from e
    body = raw[len(codecs.BOM_UTF8) :] if raw.startswith(codecs.BOM_UTF8) else raw
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        line = body.count(b"\n", 0, e.start) + 1
        column = e.start - (body.rfind(b"\n", 0, e.start) + 1) + 1
        raise DatalistError(
            f"'{path}' line {line}: not valid UTF-8 (byte 0x{body[e.start]:02x} at column {column}); save the CSV as "
            "UTF-8 (a spreadsheet's 'CSV UTF-8' format)."
        ) from e
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        cols = list(reader.fieldnames or [])
        rows = [dict(r) for r in reader]
    except csv.Error as e:
        line = reader.reader.line_num  # DictReader's own line_num is only updated after a good row
        raise DatalistError(f"'{path}' line {line}: not a valid CSV row ({e}).") from e
    return rows, cols


def datalist_from_json(
    path: str | os.PathLike,
    key: str = "training",
    root: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    allow_outside_root: bool = False,
    check_files: bool = True,
    uncertain: str | None = None,
    uncertain_value: int = -1,
    dicom_ids: bool = True,
) -> list[dict[str, Any]]:
    """Data list from MONAI's datalist JSON (``{"training": [{"image": ..., "label": ...}]}``) or a plain list.

    Unlike MONAI's ``load_decathlon_datalist``, a string ``label`` is a class name here (not a path), and items
    are validated as in :func:`datalist_from_csv` (paths resolved against ``root`` or the JSON's folder; a
    ``patient_id`` entry is kept).

    Multi-label: a ``label`` that is a list holds either the names of the positive findings (``["Effusion",
    "Edema"]``, ``[]`` for none; class order from ``class_names``, else sorted names) or one 0/1 value per class
    (``[1, 0, 1]``, with ``uncertain_value`` following ``uncertain``); the item's ``label`` becomes a multi-hot list.
    A list label is never turned into a class name.

    Args:
        path: the JSON file.
        key: section of a MONAI datalist, default ``"training"`` (ignored for a plain list).
        root, class_names, allow_outside_root, check_files, uncertain, uncertain_value, dicom_ids: see
            :func:`datalist_from_csv`.

    Raises:
        DatalistError: unreadable JSON, missing section, non-dict entries, and the per-item errors of the CSV reader.
    """
    path = Path(path)
    _check_uncertain(uncertain)
    rows = _json_rows(path, key)
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
        uncertain=uncertain,
        uncertain_value=uncertain_value,
    )
    return _with_dicom_ids(items) if dicom_ids and check_files else items


def _json_rows(path: Path, key: str) -> list[Mapping[str, Any]]:
    """The items of a JSON data list (section ``key`` of a MONAI datalist, or a plain list), each an object."""
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
    return rows


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


def infer_task_mode(items: Sequence[Mapping[str, Any]], num_classes: int | None = None, key: str = "label") -> str:
    """The task mode of a labelled data list: ``"multilabel"``, ``"binary"`` or ``"multiclass"`` (the xray bundle's
    ``mode`` id).

    A thin wrapper of :func:`monai_transfer.utils.task.derive_task` (the project's one derivation) on the items'
    labels: ``"multilabel"`` when labels are vectors (lists/arrays, as :func:`datalist_from_csv` with ``label_cols``
    and :func:`datalist_from_json` with list labels produce), else ``"binary"`` for 2 classes and ``"multiclass"``
    for more. The number of classes is ``num_classes`` when given (the bundle's ``len(class_names)``), else the
    number of distinct labels.

    Raises:
        DatalistError: an empty list, or a mix of vector and scalar labels.
    """
    labels = [x.get(key) for x in items if isinstance(x, Mapping) and x.get(key) is not None]
    if not labels:
        raise DatalistError(f"cannot infer the task mode: no item has a {key!r}.")
    try:
        return derive_task(labels=labels, num_classes=num_classes).mode.value
    except ValueError as e:
        raise DatalistError(str(e)) from e


def list_image_files(
    root: str | os.PathLike, extensions: Sequence[str] | None = None, recursive: bool = True
) -> list[Path]:
    """Every file under ``root`` ending in ``extensions``: the project's one listing of an unlabelled image folder
    (``python -m monai_transfer.evaluate``, the ``datalist`` of the bundles' ``inference.json``).

    Hidden files and folders (``.name``) are skipped. Symbolic links to folders are followed (their files are listed
    under the link's path); a link back to a folder already listed (a loop, or a second link to the same folder) is
    not entered again, with a WARNING naming it. Broken symbolic links with an image name (dangling, or a link loop)
    are listed too, so that the caller reports them as failed cases instead of dropping them silently; other broken
    links are named in a WARNING.

    Args:
        root: the folder.
        extensions: accepted file endings (case-insensitive); default :data:`DEFAULT_EXTENSIONS`.
        recursive: search sub-folders too.

    Returns:
        the files, sorted by their path relative to ``root``.
    """
    root = Path(root)
    exts = tuple(e.lower() for e in (extensions if extensions is not None else DEFAULT_EXTENSIONS))
    found: list[Path] = []
    seen: dict[tuple[int, int], Path] = {}

    def visit(folder: Path) -> None:
        st = folder.stat()
        if (st.st_dev, st.st_ino) in seen:
            logger.warning(
                f"{folder}: symbolic link to the folder {seen[(st.st_dev, st.st_ino)]}, which is already listed (a "
                "link loop or a second link to it): not entered again"
            )
            return
        seen[(st.st_dev, st.st_ino)] = folder
        try:
            entries = sorted(folder.iterdir())
        except OSError as e:  # e.g. no permission: named, not silently empty
            logger.warning(f"cannot list the folder {folder} ({e}): its files are left out")
            return
        for p in entries:
            if p.name.startswith("."):
                continue
            if p.is_dir():  # follows symbolic links
                if recursive:
                    visit(p)
            elif p.is_file() or p.is_symlink():
                if p.name.lower().endswith(exts):
                    found.append(p)  # a broken link too: the caller names it as a failed case
                elif not p.exists():
                    logger.warning(f"{p}: broken symbolic link (dangling or a loop), left out")

    visit(root)
    return sorted(found, key=lambda q: q.relative_to(root).as_posix())


def inference_datalist(root: str | os.PathLike, extensions: Sequence[str] | None = None) -> list[dict[str, str]]:
    """``[{"image": path}, ...]`` for every image under ``root``, sub-folders included: the ``datalist`` of the
    bundles' ``inference.json`` (``--input_dir``), listed as :func:`list_image_files` lists it for
    ``python -m monai_transfer.evaluate``.

    Args:
        root: the input folder.
        extensions: accepted file endings (case-insensitive); default :data:`DEFAULT_EXTENSIONS`.

    Raises:
        DatalistError: ``root`` is not a folder, or holds no file with one of ``extensions`` (an inference run
            with nothing to predict would otherwise end without a ``predictions.csv`` and without an error).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatalistError(f"input folder {root} does not exist or is not a folder")
    exts = list(extensions if extensions is not None else DEFAULT_EXTENSIONS)
    files = list_image_files(root, exts, recursive=True)
    if not files:
        shown = ", ".join(exts[:8]) + (", ..." if len(exts) > 8 else "")
        raise DatalistError(f"input folder {root} holds no image file ({shown}), sub-folders included")
    return [{"image": str(p)} for p in files]
