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
]

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_FAILURES = 2

#: files a volume bundle evaluates (the project's NIfTI endings).
VOLUME_EXTENSIONS = tuple(NIFTI_EXTENSIONS)
#: files a 2D bundle evaluates: the image endings of :func:`monai_transfer.data.datalist.datalist_from_folder`.
IMAGE_2D_EXTENSIONS = tuple(DEFAULT_EXTENSIONS)


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
    label: int | None = None
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


def _strip_ext(name: str) -> str:
    low = name.lower()
    for ext in sorted(IMAGE_2D_EXTENSIONS, key=len, reverse=True):  # ".nii.gz" before ".nii"
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


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
    if value in class_names:
        return list(class_names).index(value)
    lowered = [c.lower() for c in class_names]
    if value.lower() in lowered:
        return lowered.index(value.lower())
    raise _CaseError("labels", f"unknown class name {value!r} (classes: {list(class_names)})")


def _match_rows(
    reader: csv.DictReader, path: Path, root: Path, cases: Sequence[Path]
) -> tuple[dict[Path, list[tuple[int, str]]], list[CaseFailure]]:
    """``{case: [(CSV line, label text), ...]}`` and the rows that match no case."""
    by_path = {_resolved(c): c for c in cases}
    by_name: dict[str, list[Path]] = {}
    for c in cases:
        by_name.setdefault(c.name, []).append(c)
    rows: dict[Path, list[tuple[int, str]]] = {}
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
        rows.setdefault(target, []).append((line, row.get("label", "")))
    return rows, failures


def read_labels_csv(
    path: str | os.PathLike, images_dir: str | os.PathLike, cases: Sequence[Path], class_names: Sequence[str]
) -> tuple[dict[Path, int], list[CaseFailure]]:
    """Read a labels CSV (columns ``image`` and ``label``) and match its rows to ``cases``.

    ``image`` is a path relative to ``images_dir`` (or absolute); when that is not one of the cases, a case with the
    same file name is used if exactly one exists (so a bundle's ``labels.csv`` written as ``volumes/x.nii.gz`` works
    with ``--images .../volumes``). ``label`` is a class index or a class name (exact, then case-insensitive).

    Returns:
        ``{case path: label}`` and the failures: a label for a file that is not among the cases, an empty label, an
        unknown class name or out-of-range index, a case listed twice, and a case with no label row.

    Raises:
        EvaluationUsageError: the CSV cannot be read or lacks the ``image``/``label`` columns.
    """
    path = Path(path)
    root = _resolved(Path(images_dir))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise EvaluationUsageError(f"--labels {path}: cannot read the file ({e})") from e
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip() for f in (reader.fieldnames or [])]
    if "image" not in fields or "label" not in fields:
        raise EvaluationUsageError(f"--labels {path}: needs the columns 'image' and 'label', found {fields}")
    rows, failures = _match_rows(reader, path, root, cases)
    labels: dict[Path, int] = {}
    for case in cases:
        name = _display(case.relative_to(images_dir).as_posix())
        entries = rows.get(case)
        if not entries:
            failures.append(CaseFailure(name, str(case), "labels", "label missing: no row for this file in the CSV"))
            continue
        if len(entries) > 1:
            lines = ", ".join(str(n) for n, _ in entries)
            failures.append(CaseFailure(name, str(case), "labels", f"listed {len(entries)} times (rows {lines})"))
            continue
        try:
            labels[case] = _parse_label(entries[0][1], class_names)
        except _CaseError as e:
            failures.append(CaseFailure(name, str(case), e.stage, f"row {entries[0][0]}: {e.reason}"))
    return labels, failures
