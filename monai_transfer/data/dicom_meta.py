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
"""Patient, study and series identity of DICOM data-list items, read from the headers (no pixel data).

A folder of DICOM files says nothing about which films belong to one patient, but every header does
(``PatientID``, ``StudyInstanceUID``, ``SeriesInstanceUID``). :func:`add_dicom_ids` fills those into the items of a
data list so that :func:`~monai_transfer.data.split_datalist` (``group_key="patient_id"``) never puts two films of one
patient on both sides of a split.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_transfer.transforms.io.array import DICOM_EXTENSIONS, is_dicom_file
from monai_transfer.utils import deps

__all__ = ["DICOM_ID_KEYS", "PATIENT_ID_SOURCE_KEY", "read_dicom_ids", "add_dicom_ids", "summarize_dicom_ids"]

#: item key -> DICOM keyword filled by :func:`add_dicom_ids`
DICOM_ID_KEYS = {"patient_id": "PatientID", "study_uid": "StudyInstanceUID", "series_uid": "SeriesInstanceUID"}
#: item key that records where ``patient_id`` came from: ``"list"`` (CSV/JSON column), ``"dicom"`` (header) or
#: ``"file"`` (a DICOM without PatientID: the item's own path, so it is a group of its own) or ``"not_dicom"``
PATIENT_ID_SOURCE_KEY = "patient_id_source"

logger = logging.getLogger(__name__)


def _dicom_file_of(path: Path) -> Path | None:
    """The DICOM file whose header describes ``path`` (itself, or the first file of a series folder), else None."""
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith("."))
        return (
            files[0]
            if files and all(f.name.lower().endswith(DICOM_EXTENSIONS) or is_dicom_file(f) for f in files)
            else None
        )
    if not path.is_file():
        return None
    return path if path.name.lower().endswith(DICOM_EXTENSIONS) or is_dicom_file(path) else None


def read_dicom_ids(path: str | os.PathLike) -> dict[str, str] | None:
    """Patient/study/series ids of a DICOM file or series folder, read without the pixel data.

    Args:
        path: a DICOM file (``.dcm``/``.dicom`` or the ``DICM`` marker) or a folder holding one series.

    Returns:
        ``{"patient_id", "study_uid", "series_uid"}`` (empty string where the header lacks the element), or None when
        ``path`` is not DICOM.

    Raises:
        ValueError: the file looks like DICOM but its header cannot be read; the message names the file.
    """
    f = _dicom_file_of(Path(path))
    if f is None:
        return None
    pydicom = deps.pydicom
    try:
        with warnings.catch_warnings():  # odd values elsewhere in the header are the loader's business
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(
                str(f), stop_before_pixels=True, force=True, specific_tags=list(DICOM_ID_KEYS.values())
            )
    except Exception as e:  # pydicom raises several types for broken headers
        raise ValueError(f"cannot read the DICOM header of '{f}': {type(e).__name__}: {e}") from e
    return {k: str(ds.get(tag, "") or "").strip() for k, tag in DICOM_ID_KEYS.items()}


def add_dicom_ids(items: Sequence[Mapping[str, Any]], image_key: str = "image") -> list[dict[str, Any]]:
    """Copies of ``items`` with ``patient_id``, ``study_uid``, ``series_uid`` from the DICOM headers.

    Only when at least one item is DICOM does anything change; then every item gets the three keys and
    ``patient_id_source`` (so that batches collate): a ``patient_id`` already in the item (a CSV/JSON column) is kept
    (source ``"list"``); otherwise the header's PatientID is used (``"dicom"``); a DICOM without PatientID, or a
    non-DICOM file, falls back to its own image path (source ``"file"``, or ``"not_dicom"``), i.e. it is a group of
    its own, as before.
    UIDs missing from a header (or non-DICOM items) are empty strings.

    Args:
        items: data list.
        image_key: key of the image path, default ``"image"``.

    Returns:
        new item dicts (the input is not changed).

    A DICOM whose header cannot be read is logged (naming the file) and treated like one without PatientID (source
    ``"unreadable_header"``); loading it later raises the loader's error.
    """
    ids: list[dict[str, str] | None] = []
    broken: set[int] = set()
    for i, it in enumerate(items):
        try:
            ids.append(read_dicom_ids(it[image_key]))
        except ValueError as e:  # the loader reports the file again when it is used; here it is its own group
            logger.warning("%s; it is a group of its own", e)
            ids.append({k: "" for k in DICOM_ID_KEYS})
            broken.add(i)
    if not any(i is not None for i in ids):
        return [dict(it) for it in items]
    out = []
    for i, (it, meta) in enumerate(zip(items, ids)):
        new = dict(it)
        is_dicom = meta is not None
        meta = meta or {k: "" for k in DICOM_ID_KEYS}
        listed = new.get("patient_id")
        if listed is not None and str(listed).strip() != "":
            new[PATIENT_ID_SOURCE_KEY] = "list"
        elif meta["patient_id"]:
            new["patient_id"] = meta["patient_id"]
            new[PATIENT_ID_SOURCE_KEY] = "dicom"
        else:
            new["patient_id"] = str(new[image_key])
            new[PATIENT_ID_SOURCE_KEY] = ("unreadable_header" if i in broken else "file") if is_dicom else "not_dicom"
        for k in ("study_uid", "series_uid"):
            new.setdefault(k, meta[k])
        out.append(new)
    return out


def summarize_dicom_ids(items: Sequence[Mapping[str, Any]]) -> dict[str, int] | None:
    """Counts for a data description: items, patients, and where ``patient_id`` came from; None without DICOM ids."""
    if not any(PATIENT_ID_SOURCE_KEY in it for it in items):
        return None
    src = [str(it.get(PATIENT_ID_SOURCE_KEY, "")) for it in items]
    return {
        "items": len(items),
        "patients": len({str(it.get("patient_id")) for it in items}),
        "studies": len({str(it.get("study_uid")) for it in items if it.get("study_uid")}),
        "series": len({str(it.get("series_uid")) for it in items if it.get("series_uid")}),
        "patient_id_from_dicom": src.count("dicom"),
        "patient_id_from_list": src.count("list"),
        "patient_id_fallback_to_file": src.count("file"),
        "unreadable_header": src.count("unreadable_header"),
        "not_dicom": src.count("not_dicom"),
    }
