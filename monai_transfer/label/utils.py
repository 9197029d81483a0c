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
"""Pure-Python helpers of the MONAI Label integration: bundle discovery, class names and image-level labels.

Nothing here imports MONAI Label, so these run (and are tested) in the core environment.

Image-level label files
-----------------------
MONAI Label keeps labels as files in its datastore, ``<studies>/labels/final/<image id><ext>``. For the
classification bundles each such file holds the class of its whole image, as JSON (suffix ``.label.json``)::

    {"label": "pneumonia"}

The value may be a class name of the bundle (case-insensitive, from ``channel_def`` in ``metadata.json``) or its
integer index. :func:`parse_image_label` also accepts a bare JSON string/integer or a plain-text file holding the
name or index, so labels saved by other clients still read.

A multi-label bundle (``mode`` ``"multilabel"``, e.g. a 14-finding chest X-ray run folder) takes the findings present
on the image instead (:func:`parse_image_labels`)::

    {"label": ["effusion", "edema"]}                  names of the findings present ([] for none)
    {"label": [0, 0, 1, 0, ...]}                      one 0/1 value per finding, in class order
    {"label": {"atelectasis": 0, "effusion": 1, ...}}  every finding with its 0/1 value
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_transfer.utils.io import atomic_write_json

__all__ = [
    "LABEL_FILE_SUFFIX",
    "INFER_CONFIGS",
    "parse_model_names",
    "resolve_bundles_dir",
    "read_class_names",
    "is_classification_bundle",
    "find_classification_bundles",
    "parse_image_label",
    "parse_image_labels",
    "bundle_task_mode",
    "write_image_label",
]

#: suffix of the image-level label files in the MONAI Label datastore (``<image id>.label.json``).
LABEL_FILE_SUFFIX = ".label.json"
#: inference config names MONAI Label's ``BundleInferTask`` reads, in its order.
INFER_CONFIGS = ("inference.json", "inference.yaml")


def parse_model_names(value: str | Sequence[str] | None) -> list[str] | None:
    """Parse the ``--conf models`` value of ``monailabel start_server``.

    Args:
        value: ``"xray,volume"`` (comma separated), a sequence of names, or ``None``/``""``/``"all"`` for every bundle.

    Returns:
        The names in order without duplicates, or ``None`` meaning "all bundles found".
    """
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        name = str(item).strip()
        if name and name not in names:
            names.append(name)
    if not names or names == ["all"]:
        return None
    return names


def resolve_bundles_dir(app_dir: str | os.PathLike, conf: dict[str, str] | None = None) -> str:
    """Folder of the bundles a MONAI Label app serves.

    Args:
        app_dir: the app folder (``apps/monailabel`` of the repository).
        conf: the app's ``--conf`` settings.

    Returns:
        ``conf["bundles_dir"]``, else ``$MONAI_TRANSFER_BUNDLES_DIR``, else ``<app_dir>/../../bundles`` (the
        repository's ``bundles/``), as an absolute path.
    """
    value = (conf or {}).get("bundles_dir") or os.environ.get("MONAI_TRANSFER_BUNDLES_DIR")
    if value:
        return str(Path(value).expanduser().resolve())
    return str((Path(app_dir).resolve().parent.parent / "bundles").resolve())


def read_class_names(bundle_dir: str | os.PathLike) -> list[str]:
    """Class names of a classification bundle, ordered by output index.

    They come from ``configs/metadata.json``: the first entry of ``network_data_format.outputs`` and its
    ``channel_def`` (``{"0": "normal", "1": "pneumonia"}``).

    Args:
        bundle_dir: the bundle's root folder.

    Returns:
        ``[name_of_index_0, name_of_index_1, ...]``.

    Raises:
        FileNotFoundError: when ``configs/metadata.json`` is missing.
        ValueError: when the outputs or ``channel_def`` are missing, or its indices are not ``0..n-1``; the message
            names the file.
    """
    meta_file = Path(bundle_dir) / "configs" / "metadata.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"bundle metadata not found: {meta_file}")
    with open(meta_file, encoding="utf-8") as f:
        meta = json.load(f)
    outputs = meta.get("network_data_format", {}).get("outputs", {})
    if not isinstance(outputs, dict) or not outputs:
        raise ValueError(f"{meta_file}: 'network_data_format.outputs' is missing or empty.")
    key, pred = next(iter(outputs.items()))
    channel_def = pred.get("channel_def") if isinstance(pred, dict) else None
    if not isinstance(channel_def, dict) or not channel_def:
        raise ValueError(f"{meta_file}: output '{key}' has no 'channel_def' (index -> class), got {channel_def!r}.")
    try:
        by_index = {int(k): str(v) for k, v in channel_def.items()}
    except (TypeError, ValueError) as e:
        raise ValueError(f"{meta_file}: 'channel_def' keys must be integer indices, got {list(channel_def)}.") from e
    if sorted(by_index) != list(range(len(by_index))):
        raise ValueError(f"{meta_file}: 'channel_def' indices must be 0..{len(by_index) - 1}, got {sorted(by_index)}.")
    names = [by_index[i] for i in range(len(by_index))]
    if len({n.lower() for n in names}) != len(names):
        raise ValueError(f"{meta_file}: class names must be unique (case-insensitive), got {names}.")
    return names


def is_classification_bundle(bundle_dir: str | os.PathLike) -> bool:
    """Whether ``bundle_dir`` has an inference config and a ``metadata.json`` with class names."""
    configs = Path(bundle_dir) / "configs"
    if not any((configs / c).is_file() for c in INFER_CONFIGS):
        return False
    try:
        read_class_names(bundle_dir)
    except (OSError, ValueError):
        return False
    return True


def _is_path(name: str) -> bool:
    return "/" in name or os.sep in name or name.startswith(("~", "."))


def find_classification_bundles(bundles_dir: str | os.PathLike, names: Sequence[str] | None = None) -> dict[str, str]:
    """Classification bundles below ``bundles_dir`` (or named by path), by folder name.

    Args:
        bundles_dir: folder holding one sub-folder per bundle (the repository's ``bundles/``); not needed when every
            name is a path.
        names: bundles to serve, in order: folder names below ``bundles_dir``, or paths of bundle folders (anything
            with a ``/``, e.g. a training run folder ``runs/brain_mri``, served under its folder name); ``None``
            for every classification bundle of ``bundles_dir`` (sorted).

    Returns:
        ``{name: absolute bundle path}``.

    Raises:
        FileNotFoundError: when ``bundles_dir`` is not a folder (and is needed), a requested name is not a
            classification bundle there, or a requested path is not a classification bundle; the message lists the
            bundles that are.
        ValueError: when two requested bundle paths have the same folder name.
    """
    root = Path(bundles_dir)
    paths = {n for n in names or [] if _is_path(n)}
    served: dict[str, str] = {}
    for n in [n for n in names or [] if n in paths]:
        p = Path(n).expanduser()
        if not is_classification_bundle(p):
            raise FileNotFoundError(
                f"--conf models {n}: not a classification bundle (a bundle, e.g. a training run folder, needs "
                "configs/inference.json and configs/metadata.json with a channel_def)"
            )
        if p.resolve().name in served:
            raise ValueError(f"--conf models: two bundles named '{p.resolve().name}' ({served[p.resolve().name]}, {n})")
        served[p.resolve().name] = str(p.resolve())
    if names is not None and len(paths) == len(names):
        return served
    if not root.is_dir():
        raise FileNotFoundError(f"bundles folder not found: {root} (pass --conf bundles_dir /path/to/bundles)")
    found = {p.name: str(p.resolve()) for p in sorted(root.iterdir()) if p.is_dir() and is_classification_bundle(p)}
    if names is None:
        return found
    found.update(served)
    names = [Path(n).expanduser().resolve().name if n in paths else n for n in names]
    missing = [n for n in names if n not in found]
    if missing:
        raise FileNotFoundError(
            f"bundles {missing} not found in {root} (a bundle needs configs/inference.json and configs/metadata.json "
            f"with a channel_def); available: {sorted(found)}"
        )
    return {n: found[n] for n in names}


def _label_from_value(value: object, class_names: Sequence[str], source: str) -> int:
    if isinstance(value, dict):
        if "label" not in value:
            raise ValueError(f"{source}: image-level label JSON needs a 'label' key, got keys {sorted(value)}.")
        value = value["label"]
    if isinstance(value, (list, tuple, dict)):
        raise ValueError(
            f"{source}: {value!r} is a multi-label label (findings), but this bundle takes one class per image "
            f"(one of {list(class_names)}); finding lists train a bundle whose mode is 'multilabel'."
        )
    if isinstance(value, bool):
        raise ValueError(f"{source}: label must be a class name or index, got {value!r}.")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if not 0 <= value < len(class_names):
            raise ValueError(f"{source}: label index {value} out of range for classes {list(class_names)}.")
        return value
    if isinstance(value, str):
        text = value.strip()
        lowered = [c.lower() for c in class_names]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        if text.lstrip("-").isdigit():
            return _label_from_value(int(text), class_names, source)
        raise ValueError(f"{source}: unknown class {text!r}; expected one of {list(class_names)} or an index.")
    raise ValueError(f"{source}: label must be a class name or index, got {value!r}.")


def _findings_from_value(value: object, class_names: Sequence[str], source: str) -> list[int]:
    """A 0/1 vector (one entry per class) from a list of finding names, a 0/1 list or a ``{finding: 0/1}`` mapping."""
    names, lowered = list(class_names), [c.lower() for c in class_names]
    if isinstance(value, Mapping) and "label" in value:
        value = value["label"]
    example = f'{{"label": ["{names[0]}"]}}' if names else '{"label": ["<finding>"]}'
    if isinstance(value, Mapping):
        given = {str(k).strip().lower(): v for k, v in value.items()}
        unknown = sorted(k for k in given if k not in lowered)
        missing = [n for n, low in zip(names, lowered) if low not in given]
        if unknown or missing:
            raise ValueError(
                f"{source}: a {{finding: 0/1}} label needs every finding of {names} and no other; unknown {unknown}, "
                f"missing {missing}."
            )
        value = [given[low] for low in lowered]
    if not isinstance(value, (list, tuple)):
        raise ValueError(
            f"{source}: the bundle is multi-label (mode 'multilabel', findings {names}): a label lists the findings "
            f'present, e.g. {example} ({{"label": []}} for none), or gives one 0/1 value per finding; got {value!r}.'
        )
    if all(isinstance(e, str) for e in value):
        out = [0] * len(names)
        for e in value:
            if e.strip().lower() not in lowered:
                raise ValueError(f"{source}: unknown finding {e!r}; the bundle's findings are {names}.")
            out[lowered.index(e.strip().lower())] = 1
        return out
    if not all(isinstance(e, (int, float)) and not isinstance(e, bool) and e in (0, 1) for e in value):
        raise ValueError(
            f"{source}: label {list(value)} must be finding names or 0/1 values (one per finding of {names}), not a "
            "mix or other values."
        )
    if len(value) != len(names):
        raise ValueError(f"{source}: {len(value)} 0/1 values {list(value)} for the {len(names)} findings {names}.")
    return [int(e) for e in value]


def _read_label(source: str | os.PathLike, is_text: bool, example: str) -> tuple[Any, str]:
    """The decoded content of a label file (or text) and how to name it in errors."""
    if is_text:
        text, where = str(source), f"label text {str(source)[:80]!r}"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"label file not found: {path}")
        text, where = path.read_text(encoding="utf-8"), f"label file {path}"
    if not text.strip():
        raise ValueError(f"{where} is empty; expected e.g. {example}.")
    try:
        value: object = json.loads(text)
    except json.JSONDecodeError:
        value = text
    return value, where


def parse_image_label(source: str | os.PathLike, class_names: Sequence[str], is_text: bool = False) -> int:
    """Read an image-level label (file or text) as a class index.

    Accepted content: ``{"label": "pneumonia"}``, ``{"label": 1}``, a bare JSON ``"pneumonia"`` or ``1``, or plain
    text ``pneumonia`` / ``1``. Names match case-insensitively (MONAI Label lower-cases label names).

    Args:
        source: path of a label file, or the content itself when ``is_text`` is True.
        class_names: the bundle's class names ordered by index (:func:`read_class_names`).
        is_text: treat ``source`` as the content instead of a path.

    Returns:
        The class index.

    Raises:
        FileNotFoundError: when the label file does not exist.
        ValueError: when the content names no known class (or is a multi-label finding list); the message names the
            file (or text) and the classes.
    """
    example = f'{{"label": "{class_names[0]}"}}' if class_names else '{"label": "<class>"}'
    value, where = _read_label(source, is_text, example)
    return _label_from_value(value, class_names, where)


def parse_image_labels(source: str | os.PathLike, class_names: Sequence[str], is_text: bool = False) -> list[int]:
    """Read a multi-label image-level label (file or text) as a 0/1 vector, one entry per finding (class order).

    Accepted content (``"label"`` may also be left out, giving the value alone): the names of the findings present
    ``{"label": ["effusion", "edema"]}`` (``[]`` for none; case-insensitive), one 0/1 value per finding
    ``{"label": [0, 0, 1, ...]}``, or every finding with its value ``{"label": {"atelectasis": 0, "effusion": 1,
    ...}}``. A single class name or index is refused with an error naming the mode, so a label written for a
    one-class-per-image bundle never trains a multi-label one.

    Args:
        source: path of a label file, or the content itself when ``is_text`` is True.
        class_names: the bundle's findings ordered by output index (:func:`read_class_names`).
        is_text: treat ``source`` as the content instead of a path.

    Returns:
        ``[0, 1, ...]`` with ``len(class_names)`` entries.

    Raises:
        FileNotFoundError: when the label file does not exist.
        ValueError: an unknown finding, a vector of the wrong length or with values other than 0/1, a mapping missing
            a finding, or a single class; the message names the file (or text) and the findings.
    """
    example = f'{{"label": ["{class_names[0]}"]}}' if class_names else '{"label": ["<finding>"]}'
    value, where = _read_label(source, is_text, example)
    return _findings_from_value(value, class_names, where)


def bundle_task_mode(mode: object, class_names: Sequence[str]) -> str:
    """The task a classification bundle trains and serves, from the raw value of its top-level ``mode`` id.

    A literal ``"binary"``/``"multiclass"``/``"multilabel"`` (a training run folder's configs fix it) is the mode.
    Without one, or with an expression (``bundles/xray`` derives it from its data, and its ``inference.json`` from
    the class count), the mode is ``"binary"`` for 2 classes and ``"multiclass"`` for more, as ``inference.json``
    serves it: a bundle must fix ``"mode": "multilabel"`` to be trained and served as multi-label.

    The rules are :func:`monai_transfer.utils.task.derive_task`'s, the derivation of every other path (training data
    lists, cross-validation, evaluation, the infer task).

    Raises:
        ValueError: a literal that is not one of the three modes.
    """
    from monai_transfer.utils.task import derive_task, look_up_mode

    literal = isinstance(mode, str) and not mode.startswith(("$", "@", "%"))
    return derive_task(look_up_mode(mode, "bundle 'mode'") if literal else None, class_names=class_names).mode.value


def write_image_label(
    labels_dir: str | os.PathLike,
    image_id: str,
    label: str | int | Sequence[str | int] | Mapping[str, int],
    class_names: Sequence[str],
) -> Path:
    """Write ``<labels_dir>/<image_id>.label.json`` holding ``{"label": <class name>}`` (atomically).

    Use it to bulk-import labels into a MONAI Label datastore (``labels_dir = <studies>/labels/final``) before
    starting the server. For a multi-label bundle pass the findings present (a list of names, a 0/1 list or a
    ``{finding: 0/1}`` mapping, see :func:`parse_image_labels`); the file then holds ``{"label": [names present]}``.

    Args:
        labels_dir: target folder, created when missing.
        image_id: the datastore image id (file name without its extension).
        label: class name (case-insensitive) or index; multi-label: the findings, as above.
        class_names: the bundle's class names (:func:`read_class_names`).

    Returns:
        The written path.

    Raises:
        ValueError: when ``label`` is not a class of ``class_names`` (multi-label: not valid findings) or ``image_id``
            is empty or has a path separator.
    """
    if not image_id or "/" in image_id or os.sep in image_id:
        raise ValueError(f"image_id must be a plain file stem, got {image_id!r}.")
    where = f"label for image {image_id!r}"
    if isinstance(label, (list, tuple, Mapping)):
        value: str | list[str] = [n for n, v in zip(class_names, _findings_from_value(label, class_names, where)) if v]
    else:
        value = class_names[_label_from_value(label, class_names, where)]
    path = Path(labels_dir) / f"{image_id}{LABEL_FILE_SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, {"label": value})
