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
"""The weights record: what a network built by a config expects, written beside its checkpoint and checked on load.

The weights record (:func:`write_checkpoint_record`) describes what the network expects: backbone, input channels,
class names, image size, normalisation, channel handling (and slicing for volume bundles), with a SHA-256 of that
preprocessing description. :func:`check_checkpoint_record` compares it with a config's :func:`model_spec` and raises
:class:`CheckpointConfigMismatchError` naming both values ("checkpoint ... trained at image_size 128, config says 64")
instead of evaluating quietly with the wrong settings.

``model.pt`` stays a plain state dict (loadable with ``weights_only=True``, as MONAI Label and ``ckpt_export``
expect); the record is a separate JSON file, ``<checkpoint stem>.json``. The run-folder export that writes it at the
end of training is :func:`monai_transfer.run_bundle.export_run_bundle`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_transfer.utils.io import atomic_write_json, sha256_file, to_jsonable

__all__ = [
    "RECORD_FORMAT",
    "CHECKED_FIELDS",
    "PROBE_TOLERANCE",
    "CheckpointConfigMismatchError",
    "model_spec",
    "preprocessing_probe",
    "compare_preprocessing_probes",
    "checkpoint_record_path",
    "PER_CHECKPOINT_FIELDS",
    "write_checkpoint_record",
    "write_ensemble_record",
    "read_checkpoint_record",
    "check_checkpoint_record",
]

logger = logging.getLogger(__name__)

#: ``format`` of the weights record.
RECORD_FORMAT = "monai_transfer.checkpoint_record/1"
#: fields of a :func:`model_spec` compared with the record, in the order errors list them.
CHECKED_FIELDS = (
    "backbone",
    "in_channels",
    "num_classes",
    "class_names",
    "image_size",
    "normalization",
    "slicing",
    "preprocessing_sha256",
)


#: largest difference of a probe summary value (normalised intensities, typically in [-2, 3]) counted as equal.
PROBE_TOLERANCE = 1e-3
_PROBE_GRID = 4


class CheckpointConfigMismatchError(ValueError):
    """A checkpoint's weights record disagrees with the config it is loaded into."""


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def model_spec(
    backbone: str,
    class_names: Sequence[str],
    image_size: int | Sequence[int],
    in_channels: int = 3,
    repeat_channels: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    slice_axis: str | int | None = None,
    slice_offsets: Sequence[int] | None = None,
) -> dict[str, Any]:
    """What a network built by a config expects of its input and output (the bundles' ``model_spec`` id).

    Args:
        backbone: registered backbone name.
        class_names: class names by output index.
        image_size: the (square) size images are resized to, or ``[rows, cols]``.
        in_channels: network input channels.
        repeat_channels: grey images are repeated to the backbone's channels before normalisation.
        mean: normalisation means; default the backbone's (``get_backbone_cfg(backbone).mean``).
        std: normalisation standard deviations; default the backbone's.
        slice_axis: volume bundles: the slicing axis.
        slice_offsets: volume bundles: the neighbour-slice offsets stacked as channels.

    Returns:
        ``{"backbone", "in_channels", "num_classes", "class_names", "image_size", "normalization", "slicing",
        "preprocessing_sha256"}``; the hash covers image size, normalisation, channel handling and slicing.
    """
    if mean is None or std is None:
        from monai_transfer.networks.backbones import get_backbone_cfg

        cfg = get_backbone_cfg(backbone)
        mean = cfg.mean if mean is None else mean
        std = cfg.std if std is None else std
    size = int(image_size) if isinstance(image_size, (int, float)) else [int(s) for s in image_size]
    normalization = {
        "mean": [round(float(m), 6) for m in mean],
        "std": [round(float(s), 6) for s in std],
        "repeat_channels": bool(repeat_channels),
        "input_range": [0.0, 1.0],
    }
    slicing = None
    if slice_axis is not None or slice_offsets is not None:
        slicing = {"axis": slice_axis, "offsets": None if slice_offsets is None else [int(o) for o in slice_offsets]}
    pre = {"image_size": size, "normalization": normalization, "slicing": slicing}
    return {
        "backbone": str(backbone),
        "in_channels": int(in_channels),
        "num_classes": len(class_names),
        "class_names": [str(c) for c in class_names],
        "image_size": size,
        "normalization": normalization,
        "slicing": slicing,
        "preprocessing_sha256": _sha256_json(pre),
    }


def _probe_image(volume: bool) -> Any:
    """A fixed synthetic image (non-square, with a gradient and a pattern): ``(45, 37)`` or a ``(40, 36, 30)``
    volume, uint8-valued float32, so resizing, padding, windowing and normalisation all leave a trace."""
    import numpy as np

    shape = (40, 36, 30) if volume else (45, 37)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    img = 3.0 * grids[0] + 2.0 * grids[1] + 40.0 * ((grids[0] // 5 + grids[1] // 7) % 2)
    if volume:
        img = img + 1.5 * grids[2]
    return (img % 256).astype(np.float32)


def preprocessing_probe(preprocessing: Any, volume: bool = False) -> dict[str, Any]:
    """What an instantiated preprocessing DOES, not how its config spells it: the output of ``preprocessing`` on a
    fixed synthetic image (written here as NIfTI), summarised as its shape, mean, standard deviation and a
    ``4 x 4`` grid of block means per channel (averaged over slices for volume bundles).

    The weights record keeps the probe of the training's validation preprocessing; the check on load compares it with
    the probe of the config's preprocessing (:func:`compare_preprocessing_probes`), so a hand-edited resize or
    normalisation in a run's configs is caught even where every id still matches.

    Args:
        preprocessing: callable ``{"image": path}`` -> ``{"image": (C, H, W)}`` (2D bundles) or a list of such slice
            dicts (volume bundles: volume loading followed by slicing).
        volume: feed a 3D volume instead of a 2D image.

    Returns:
        ``{"input": ..., "shape", "mean", "std", "grid"}`` (JSON-friendly).

    Raises:
        Exception: whatever ``preprocessing`` raises on the probe image.
    """
    import tempfile

    import nibabel as nib
    import numpy as np
    import torch

    img = _probe_image(volume)
    with tempfile.TemporaryDirectory(prefix="monai_transfer_probe_") as tmp:
        path = str(Path(tmp) / "probe.nii.gz")
        nib.save(nib.Nifti1Image(img, np.eye(4)), path)
        out = preprocessing({"image": path})
    items = out if isinstance(out, (list, tuple)) else [out]
    x = torch.stack([torch.as_tensor(d["image"]).as_subclass(torch.Tensor).double() for d in items])  # (N, C, H, W)
    pooled = torch.nn.functional.adaptive_avg_pool2d(x.reshape(-1, *x.shape[-2:])[:, None], _PROBE_GRID)
    grid = pooled.reshape(x.shape[0], -1, _PROBE_GRID, _PROBE_GRID).mean(0)
    return {
        "input": f"synthetic {'x'.join(map(str, img.shape))} NIfTI",
        "shape": [int(n) for n in (x.shape if volume else x.shape[1:])],
        "mean": round(float(x.mean()), 6),
        "std": round(float(x.std()), 6),
        "grid": [[[round(float(v), 5) for v in row] for row in ch] for ch in grid.tolist()],
    }


def compare_preprocessing_probes(trained: Mapping[str, Any], config: Mapping[str, Any]) -> str | None:
    """``None`` when two :func:`preprocessing_probe` results agree (shape equal, values within
    :data:`PROBE_TOLERANCE`), else the first difference in words."""
    import numpy as np

    if list(trained.get("shape", [])) != list(config.get("shape", [])):
        return f"output shape {trained.get('shape')}, config gives {config.get('shape')}"
    for key in ("mean", "std", "grid"):
        a, b = np.asarray(trained.get(key), dtype=float), np.asarray(config.get(key), dtype=float)
        if a.shape != b.shape:
            return f"output {key} of shape {list(a.shape)}, config gives {list(b.shape)}"
        if not np.allclose(a, b, rtol=0, atol=PROBE_TOLERANCE):
            if key == "grid":
                return f"output block means, config gives block means differing by up to {np.abs(a - b).max():.3g}"
            return f"output {key} {trained.get(key)}, config gives {config.get(key)}"
    return None


def checkpoint_record_path(ckpt: str | os.PathLike) -> Path:
    """The weights record of a checkpoint: ``models/model.pt`` -> ``models/model.json``."""
    p = Path(ckpt)
    return p.with_name(p.name.split(".")[0] + ".json")


def write_checkpoint_record(
    ckpt: str | os.PathLike, spec: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> Path:
    """Write the weights record of ``ckpt`` (atomically) from a :func:`model_spec`.

    Args:
        ckpt: the checkpoint (must exist: its SHA-256 is recorded).
        spec: what the network expects (:func:`model_spec`).
        extra: more run facts to keep (not checked), e.g. aggregation or training settings.

    Returns:
        the record's path.

    Raises:
        FileNotFoundError: when ``ckpt`` does not exist.
    """
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"cannot describe checkpoint {ckpt}: no such file")
    from monai_transfer import __version__

    record = {
        "format": RECORD_FORMAT,
        "checkpoint": ckpt.name,
        "weights_sha256": sha256_file(ckpt),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "monai_transfer_version": __version__,
        **to_jsonable(dict(spec)),
    }
    if extra:
        record["run"] = to_jsonable(dict(extra))
    return atomic_write_json(checkpoint_record_path(ckpt), record)


#: record fields of one checkpoint file (what :func:`write_checkpoint_record` adds to the spec, and the run facts)
PER_CHECKPOINT_FIELDS = ("format", "checkpoint", "weights_sha256", "created", "monai_transfer_version", "run")


def write_ensemble_record(members: Sequence[str | os.PathLike], ckpt: str | os.PathLike) -> Path | None:
    """The weights record of an ensemble checkpoint ``ckpt`` combined from ``members`` (e.g. by
    :func:`monai_transfer.networks.nets.save_ensemble_checkpoint`): the members' settings (class names, image size,
    normalisation, preprocessing probe), so that loading the ensemble checks them as for one model.

    Returns:
        the record's path, or None when a member has no record (nothing to check against).

    Raises:
        ValueError: the members were trained with different settings (not one ensemble); the message names them.
    """
    records = [read_checkpoint_record(m) for m in members]
    if not records or any(r is None for r in records):
        return None
    specs = [{k: v for k, v in r.items() if k not in PER_CHECKPOINT_FIELDS} for r in records]  # type: ignore[union-attr]
    differ = [str(m) for m, spec in zip(members, specs) if spec != specs[0]]
    if differ:
        raise ValueError(f"checkpoints {differ} were trained with other settings than {members[0]}: not one ensemble")
    return write_checkpoint_record(ckpt, specs[0], {"ensemble_members": [str(m) for m in members]})


def read_checkpoint_record(ckpt: str | os.PathLike) -> dict[str, Any] | None:
    """The weights record beside ``ckpt``, or ``None`` when there is none.

    Raises:
        ValueError: when the record exists but is not a JSON object of this format; the message names the file.
    """
    path = checkpoint_record_path(ckpt)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"weights record {path} of checkpoint {ckpt} cannot be read: {e}") from e
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise ValueError(f"weights record {path} is not a {RECORD_FORMAT} record (format {record.get('format')!r})")
    return record


def _show(value: Any) -> str:
    if isinstance(value, dict) and "mean" in value:
        return f"mean {value.get('mean')} std {value.get('std')} repeat_channels {value.get('repeat_channels')}"
    return json.dumps(value) if not isinstance(value, str) else value


def _field_differences(record: Mapping[str, Any], expected: Mapping[str, Any], source: str) -> list[str]:
    """``"<field> <record value>, <source> says <config value>"`` for each :data:`CHECKED_FIELDS` entry that differs."""
    diffs = []
    for key in CHECKED_FIELDS:
        if key not in expected or key not in record:
            continue
        want, have = to_jsonable(expected[key]), record[key]
        if want != have:
            if key == "preprocessing_sha256" and diffs:
                continue  # the named differences already explain the hash
            diffs.append(f"{key} {_show(have)}, {source} says {_show(want)}")
    return diffs


def _probe_difference(probe: Mapping[str, Any], preprocessing: Any, source: str) -> list[str]:
    """The difference between the record's preprocessing probe and the config's preprocessing of the same image."""
    volume = len(probe.get("shape", [])) == 4  # (slices, C, H, W)
    try:
        diff = compare_preprocessing_probes(probe, preprocessing_probe(preprocessing, volume))
    except Exception as e:  # the training's preprocessing handled this image
        diff = f"that handled the probe image; config's preprocessing fails on it ({type(e).__name__}: {e})"
    if diff:
        diff = diff.replace("config gives", f"{source} gives").replace("config's", f"{source}'s")
        return [f"preprocessing {diff} (probe: {probe.get('input')})"]
    return []


def check_checkpoint_record(
    ckpt: str | os.PathLike, expected: Mapping[str, Any] | None, source: str = "config", preprocessing: Any = None
) -> dict[str, Any] | None:
    """Fail when the record beside ``ckpt`` disagrees with what a config expects (:func:`model_spec`).

    Only fields present in both are compared (:data:`CHECKED_FIELDS`); class names compare case-sensitively. When the
    record holds a ``preprocessing_probe`` (what the training's preprocessing did to a synthetic image,
    :func:`preprocessing_probe`) and ``preprocessing`` is given, the config's preprocessing is run on the same image
    and must give the same output: the ids can all match while a hand-edited transform resizes or normalises
    differently. A
    checkpoint without a record (e.g. trained before records existed) is loaded with a warning naming the file; a
    record whose ``weights_sha256`` is not the file's hash (the weights were replaced after the record was written)
    also warns.

    Args:
        ckpt: the checkpoint file.
        expected: the config's :func:`model_spec` (or part of it); ``None`` checks nothing.
        source: how to name the config in the message (e.g. ``"bundles/xray/configs/inference.json"``).
        preprocessing: the config's instantiated preprocessing (``{"image": path}`` -> network input), compared
            with the record's probe; ``None`` skips that comparison.

    Returns:
        the record, or ``None`` when there is none.

    Raises:
        CheckpointConfigMismatchError: every disagreeing field with both values, e.g. "checkpoint RUN/models/model.pt
            was trained at image_size 128, config says 64".
    """
    record = read_checkpoint_record(ckpt)
    if record is None:
        if expected is not None:
            logger.warning(
                f"checkpoint {ckpt} has no weights record {checkpoint_record_path(ckpt).name} beside it: cannot check "
                f"that it was trained with the {source}'s settings (class names, image size, normalisation)"
            )
        return None
    if expected is None:
        return record
    diffs = _field_differences(record, expected, source)
    probe = record.get("preprocessing_probe")
    if not diffs and preprocessing is not None and isinstance(probe, Mapping):
        diffs += _probe_difference(probe, preprocessing, source)
    if diffs:
        raise CheckpointConfigMismatchError(
            f"checkpoint {ckpt} was trained at "
            + "; ".join(diffs)
            + f" (weights record {checkpoint_record_path(ckpt)}). Use the run folder the checkpoint came from as the "
            "bundle, or override the config's ids to match."
        )
    sha = record.get("weights_sha256")
    if sha and Path(ckpt).is_file() and sha256_file(ckpt) != sha:
        logger.warning(
            f"checkpoint {ckpt} is not the file its weights record {checkpoint_record_path(ckpt)} describes "
            "(SHA-256 differs): the weights were replaced after the record was written"
        )
    return record
