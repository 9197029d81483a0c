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
"""Cases and labels of ``python -m monai_transfer.evaluate``: the folder listing, the labels CSV, the result records."""

from __future__ import annotations

import csv
import errno
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monai_transfer.data.datalist import DEFAULT_EXTENSIONS, list_image_files
from monai_transfer.transforms.io.array import NIFTI_EXTENSIONS
from monai_transfer.utils.task import as_task

__all__ = [
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_FAILURES",
    "VOLUME_EXTENSIONS",
    "IMAGE_2D_EXTENSIONS",
    "EvaluationUsageError",
    "CaseFailure",
    "CasePrediction",
    "EvaluationResult",
    "list_cases",
    "read_labels_csv",
    "LABEL_LIST_SEPARATORS",
    "NO_FINDING",
]

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_FAILURES = 2

#: files a volume bundle evaluates (the project's NIfTI endings).
VOLUME_EXTENSIONS = tuple(NIFTI_EXTENSIONS)
#: files a 2D bundle evaluates: the image endings of :func:`monai_transfer.data.datalist.datalist_from_folder`.
IMAGE_2D_EXTENSIONS = tuple(DEFAULT_EXTENSIONS)
#: separators of the finding names in the ``label`` cell of a multi-label labels CSV (``Effusion;Mass``).
LABEL_LIST_SEPARATORS = (";", "|")
#: the ``label`` cell of a multi-label case without any finding (unless it is one of the bundle's class names).
NO_FINDING = "none"


class EvaluationUsageError(ValueError):
    """A usage or configuration error (missing bundle, checkpoint or images, bad argument): exit code 1."""


@dataclass
class CaseFailure:
    """One case that could not be evaluated.

    Attributes:
        case: the case's name (path relative to ``--images``, or the labels-CSV entry of a missing file).
        path: the file, when there is one ("" for a label whose file is missing).
        stage: ``"labels"``, ``"read"``, ``"dimensions"``, ``"empty"``, ``"slicing"`` or ``"inference"``.
        reason: what went wrong, in words.
    """

    case: str
    path: str
    stage: str
    reason: str


@dataclass
class CasePrediction:
    """The evaluated probability of one case."""

    case_id: str
    path: str
    probs: np.ndarray
    label: int | np.ndarray | None = None  # a 0/1 vector (one entry per label) for a multi-label bundle
    n_slices: int | None = None


@dataclass
class EvaluationResult:
    """What :func:`evaluate_bundle` did.

    Attributes:
        predictions: one per evaluated case, in case order.
        failures: one per bad case, in the order found.
        files: name -> path of the written files.
        exit_code: 0, 1 or 2 (see the module docstring).
    """

    predictions: list[CasePrediction] = field(default_factory=list)
    failures: list[CaseFailure] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    exit_code: int = EXIT_OK


class _CaseError(Exception):
    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


def list_cases(images_dir: str | os.PathLike, extensions: Sequence[str] = VOLUME_EXTENSIONS) -> list[Path]:
    """Every file under ``images_dir`` (recursively, hidden files and folders skipped) ending in ``extensions``,
    broken symbolic links included: :func:`monai_transfer.data.datalist.list_image_files`.

    Returns:
        the files, sorted by their path relative to ``images_dir``.
    """
    return list_image_files(images_dir, extensions, recursive=True)


def _display(text: str) -> str:
    """``text`` with the undecodable bytes of a non-UTF-8 file name (surrogate escapes) written as ``\\xNN``."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeError:  # a lone surrogate that is not a surrogate escape
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _resolved(path: Path) -> Path:
    """``path.resolve()``, or the absolute path where it cannot be resolved (a symbolic link loop)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def _broken_link(path: Path) -> str | None:
    """Why ``path`` cannot be opened when it is a broken symbolic link (dangling, or a loop); None otherwise."""
    if path.exists() or not path.is_symlink():
        return None
    target = Path(os.readlink(path))
    target = target if target.is_absolute() else path.parent / target
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop as RuntimeError
        return f"symbolic link loop: {_display(str(path))} -> {_display(str(target))}"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"symbolic link loop: {_display(str(path))} -> {_display(str(target))}"
    return f"dangling symbolic link to {_display(str(target))} (the target does not exist)"


def _parse_label(text: str, class_names: Sequence[str]) -> int:
    value = text.strip()
    if not value:
        raise _CaseError("labels", "label missing (empty 'label' cell in the labels CSV)")
    try:
        num = float(value)
    except ValueError:
        num = None
    if num is not None:
        if not num.is_integer() or not 0 <= num < len(class_names):
            raise _CaseError("labels", f"label {value!r} is not a class index in 0..{len(class_names) - 1}")
        return int(num)
    k = _class_index(value, class_names)
    if k is None:
        raise _CaseError("labels", f"unknown class name {value!r} (classes: {list(class_names)})")
    return k


def _match_rows(
    reader: csv.DictReader, path: Path, root: Path, cases: Sequence[Path]
) -> tuple[dict[Path, list[tuple[int, dict[str, str]]]], list[CaseFailure]]:
    """``{case: [(CSV line, row), ...]}`` and the rows that match no case."""
    by_path = {_resolved(c): c for c in cases}
    by_name: dict[str, list[Path]] = {}
    for c in cases:
        by_name.setdefault(c.name, []).append(c)
    rows: dict[Path, list[tuple[int, dict[str, str]]]] = {}
    failures: list[CaseFailure] = []
    for line, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "") for k, v in raw.items()}
        entry = row.get("image", "").strip()
        if not entry:
            failures.append(CaseFailure(f"{path.name}:{line}", "", "labels", "row with an empty 'image' cell"))
            continue
        p = Path(entry)
        target = by_path.get(_resolved(p if p.is_absolute() else root / p))
        if target is None and len(by_name.get(p.name, [])) == 1:
            target = by_name[p.name][0]
        if target is None:
            failures.append(
                CaseFailure(
                    entry, "", "labels", f"labels CSV row {line} names a file that is not among the --images cases"
                )
            )
            continue
        rows.setdefault(target, []).append((line, row))
    return rows, failures


def _class_index(name: str, class_names: Sequence[str]) -> int | None:
    """The index of a class name (exact, then case-insensitive); None when unknown."""
    if name in class_names:
        return list(class_names).index(name)
    lowered = [c.lower() for c in class_names]
    return lowered.index(name.lower()) if name.lower() in lowered else None


def _parse_label_list(text: str, class_names: Sequence[str]) -> np.ndarray:
    """A multi-label ``label`` cell: finding names separated by ``;`` or ``|`` (``none``: no finding)."""
    value = text.strip()
    if not value:
        raise _CaseError("labels", "label missing (empty 'label' cell in the labels CSV; write 'none' for no finding)")
    y = np.zeros(len(class_names), dtype=np.int64)
    if value.lower() == NO_FINDING and _class_index(value, class_names) is None:
        return y
    for sep in LABEL_LIST_SEPARATORS[1:]:
        value = value.replace(sep, LABEL_LIST_SEPARATORS[0])
    for name in (v.strip() for v in value.split(LABEL_LIST_SEPARATORS[0])):
        k = _class_index(name, class_names) if name else None
        if k is None:
            raise _CaseError(
                "labels", f"unknown finding {name!r} in label {text.strip()!r} (labels: {list(class_names)})"
            )
        y[k] = 1
    return y


def _parse_label_columns(row: dict[str, str], columns: Sequence[str]) -> np.ndarray:
    """A multi-label row with one 0/1 column per label (``columns``, in the bundle's class order)."""
    y = np.zeros(len(columns), dtype=np.int64)
    for k, col in enumerate(columns):
        value = row.get(col, "").strip()
        try:
            num = float(value) if value else None
        except ValueError:
            num = None
        if num not in (0.0, 1.0):
            what = "empty" if not value else ("uncertain (-1)" if num == -1.0 else f"{value!r}")
            raise _CaseError("labels", f"label {col!r} is {what}; evaluation needs 0 or 1 for every label")
        y[k] = int(num)  # type: ignore[arg-type]
    return y


def _label_columns(fields: Sequence[str], class_names: Sequence[str]) -> list[str] | None:
    """The CSV columns of the labels, one per class name (exact, then case-insensitive); None when any is missing."""
    lowered = {f.lower(): f for f in fields}
    cols = [c if c in fields else lowered.get(c.lower()) for c in class_names]
    return None if any(c is None for c in cols) else cols  # type: ignore[return-value]


def _case_label(
    entries: list[tuple[int, dict[str, str]]] | None,
    columns: list[str] | None,
    multilabel: bool,
    class_names: Sequence[str],
) -> int | np.ndarray:
    """The label of one case from its CSV row(s): 0/1 label ``columns``, a findings list or a class.

    Raises:
        _CaseError: no row, several rows, or a label that cannot be parsed (the reason names the row).
    """
    if not entries:
        raise _CaseError("labels", "label missing: no row for this file in the CSV")
    if len(entries) > 1:
        lines = ", ".join(str(n) for n, _ in entries)
        raise _CaseError("labels", f"listed {len(entries)} times (rows {lines})")
    line, row = entries[0]
    try:
        if columns is not None:
            return _parse_label_columns(row, columns)
        if multilabel:
            return _parse_label_list(row.get("label", ""), class_names)
        return _parse_label(row.get("label", ""), class_names)
    except _CaseError as e:
        raise _CaseError(e.stage, f"row {line}: {e.reason}") from e


def read_labels_csv(
    path: str | os.PathLike,
    images_dir: str | os.PathLike,
    cases: Sequence[Path],
    class_names: Sequence[str],
    mode: str = "multiclass",
) -> tuple[dict[Path, int | np.ndarray], list[CaseFailure]]:
    """Read a labels CSV and match its rows to ``cases``.

    ``image`` is a path relative to ``images_dir`` (or absolute); when that is not one of the cases, a case with the
    same file name is used if exactly one exists (so a bundle's ``labels.csv`` written as ``volumes/x.nii.gz`` works
    with ``--images .../volumes``).

    Binary/multi-class (``mode`` ``"binary"`` or ``"multiclass"``): a ``label`` column with a class index or a class
    name (exact, then case-insensitive). Multi-label (``mode="multilabel"``), either format:

    - one ``0``/``1`` column per label, named as the bundle's class names (the training CSV of
      :func:`~monai_transfer.data.datalist.datalist_from_csv`; other columns such as ``split`` are ignored; ``-1``
      (uncertain) or an empty cell is a failure of that case): used when every class name is a column;
    - else a ``label`` column listing the case's findings, separated by ``;`` or ``|`` (``Effusion;Mass``), or
      ``none`` for a case without any finding.

    Returns:
        ``{case path: label}`` (an ``int``, or for multi-label a 0/1 ``int64`` vector in class order) and the
        failures: a label for a file that is not among the cases, an empty label, an unknown class name or
        out-of-range index, a case listed twice, and a case with no label row.

    Raises:
        EvaluationUsageError: the CSV cannot be read or lacks the ``image`` and label column(s).
    """
    path = Path(path)
    root = _resolved(Path(images_dir))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise EvaluationUsageError(f"--labels {path}: cannot read the file ({e})") from e
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip() for f in (reader.fieldnames or [])]
    multilabel = as_task(mode).is_multilabel
    columns = _label_columns(fields, class_names) if multilabel else None
    if "image" not in fields or ("label" not in fields and columns is None):
        need = "'label' (or one 0/1 column per label: " + str(list(class_names)) + ")" if multilabel else ""
        raise EvaluationUsageError(
            f"--labels {path}: needs the columns 'image' and {need or repr('label')}, found {fields}"
        )
    rows, failures = _match_rows(reader, path, root, cases)
    labels: dict[Path, int | np.ndarray] = {}
    for case in cases:
        name = _display(case.relative_to(images_dir).as_posix())
        try:
            labels[case] = _case_label(rows.get(case), columns, multilabel, class_names)
        except _CaseError as e:
            failures.append(CaseFailure(name, str(case), e.stage, e.reason))
    return labels, failures
