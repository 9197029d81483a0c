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
"""Scripted evaluation of a bundle on a folder of test cases: ``python -m monai_transfer.evaluate``.

Works for any bundle that follows the bundle contract of ``docs/ARCHITECTURE.md``; from ``configs/inference.json``
(and ``configs/metadata.json``) it reads only these ids:

- ``network_def`` (the network, weights from ``ckpt_path`` or ``--ckpt``), ``class_names`` (or the ``channel_def``
  of ``metadata.json``'s ``pred`` output);
- 2D bundles (``bundles/xray``): ``preprocessing`` (``{"image": path}`` -> ``{"image": (C, H, W)}``);
- volume bundles (``bundles/ct_slices``): ``volume_preprocessing`` (``{"image": path}`` -> volume dict),
  ``slicing`` (volume dict -> list of slice dicts with ``image``/``source_id``/``slice_index``) and
  ``aggregation`` (``"mean"``, ``"max"``, ``"topk_mean"`` pooled by
  :func:`~monai_transfer.data.volumes.aggregate_volume_probs` with ``k`` from ``aggregation_k`` when the bundle
  defines it; or a dict ``{"method": ..., "k": ...}``; or a callable ``(n_slices, K) -> (K,)``).

Cases are streamed: one case is loaded at a time; the slices of a volume (or the images of a 2D test set) go
through the network in batches. When ``slicing`` is a ``Compose``, the transforms after the one that splits the
volume into slices (resize, normalisation, ...) are applied batch by batch, so peak memory is about one volume,
its raw slices and one batch, whatever the number of cases.

Bad cases are reported by name (``failures.csv``, ``failures.json`` and the log); the run completes for the good
ones. Exit codes: 0 (every case evaluated, or failures with ``--tolerate-failures``), 1 (usage or environment
error: missing bundle, checkpoint or images, bad argument, an invalid ``inference.json``/``metadata.json`` or
``threshold.json``, a checkpoint with NaN/inf weights, or a report file that cannot be written, e.g. a full disk),
2 (at least one case failed, or none could be evaluated). A case fails (exit 2) when it cannot be read (also a
dangling symbolic link), has no or a bad label, or the network gives it non-finite (NaN) probabilities; such a case
is never reported as a prediction. File names that are not valid UTF-8 are written with ``\\xNN`` escapes.

Example::

    python -m monai_transfer.evaluate --bundle bundles/ct_slices --images /data/test_volumes \\
        --labels /data/test_labels.csv --output eval/test
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_transfer.data.volumes import AGGREGATION_METHODS, aggregate_volume_probs
from monai_transfer.utils.io import (
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
    load_state_dict_file,
    sha256_file,
)

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
    "evaluate_bundle",
    "parse_overrides",
    "build_arg_parser",
    "main",
]

logger = logging.getLogger("monai_transfer.evaluate")  # same name under ``python -m``

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_FAILURES = 2

#: files a volume bundle evaluates.
VOLUME_EXTENSIONS = (".nii", ".nii.gz")
#: files a 2D bundle evaluates (2D NIfTI, DICOM, PNG/JPEG).
IMAGE_2D_EXTENSIONS = (".nii", ".nii.gz", ".dcm", ".dicom", ".png", ".jpg", ".jpeg")
_DEFAULT_TOPK = 3


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


# ------------------------------------------------------------------------------------------------------ aggregation
def _resolve_aggregation(spec: Any, k_default: int | None = None) -> tuple[Callable[[torch.Tensor], Any], str]:
    """Turn the bundle's ``aggregation`` into ``(fn(probs) -> (K,), description)``."""
    k = _DEFAULT_TOPK if k_default is None else int(k_default)
    if isinstance(spec, str):
        method, _, k_text = spec.partition(":")
        if k_text:
            k = int(k_text)
        method = method.strip()
        if method not in AGGREGATION_METHODS:
            raise EvaluationUsageError(f"bundle 'aggregation' must be one of {AGGREGATION_METHODS}, got {spec!r}")
        desc = f"{method}(k={k})" if method == "topk_mean" else method
        return (lambda p: aggregate_volume_probs(p, method=method, k=k)), desc
    if isinstance(spec, dict):
        method = spec.get("method", spec.get("mode", "mean"))
        k = int(spec.get("k", spec.get("topk", k)))
        return _resolve_aggregation(f"{method}:{k}")
    if callable(spec):
        return spec, getattr(spec, "__name__", type(spec).__name__)
    raise EvaluationUsageError(
        f"bundle 'aggregation' must be a method name {AGGREGATION_METHODS}, a dict or a callable, got {spec!r}"
    )


# --------------------------------------------------------------------------------------------------- cases, labels
def _strip_ext(name: str) -> str:
    low = name.lower()
    for ext in (".nii.gz", ".nii", ".dcm", ".dicom", ".png", ".jpg", ".jpeg"):
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def list_cases(images_dir: str | os.PathLike, extensions: Sequence[str] = VOLUME_EXTENSIONS) -> list[Path]:
    """Every file under ``images_dir`` (recursively, hidden files and folders skipped) ending in ``extensions``.

    Broken symbolic links with such a name (dangling, or a link loop) are listed too, so that the evaluation
    reports them as failed cases instead of dropping them.

    Returns:
        the files, sorted by their path relative to ``images_dir``.
    """
    root = Path(images_dir)
    exts = tuple(e.lower() for e in extensions)
    found = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if not p.is_file() and not (p.is_symlink() and not p.exists()):
            continue
        if p.name.lower().endswith(exts):
            found.append(p)
    return sorted(found, key=lambda q: q.relative_to(root).as_posix())


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


# ------------------------------------------------------------------------------------------------------ bundle
@dataclass
class _Bundle:
    root: Path
    parser: Any
    kind: str  # "volume" or "2d"
    class_names: list[str]
    version: str | None
    preprocessing: Callable | None = None
    volume_preprocessing: Callable | None = None
    slicing: Callable | None = None
    aggregate: Callable[[torch.Tensor], Any] | None = None
    aggregation_desc: str = ""


def _read_bundle_json(path: Path) -> Any:
    """The content of a bundle config file; raises a usage error naming the file (and the position of a JSON error)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EvaluationUsageError(
            f"bundle config {_display(str(path))} is not valid JSON: {e} (a truncated or hand-edited file?)"
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise EvaluationUsageError(f"bundle config {_display(str(path))}: cannot read the file ({e})") from e


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """Bundle overrides given as ``--id value`` pairs, the way ``python -m monai.bundle run`` takes them.

    Values are read as JSON, then as Python literals (``"['no','yes']"``), else kept as strings; ``--a#b value``
    sets a nested id. ``--id=value`` works too.

    Raises:
        EvaluationUsageError: an argument that is not ``--id`` or an id without a value.
    """
    import ast

    out: dict[str, Any] = {}
    items = list(args)
    i = 0
    while i < len(items):
        key = items[i]
        if not key.startswith("--") or len(key) < 3:
            raise EvaluationUsageError(f"unexpected argument {key!r}: bundle overrides are --<id> <value> pairs")
        key = key[2:]
        if "=" in key:
            key, text = key.split("=", 1)
            i += 1
        elif i + 1 < len(items):
            text = items[i + 1]
            i += 2
        else:
            raise EvaluationUsageError(f"bundle override --{key} has no value")
        try:
            value: Any = json.loads(text)
        except ValueError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text
        out[key] = value
    return out


def _load_bundle(bundle: str | os.PathLike, overrides: dict[str, Any] | None = None) -> _Bundle:
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    root = Path(bundle)
    config = root / "configs" / "inference.json"
    if not root.is_dir():
        raise EvaluationUsageError(f"--bundle {root}: no such folder")
    if not config.is_file():
        raise EvaluationUsageError(f"--bundle {root}: no configs/inference.json in this folder")
    _read_bundle_json(config)  # a truncated/invalid file: a message with the position, not MONAI's traceback
    parser = ConfigParser()
    parser.read_config(str(config))
    meta_file = root / "configs" / "metadata.json"
    meta: dict[str, Any] = {}
    if meta_file.is_file():
        meta = _read_bundle_json(meta_file)
        parser.read_meta(str(meta_file))
    parser["bundle_root"] = str(root.resolve())
    for key, value in (overrides or {}).items():
        if key != "bundle_root" and key not in parser:
            raise EvaluationUsageError(f"bundle override --{key}: {config} has no id '{key}'")
        parser[key] = value
    if "imports" in parser:
        parser.get_parsed_content("imports")

    if "class_names" in parser:
        class_names = [str(c) for c in parser.get_parsed_content("class_names")]
    else:
        try:
            cdef = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
        except (KeyError, TypeError) as e:
            raise EvaluationUsageError(
                f"bundle {root}: neither 'class_names' in inference.json nor a 'pred' channel_def in metadata.json"
            ) from e
        class_names = [str(cdef[k]) for k in sorted(cdef, key=int)]
    if len(class_names) < 2:
        raise EvaluationUsageError(f"bundle {root}: needs at least 2 class names, got {class_names}")

    def compose(obj: Any) -> Callable:
        return Compose(obj) if isinstance(obj, (list, tuple)) else obj

    b = _Bundle(root=root, parser=parser, kind="2d", class_names=class_names, version=meta.get("version"))
    if "volume_preprocessing" in parser:
        missing = [i for i in ("slicing", "aggregation") if i not in parser]
        if missing:
            raise EvaluationUsageError(f"bundle {root}: has 'volume_preprocessing' but no {missing} in inference.json")
        b.kind = "volume"
        b.volume_preprocessing = compose(parser.get_parsed_content("volume_preprocessing"))
        b.slicing = compose(parser.get_parsed_content("slicing"))
        if hasattr(b.slicing, "set_random_state"):  # random slice strategies: same slices at every run
            b.slicing.set_random_state(seed=0)
        k = parser.get_parsed_content("aggregation_k") if "aggregation_k" in parser else None
        b.aggregate, b.aggregation_desc = _resolve_aggregation(parser.get_parsed_content("aggregation"), k)
    elif "preprocessing" in parser:
        b.preprocessing = compose(parser.get_parsed_content("preprocessing"))
    else:
        raise EvaluationUsageError(
            f"bundle {root}: inference.json defines neither 'preprocessing' (2D) nor 'volume_preprocessing' (volumes)"
        )
    if "network_def" not in parser:
        raise EvaluationUsageError(f"bundle {root}: inference.json has no 'network_def'")
    return b


def _load_network(b: _Bundle, ckpt: Path, device: torch.device) -> torch.nn.Module:
    net = b.parser.get_parsed_content("network_def")
    if not isinstance(net, torch.nn.Module):
        raise EvaluationUsageError(f"bundle {b.root}: 'network_def' is not a torch module ({type(net).__name__})")
    from monai_transfer.utils.run_bundle import CheckpointConfigMismatchError, check_checkpoint_record

    # the weights record beside the checkpoint must agree with the bundle (class names, image size, ...)
    expected: dict[str, Any] = {"class_names": list(b.class_names), "num_classes": len(b.class_names)}
    if "model_spec" in b.parser:
        expected = dict(b.parser.get_parsed_content("model_spec"))
    else:
        for key in ("backbone", "image_size"):
            if key in b.parser:
                expected[key] = b.parser.get_parsed_content(key)
    try:
        check_checkpoint_record(ckpt, expected, source=f"bundle {b.root}")
    except (CheckpointConfigMismatchError, ValueError) as e:
        raise EvaluationUsageError(str(e)) from e
    try:
        sd = load_state_dict_file(ckpt)
        net.load_state_dict(sd, strict=True)
    except (OSError, RuntimeError) as e:
        raise EvaluationUsageError(f"checkpoint {ckpt} does not fit the bundle's network_def: {e}") from e
    bad = []
    for key, value in sd.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            n_nan = int(torch.isnan(value).sum())
            bad.append(f"{key} ({n_nan} NaN, {int((~torch.isfinite(value)).sum()) - n_nan} inf)")
    if bad:
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise EvaluationUsageError(
            f"checkpoint {ckpt} holds non-finite weights in {len(bad)} tensor(s): {shown}; training diverged, "
            "evaluate an earlier checkpoint"
        )
    return net.to(device).eval()


# --------------------------------------------------------------------------------------------------- per case
def _nifti_shape(path: Path) -> tuple[int, ...] | None:
    """Stored NIfTI shape (header only) with trailing singleton axes beyond 2 removed; None for other files."""
    if not path.name.lower().endswith(VOLUME_EXTENSIONS):
        return None
    import nibabel

    try:
        shape = tuple(int(s) for s in nibabel.load(str(path)).shape)
    except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError, zlib errors, ...
        raise _CaseError("read", f"unreadable NIfTI file ({type(e).__name__}: {e})") from e
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _check_stored_shape(path: Path, kind: str) -> tuple[int, ...] | None:
    shape = _nifti_shape(path)
    if shape is None:
        return None
    if any(s == 0 for s in shape):
        raise _CaseError("empty", f"zero-size image (stored shape {shape})")
    want = 3 if kind == "volume" else 2
    if len(shape) != want:
        what = "a 3D volume" if want == 3 else "a 2D image"
        raise _CaseError("dimensions", f"{len(shape)}D image (stored shape {shape}); this bundle needs {what}")
    return shape


def _raw_is_empty(path: Path) -> str | None:
    """After a failed load: say whether the stored NIfTI data are all zeros (cheap diagnosis, failures only)."""
    if not path.name.lower().endswith(VOLUME_EXTENSIONS):
        return None
    try:
        import nibabel

        data = np.asanyarray(nibabel.load(str(path)).dataobj)
    except Exception:
        return None
    if data.size == 0:
        return f"zero-size image (stored shape {data.shape})"
    if not np.any(data):
        return f"empty image: all {data.size} voxels are 0"
    return None


def _check_content(img: Any, ndim: int, what: str) -> torch.Tensor:
    """The image as a plain tensor; raises when it is not ``ndim``-D, empty, or constant in every channel."""
    if not isinstance(img, (torch.Tensor, np.ndarray)):
        raise _CaseError("read", f"the bundle's preprocessing gave a {type(img).__name__} for 'image', not an array")
    t = torch.as_tensor(img)
    if isinstance(t, torch.Tensor) and hasattr(t, "as_tensor"):
        t = t.as_tensor()
    if t.numel() == 0:
        raise _CaseError("empty", f"zero-size {what} after preprocessing (shape {tuple(t.shape)})")
    if t.ndim != ndim:
        raise _CaseError(
            "dimensions", f"{what} has shape {tuple(t.shape)} after preprocessing; expected {ndim} dims (C, spatial)"
        )
    flat = t.reshape(t.shape[0], -1)
    if bool((flat.amax(1) == flat.amin(1)).all()):
        value = float(flat[0, 0])
        reason = "every voxel is 0" if value == 0 else f"every voxel of each channel has one value ({value:g}, ...)"
        raise _CaseError("empty", f"empty {what}: {reason}")
    return t


def _iter_slices(slicing: Callable, data: dict) -> Iterator[dict]:
    """Slice dicts of one volume; transforms after the slice split of a ``Compose`` run lazily, slice by slice."""
    from monai.transforms import Compose, apply_transform

    if isinstance(slicing, Compose) and not getattr(slicing, "lazy", False):
        cur: Any = data
        transforms = list(slicing.transforms)
        for i, t in enumerate(transforms):
            cur = apply_transform(t, cur, map_items=slicing.map_items, unpack_items=slicing.unpack_items)
            if isinstance(cur, (list, tuple)):
                rest = transforms[i + 1 :]
                for item in cur:
                    for t2 in rest:
                        item = apply_transform(t2, item, map_items=slicing.map_items, unpack_items=slicing.unpack_items)
                    yield item
                return
        yield cur
        return
    out = slicing(data)
    if isinstance(out, dict):
        yield out
    else:
        yield from out


class _Runner:
    """Runs the network on batches of preprocessed images and returns softmax probabilities."""

    def __init__(self, net: torch.nn.Module, device: torch.device, num_classes: int) -> None:
        self.net = net
        self.device = device
        self.num_classes = num_classes

    def __call__(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        x = torch.stack([torch.as_tensor(i).as_subclass(torch.Tensor) for i in images]).float().to(self.device)
        with torch.inference_mode():
            logits = self.net(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        logits = torch.as_tensor(logits).as_subclass(torch.Tensor).float()
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise EvaluationUsageError(
                f"the network gives outputs of shape {tuple(logits.shape)}; expected (batch, {self.num_classes}) "
                "for the bundle's class names"
            )
        return torch.softmax(logits, 1).cpu()


def _volume_case(b: _Bundle, path: Path, run: _Runner, batch_size: int) -> tuple[np.ndarray, int]:
    _check_stored_shape(path, "volume")
    assert b.volume_preprocessing is not None and b.slicing is not None and b.aggregate is not None
    data = _preprocess(b.volume_preprocessing, "volume_preprocessing", path)
    _check_content(data["image"], 4, "volume")
    probs: list[torch.Tensor] = []
    batch: list[torch.Tensor] = []
    try:
        for item in _iter_slices(b.slicing, data):
            batch.append(_slice_image(item))
            if len(batch) >= batch_size:
                probs.append(run(batch))
                batch = []
        if batch:
            probs.append(run(batch))
    except (_CaseError, EvaluationUsageError):
        raise
    except Exception as e:
        raise _CaseError("slicing", f"slicing or inference failed: {type(e).__name__}: {e}") from e
    finally:
        del data, batch
    if not probs:
        raise _CaseError("empty", "the bundle's slicing produced no slice for this volume")
    slice_probs = torch.cat(probs)
    n_bad = int((~torch.isfinite(slice_probs).all(1)).sum())
    if n_bad:
        raise _CaseError("inference", _non_finite_reason(f"{n_bad} of {len(slice_probs)} slice(s)"))
    vol = torch.as_tensor(b.aggregate(slice_probs), dtype=torch.float64).reshape(-1)
    if vol.numel() != run.num_classes:
        raise EvaluationUsageError(f"aggregation returned {vol.numel()} values; expected {run.num_classes}")
    if not bool(torch.isfinite(vol).all()):
        raise _CaseError("inference", _non_finite_reason(f"the aggregated volume ({b.aggregation_desc})"))
    return vol.numpy(), int(slice_probs.shape[0])


def _non_finite_reason(what: str) -> str:
    return (
        f"non-finite (NaN/inf) probabilities for {what}: the network's outputs overflow (diverged or corrupted "
        "weights?); the case is not reported as a prediction"
    )


def _slice_image(item: Any) -> torch.Tensor:
    if not isinstance(item, dict) or "image" not in item:
        raise _CaseError("slicing", f"the bundle's slicing must yield dicts with 'image', got {type(item).__name__}")
    t = torch.as_tensor(item["image"])
    if t.ndim != 3:
        raise _CaseError("slicing", f"a slice has shape {tuple(t.shape)}; expected (C, H, W)")
    return t


def _image_case(b: _Bundle, path: Path) -> torch.Tensor:
    _check_stored_shape(path, "2d")
    try:
        return _image_content(b, path)
    except _CaseError as e:
        if e.stage == "dimensions" and path.name.lower().endswith(VOLUME_EXTENSIONS):
            import nibabel

            stored = tuple(int(v) for v in nibabel.load(str(path)).shape)
            raise _CaseError(e.stage, f"{e.reason} (stored NIfTI shape {stored}; a 2D NIfTI (x, y) is expected)") from e
        raise


def _image_content(b: _Bundle, path: Path) -> torch.Tensor:
    assert b.preprocessing is not None
    data = _preprocess(b.preprocessing, "preprocessing", path)
    return _check_content(data["image"], 3, "image")


def _preprocess(transform: Callable, name: str, path: Path) -> dict:
    """Run the bundle's ``name`` transform on ``{"image": path}``; an empty file or a failure is a case error."""
    try:
        data = transform({"image": str(path)})
    except Exception as e:
        empty = _raw_is_empty(path)
        if empty:
            raise _CaseError("empty", empty) from e
        raise _CaseError("read", f"the bundle's {name} failed: {type(e).__name__}: {e}") from e
    if not isinstance(data, dict) or "image" not in data:
        raise _CaseError("read", f"{name} must return a dict with 'image', got {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------------------------------ writing
def _threshold(arg: str | None, ckpt: Path) -> tuple[float, Any, str]:
    """``(value, report_threshold, source)``; the stored ``threshold.json`` beside the checkpoint when present."""
    from monai_transfer.metrics.threshold import load_threshold

    if arg is not None:
        try:
            value = float(arg)
        except ValueError:
            p = Path(arg)
            if not p.is_file():
                raise EvaluationUsageError(f"--threshold {arg!r} is neither a number nor an existing file") from None
            src: Any = str(p)
        else:
            if not 0.0 <= value <= 1.0:
                raise EvaluationUsageError(f"--threshold must be in [0, 1], got {arg}")
            return value, value, "--threshold"
    else:
        stored = ckpt.parent / "threshold.json"
        if not stored.is_file():
            return 0.5, None, "default 0.5 (no threshold.json beside the checkpoint)"
        src = str(stored)
    try:
        t = load_threshold(src)
    except (OSError, ValueError) as e:  # load_threshold's messages name the file (and the refused value)
        raise EvaluationUsageError(str(e) if src in str(e) else f"threshold file {src}: {e}") from e
    if isinstance(t, list):
        if len(t) != 1:
            raise EvaluationUsageError(f"threshold file {src} holds {len(t)} values; one is needed for 2 classes")
        t = t[0]
    return float(t), src, f"file {src}"


def _write_predictions(
    path: Path, preds: Sequence[CasePrediction], names: Sequence[str], threshold: float | None, volume: bool
) -> Path:
    """The report's ``predictions.csv`` columns, then ``image``, ``threshold`` (and ``n_slices``)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["id", "label", "label_name", *[f"prob_{c}" for c in names], "prediction", "prediction_name", "correct"]
    w.writerow(head + ["image", "threshold"] + (["n_slices"] if volume else []))
    for p in preds:
        pred = int(p.probs[1] >= threshold) if threshold is not None else int(np.argmax(p.probs))
        lab = "" if p.label is None else p.label
        row = [p.case_id, lab, "" if p.label is None else names[p.label], *[f"{v:.6f}" for v in p.probs]]
        row += [pred, names[pred], "" if p.label is None else int(pred == p.label), _display(p.path)]
        row += ["" if threshold is None else f"{threshold:.6f}"] + ([p.n_slices] if volume else [])
        w.writerow(row)
    return atomic_write_text(path, buf.getvalue())


def _write_failures(out: Path, failures: Sequence[CaseFailure]) -> dict[str, Path]:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["case", "path", "stage", "reason"])
    rows = [{k: _display(str(v)) for k, v in asdict(f).items()} for f in failures]
    for r in rows:
        w.writerow([r["case"], r["path"], r["stage"], r["reason"]])
    files = {}
    with _writing(out / "failures.csv"):
        files["failures_csv"] = atomic_write_text(out / "failures.csv", buf.getvalue())
    with _writing(out / "failures.json"):
        files["failures_json"] = atomic_write_json(out / "failures.json", {"n_failed": len(failures), "failures": rows})
    return files


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn an ``OSError`` while writing ``path`` (full disk, lost permission) into a usage error naming the file."""
    try:
        yield
    except OSError as e:
        raise EvaluationUsageError(
            f"cannot write the report file {_display(str(path))}: {e}; free some space or choose another --output "
            "(earlier report files there are kept unchanged)"
        ) from e


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


# ---------------------------------------------------------------------------------------------------- main API
def evaluate_bundle(
    bundle: str | os.PathLike,
    images: str | os.PathLike,
    output: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    ckpt: str | os.PathLike | None = None,
    threshold: str | float | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    tolerate_failures: bool = False,
    n_bootstrap: int = 1000,
    progress: bool | None = None,
    overrides: dict[str, Any] | None = None,
) -> EvaluationResult:
    """Evaluate a bundle on every case under ``images``; see the module docstring and ``docs/evaluate.md``.

    Args:
        bundle: bundle folder (holds ``configs/inference.json``).
        images: folder of test cases (searched recursively): ``.nii``/``.nii.gz`` for volume bundles; also
            ``.dcm``/``.png``/``.jpg`` for 2D bundles.
        output: output folder (created).
        labels: optional CSV with columns ``image`` (relative to ``images``) and ``label`` (index or class name).
        ckpt: weights to evaluate; default the bundle's ``ckpt_path`` (``models/model.pt``).
        threshold: decision threshold of a 2-class bundle (number or threshold JSON); default the
            ``threshold.json`` beside the checkpoint, else 0.5.
        batch_size: slices (volume bundles) or images (2D bundles) per forward pass.
        device: ``"cpu"``, ``"cuda"``; default CUDA when available.
        tolerate_failures: exit code 0 (with a WARNING) when some, not all, cases failed.
        n_bootstrap: bootstrap resamples of the report's confidence intervals.
        progress: show a tqdm bar over cases; default only on a terminal.
        overrides: bundle ids to override in ``inference.json`` (``{"image_size": 128, "class_names": [...]}``),
            like ``python -m monai.bundle run --image_size 128``; needed only for a bundle that is not the run
            folder of the checkpoint.

    Returns:
        the :class:`EvaluationResult` (predictions, failures, written files, exit code).

    Raises:
        EvaluationUsageError: missing/bad bundle, checkpoint, images folder, labels CSV or argument.
    """
    from monai.utils import optional_import

    tqdm, has_tqdm = optional_import("tqdm", name="tqdm")
    if int(batch_size) < 1:
        raise EvaluationUsageError(f"--batch-size must be >= 1, got {batch_size}")
    images_dir = Path(images)
    if not images_dir.is_dir():
        raise EvaluationUsageError(f"--images {images_dir}: no such folder")
    if labels is not None and not Path(labels).is_file():
        raise EvaluationUsageError(f"--labels {labels}: no such file")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EvaluationUsageError("--device cuda: CUDA is not available on this machine")

    b = _load_bundle(bundle, overrides)
    exts = VOLUME_EXTENSIONS if b.kind == "volume" else IMAGE_2D_EXTENSIONS
    cases = list_cases(images_dir, exts)
    if not cases:
        raise EvaluationUsageError(f"--images {images_dir}: no {'/'.join(exts)} file found (searched recursively)")
    ckpt_path = Path(ckpt) if ckpt is not None else Path(str(b.parser.get_parsed_content("ckpt_path")))
    if not ckpt_path.is_file():
        raise EvaluationUsageError(f"checkpoint {ckpt_path} not found (train the bundle first or pass --ckpt)")
    if "mode" in b.parser and b.parser.get_parsed_content("mode") == "multilabel":  # sigmoid outputs, label vectors
        raise EvaluationUsageError(
            f"bundle {b.root} is multi-label (mode='multilabel'): this CLI reports single-label (softmax) bundles "
            "only; use the bundle's evaluate.json"
        )
    binary = len(b.class_names) == 2
    thr_value, thr_report, thr_source = _threshold(None if threshold is None else str(threshold), ckpt_path)
    try:
        out = check_output_dir(output)
    except OSError as e:
        raise EvaluationUsageError(f"--output {output}: {e}") from e

    result = EvaluationResult()
    label_map: dict[Path, int] = {}
    if labels is not None:
        label_map, result.failures = read_labels_csv(labels, images_dir, cases, b.class_names)
    failed = {Path(f.path) for f in result.failures if f.path}
    net = _load_network(b, ckpt_path, dev)
    run = _Runner(net, dev, len(b.class_names))
    logger.info(
        f"evaluating {len(cases)} case(s) from {images_dir} with bundle {b.root} ({b.kind}, classes {b.class_names}), "
        f"checkpoint {ckpt_path}, device {dev}"
        + (f", threshold {thr_value:g} ({thr_source})" if binary else "")
        + (f", aggregation {b.aggregation_desc}" if b.kind == "volume" else "")
    )
    for f in result.failures:
        logger.error(f"case {f.case!r} failed ({f.stage}): {f.reason}")

    def name_of(p: Path) -> str:
        return _display(p.relative_to(images_dir).as_posix())

    def fail(p: Path, stage: str, reason: str) -> None:
        result.failures.append(CaseFailure(name_of(p), str(p), stage, reason))
        logger.error(f"case {name_of(p)!r} failed ({stage}): {reason}")

    pending: list[tuple[Path, torch.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        try:
            probs = run([t for _, t in pending])
        except EvaluationUsageError:
            raise
        except Exception:  # find the bad case(s) one by one
            probs = None
        for i, (p, t) in enumerate(pending):
            if probs is None:
                try:
                    row = run([t])[0]
                except EvaluationUsageError:
                    raise
                except Exception as e:
                    fail(p, "inference", f"{type(e).__name__}: {e}")
                    continue
            else:
                row = probs[i]
            if not bool(torch.isfinite(row).all()):
                fail(p, "inference", _non_finite_reason("this image"))
                continue
            result.predictions.append(
                CasePrediction(_strip_ext(name_of(p)), str(p), row.double().numpy(), label_map.get(p))
            )
        pending.clear()

    show = progress if progress is not None else None  # None: tqdm shows the bar only on a terminal
    iterator = tqdm(cases, desc="cases", unit="case", disable=None if show is None else not show) if has_tqdm else cases
    for path in iterator:
        if path in failed:
            continue
        broken = _broken_link(path)
        if broken:
            fail(path, "read", broken)
            continue
        try:
            if b.kind == "volume":
                probs, n_slices = _volume_case(b, path, run, int(batch_size))
                result.predictions.append(
                    CasePrediction(_strip_ext(name_of(path)), str(path), probs, label_map.get(path), n_slices)
                )
            else:
                pending.append((path, _image_case(b, path)))
                if len(pending) >= int(batch_size):
                    flush()
        except _CaseError as e:
            fail(path, e.stage, e.reason)
    flush()

    # ---- outputs
    thr_used = thr_value if binary else None
    names = b.class_names
    meta = {
        "bundle": _display(str(b.root)),
        "bundle_version": b.version,
        "checkpoint": _display(str(ckpt_path)),
        "checkpoint_sha256": sha256_file(ckpt_path),
        "images": _display(str(images_dir)),
        "labels": None if labels is None else _display(str(labels)),
        "kind": b.kind,
        "aggregation": b.aggregation_desc or None,
        "n_failed": len(result.failures),
    }
    labelled = [p for p in result.predictions if p.label is not None]
    if labels is not None and labelled:
        from monai_transfer.reports.writer import write_classification_report

        with _writing(out / "metrics.json"):  # and the plots and the report's predictions.csv
            written = write_classification_report(
                out,
                y_true=np.asarray([p.label for p in labelled], dtype=np.int64),
                y_prob=np.stack([p.probs for p in labelled]),
                ids=[p.case_id for p in labelled],
                class_names=names,
                threshold=thr_report if binary else None,
                mode="binary" if binary else "multiclass",
                meta=meta,
                n_bootstrap=n_bootstrap,
            )
        result.files.update(written)
    elif labels is not None:
        logger.warning("no labelled case could be evaluated: metrics.json and the plots are not written")
    # our predictions.csv replaces the report's: same columns first, plus image/threshold/n_slices, every case
    with _writing(out / "predictions.csv"):
        result.files["predictions"] = _write_predictions(
            out / "predictions.csv", result.predictions, names, thr_used, b.kind == "volume"
        )
    result.files.update(_write_failures(out, result.failures))

    if not result.predictions:
        result.exit_code = EXIT_FAILURES
        logger.error(f"no case could be evaluated ({len(result.failures)} failure(s)); see {out / 'failures.csv'}")
    elif result.failures:
        shown = [f.case for f in result.failures[:20]]
        more = len(result.failures) - len(shown)
        names_failed = ", ".join(shown) + (f" and {more} more" if more else "")
        if tolerate_failures:
            result.exit_code = EXIT_OK
            logger.warning(
                f"{len(result.failures)} case(s) failed and were skipped (--tolerate-failures): {names_failed}; "
                f"see {out / 'failures.csv'}"
            )
        else:
            result.exit_code = EXIT_FAILURES
            logger.error(f"{len(result.failures)} case(s) failed: {names_failed}; see {out / 'failures.csv'}")
    summary = {
        **meta,
        "output": _display(str(out)),
        "device": str(dev),
        "class_names": names,
        "threshold": {"value": thr_used, "source": thr_source if binary else "arg-max (no threshold)"},
        "n_cases_found": len(cases),
        "n_evaluated": len(result.predictions),
        "n_labelled": len(labelled),
        "failed_cases": [f.case for f in result.failures],
        "exit_code": result.exit_code,
        "peak_rss_mb": _peak_rss_mb(),
    }
    with _writing(out / "summary.json"):
        result.files["summary"] = atomic_write_json(out / "summary.json", summary)
    logger.info(
        f"evaluated {len(result.predictions)} of {len(cases)} case(s), {len(result.failures)} failure(s); "
        f"outputs in {out}"
    )
    return result


def build_arg_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m monai_transfer.evaluate``."""
    p = argparse.ArgumentParser(
        prog="python -m monai_transfer.evaluate",
        description="Evaluate a monai-transfer bundle on a folder of NIfTI (or, for 2D bundles, DICOM/PNG) test cases.",
        epilog="bundle overrides: any other --<id> <value> pair overrides that id of the bundle's inference.json, "
        "as in `python -m monai.bundle run` (e.g. --image_size 128 --class_names \"['no','yes']\"). "
        "exit codes: 0 ok; 1 usage or environment error (bad bundle/checkpoint/threshold, report not "
        "writable, e.g. disk full); 2 some case failed (see failures.csv) unless --tolerate-failures",
    )
    p.add_argument("--bundle", required=True, help="bundle folder, e.g. bundles/ct_slices")
    p.add_argument("--images", required=True, help="folder of test cases (searched recursively)")
    p.add_argument("--labels", default=None, help="CSV with columns image (relative to --images) and label")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--tolerate-failures", action="store_true", help="exit 0 (with a WARNING) when some cases fail")
    p.add_argument("--batch-size", type=int, default=32, help="slices/images per forward pass (default 32)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--ckpt", default=None, help="weights file; default the bundle's models/model.pt")
    p.add_argument("--threshold", default=None, help="number or threshold JSON; default models/threshold.json")
    p.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (default 1000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0 ok, 1 usage error, 2 failed cases).

    A log is written to ``<output>/evaluate.log`` as well as to stderr.
    """
    parser = build_arg_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        overrides = parse_overrides(extra)
    except SystemExit as e:  # argparse exits 2 on usage errors; this tool reserves 2 for failed cases
        return EXIT_OK if e.code in (0, None) else EXIT_USAGE
    except EvaluationUsageError as e:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    handlers: list[logging.Handler] = []
    old_level = logger.level
    logger.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not logging.getLogger().handlers:
        handlers.append(logging.StreamHandler(sys.stderr))
    try:
        out = Path(args.output)
        try:
            out.mkdir(parents=True, exist_ok=True)
            log = out / "evaluate.log"  # non-UTF-8 file names in messages: escaped, not a logging error
            handlers.append(logging.FileHandler(log, mode="w", encoding="utf-8", errors="backslashreplace"))
        except OSError as e:
            logger.error(f"--output {out}: cannot create the folder or its log ({e})")
        for h in handlers:
            h.setFormatter(fmt)
            logger.addHandler(h)
        result = evaluate_bundle(
            bundle=args.bundle,
            images=args.images,
            output=args.output,
            labels=args.labels,
            ckpt=args.ckpt,
            threshold=args.threshold,
            batch_size=args.batch_size,
            device=args.device,
            tolerate_failures=args.tolerate_failures,
            n_bootstrap=args.n_bootstrap,
            progress=False if args.no_progress else None,
            overrides=overrides,
        )
        return result.exit_code
    except EvaluationUsageError as e:
        logger.error(str(e))
        return EXIT_USAGE
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        logger.setLevel(old_level)


if __name__ == "__main__":
    sys.exit(main())
