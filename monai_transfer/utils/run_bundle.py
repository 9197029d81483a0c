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
"""A trained run is a bundle: the run folder's configs and a record beside the weights say what training used.

- :func:`export_run_bundle` (the last step of every bundle's ``train.json`` ``run``) turns ``output_dir`` into a
  complete MONAI bundle: ``configs/{train,inference,evaluate,metadata}.json`` and ``logging.conf`` copied from the
  template bundle with this run's values in place of the template's top-level ids, ``models/model.pt`` plus the
  weights record ``models/model.json``, a few validation cases in ``data/samples`` (so ``inference.json`` runs with
  no argument) and ``docs/README.md`` with the command, the data and the metrics. The shipped bundles stay templates:
  when ``output_dir`` *is* the template folder, only the weights record is written.
- The weights record (:func:`write_checkpoint_record`) describes what the network expects: backbone, input channels,
  class names, image size, normalisation, channel handling (and slicing for volume bundles), with a SHA-256 of that
  preprocessing description. :func:`check_checkpoint_record` compares it with a config's :func:`model_spec` and
  raises :class:`CheckpointConfigMismatchError` naming both values ("checkpoint ... trained at image_size 128,
  config says 64") instead of evaluating quietly with the wrong settings.
- :func:`resolve_run_root` is the run configs' ``bundle_root``: the run folder, wherever the configs are run from.

``model.pt`` stays a plain state dict (loadable with ``weights_only=True``, as MONAI Label and ``ckpt_export``
expect); the record is a separate JSON file, ``<checkpoint stem>.json``.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import logging
import os
import re
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_transfer.utils.io import atomic_write_json, atomic_write_text, sha256_file

__all__ = [
    "RECORD_FORMAT",
    "CHECKED_FIELDS",
    "CheckpointConfigMismatchError",
    "model_spec",
    "checkpoint_record_path",
    "write_checkpoint_record",
    "read_checkpoint_record",
    "check_checkpoint_record",
    "resolve_run_root",
    "export_run_bundle",
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
#: config files of a template bundle that a run folder gets (those present are copied).
_CONFIG_FILES = ("train.json", "inference.json", "evaluate.json", "multi_gpu_train.json")
_SAMPLE_LABELS = "labels.csv"
#: training-loop settings that never replace the inference/evaluation configs' ids of the same name.
_TRAIN_ONLY = ("batch_size", "num_workers", "max_items", "seed")
#: ids the training decides from its data (``mode``: binary/multiclass/multilabel from the labels); they replace the
#: other configs' value even where that is an expression (inference.json derives ``mode`` from the class count only).
_RUN_DECIDED = ("mode",)
#: validation metrics shown in the run's README and ``metadata.json`` ``eval_metrics``.
_REPORTED_METRICS = ("auc", "average_precision", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1")


class CheckpointConfigMismatchError(ValueError):
    """A checkpoint's weights record disagrees with the config it is loaded into."""


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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
    import monai_transfer

    record = {
        "format": RECORD_FORMAT,
        "checkpoint": ckpt.name,
        "weights_sha256": sha256_file(ckpt),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "monai_transfer_version": monai_transfer.__version__,
        **_jsonable(dict(spec)),
    }
    if extra:
        record["run"] = _jsonable(dict(extra))
    return atomic_write_json(checkpoint_record_path(ckpt), record)


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


def check_checkpoint_record(
    ckpt: str | os.PathLike, expected: Mapping[str, Any] | None, source: str = "config"
) -> dict[str, Any] | None:
    """Fail when the record beside ``ckpt`` disagrees with what a config expects (:func:`model_spec`).

    Only fields present in both are compared (:data:`CHECKED_FIELDS`); class names compare case-sensitively. A
    checkpoint without a record (e.g. trained before records existed) is loaded with a warning naming the file; a
    record whose ``weights_sha256`` is not the file's hash (the weights were replaced after the record was written)
    also warns.

    Args:
        ckpt: the checkpoint file.
        expected: the config's :func:`model_spec` (or part of it); ``None`` checks nothing.
        source: how to name the config in the message (e.g. ``"bundles/xray/configs/inference.json"``).

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
    diffs = []
    for key in CHECKED_FIELDS:
        if key not in expected or key not in record:
            continue
        want, have = _jsonable(expected[key]), record[key]
        if want != have:
            if key == "preprocessing_sha256" and diffs:
                continue  # the named differences already explain the hash
            diffs.append(f"{key} {_show(have)}, {source} says {_show(want)}")
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


def resolve_run_root(exported_to: str | os.PathLike) -> str:
    """``bundle_root`` of a run folder's configs: the folder itself, wherever the configs are run from.

    In order: ``$MONAI_TRANSFER_BUNDLE_ROOT``; the bundle of the ``--config_file`` given to ``python -m monai.bundle``
    (so a moved or copied run folder still finds itself); the current folder when it is a bundle; ``exported_to``.

    Raises:
        FileNotFoundError: when none of these is a bundle folder; the message says how to pass ``--bundle_root``.
    """
    candidates: list[Path] = []
    env = os.environ.get("MONAI_TRANSFER_BUNDLE_ROOT")
    if env:
        candidates.append(Path(env))
    argv = list(sys.argv)
    for i, arg in enumerate(argv[:-1]):
        if arg == "--config_file":
            first = re.findall(r"[^\[\]'\",\s]+\.(?:json|yaml|yml)", argv[i + 1])
            if first:
                candidates.append(Path(first[0]).resolve().parent.parent)
    candidates += [Path.cwd(), Path(exported_to)]
    for c in candidates:
        if (c / "configs" / "metadata.json").is_file():
            return str(c.resolve())
    raise FileNotFoundError(
        f"cannot find the run bundle (exported to {exported_to}) from {Path.cwd()}: run from inside the run folder "
        "or pass --bundle_root /path/to/run"
    )


# ------------------------------------------------------------------------------------------------------- export
def _copy_samples(datalists: Mapping[str, Any], class_names: Sequence[str], dest: Path, n: int) -> list[dict]:
    """Copy up to ``n`` validation cases (classes alternating) into ``dest``; write ``dest/labels.csv``.

    Cases that are not single files (e.g. a DICOM series folder) or have no integer label are not copied; each is
    named in a log message.
    """
    items = list((datalists or {}).get("val") or (datalists or {}).get("test") or [])
    by_class: dict[int, list[Mapping[str, Any]]] = {}
    for it in items:
        image = it.get("image") if isinstance(it, Mapping) else None
        try:
            label = int(it["label"])  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            label = None
        if not isinstance(image, (str, os.PathLike)) or not Path(image).is_file() or label is None:
            logger.info(f"run samples: not copying {image!r} (not a single file with an integer class label)")
            continue
        by_class.setdefault(label, []).append(it)
    chosen: list[Mapping[str, Any]] = []
    while len(chosen) < n and any(by_class.values()):
        for c in sorted(by_class):
            if by_class[c] and len(chosen) < n:
                chosen.append(by_class[c].pop(0))
    if not chosen:
        return []
    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, it in enumerate(chosen):
        src = Path(it["image"])
        name = f"{i:02d}_{src.name}"
        if src.resolve() != (dest / name).resolve():
            shutil.copy2(src, dest / name)
        label = int(it["label"])
        rows.append([name, class_names[label] if 0 <= label < len(class_names) else label])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "label"])
    writer.writerows(rows)
    atomic_write_text(dest / _SAMPLE_LABELS, buf.getvalue())
    return [{"image": r[0], "label": r[1]} for r in rows]


def _is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("$", "@", "%"))


def _substitute(
    config: dict[str, Any], values: Mapping[str, Any], root_expr: str, literals_only: bool
) -> dict[str, Any]:
    """``values`` in place of the top-level ids of ``config`` (with ``literals_only``, only ids holding a literal)."""
    out = dict(config)
    for k, v in values.items():
        if k in out and (k in _RUN_DECIDED or not (literals_only and (_is_expression(out[k]) or k in _TRAIN_ONLY))):
            out[k] = _jsonable(v)
    if "bundle_root" in out:
        out["bundle_root"] = root_expr
    return out


def _quote(arg: str) -> str:
    if "'" in arg and not any(c in arg for c in '"$`\\'):
        return f'"{arg}"'
    return shlex.quote(arg)


def _command() -> str:
    argv = list(sys.argv)
    if argv and argv[0].replace("\\", "/").endswith("monai/bundle/__main__.py"):
        return "python -m monai.bundle " + " ".join(_quote(a) for a in argv[1:])
    return " ".join(_quote(a) for a in ["python", *argv]) if argv and argv[0] else "(in-process workflow)"


def _metadata(
    template_meta: dict[str, Any],
    spec: Mapping[str, Any],
    run_name: str,
    data_note: str,
    metrics: Mapping[str, Any] | None,
) -> dict[str, Any]:
    meta = json.loads(json.dumps(template_meta))
    names = list(spec["class_names"])
    size = spec["image_size"]
    shape = [size, size] if isinstance(size, int) else list(size)
    base = meta.get("name", "monai-transfer bundle")
    meta["name"] = f"{base}: trained run {run_name}"
    meta["task"] = f"Image classification: {' vs '.join(names)}"
    meta["description"] = (
        f"Trained run '{run_name}' of the '{base}' bundle: {spec['backbone']} at {shape[0]}x{shape[1]} px, "
        f"classes {names}. Configs, weights (models/model.pt), weights record (models/model.json) and threshold "
        f"travel together; see docs/README.md. {data_note}"
    )
    if "image_classes" in meta:
        meta["image_classes"] = re.sub(r"\d+x\d+", f"{shape[0]}x{shape[1]}", str(meta["image_classes"]))
    meta["label_classes"] = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
    meta["pred_classes"] = f"softmax probabilities for {', '.join(names)}"
    if metrics:
        meta["eval_metrics"] = {f"val_{k}": metrics[k] for k in _REPORTED_METRICS if k in metrics}
    nd = meta.setdefault("network_data_format", {})
    inputs, outputs = nd.setdefault("inputs", {}), nd.setdefault("outputs", {})
    image = inputs.setdefault("image", {})
    image["spatial_shape"] = shape
    image["num_channels"] = int(spec["in_channels"])
    pred = outputs.setdefault("pred", {})
    pred["num_channels"] = len(names)
    pred["spatial_shape"] = [1, len(names)]
    pred["channel_def"] = {str(i): n for i, n in enumerate(names)}
    return meta


def _readme(
    run: Path,
    template: Path,
    spec: Mapping[str, Any],
    values: Mapping[str, Any],
    data: Mapping[str, Any] | None,
    metrics_doc: Mapping[str, Any] | None,
    samples: list[dict],
    volume: bool,
) -> str:
    names = spec["class_names"]
    lines = [
        f"# Trained run `{run.name}`",
        "",
        f"A complete MONAI bundle written by training the `{template.name}` bundle. Its configs hold the values "
        "this run used; the weights record `models/model.json` says what the network expects, and loading "
        "`models/model.pt` into a config that disagrees fails with both values named.",
        "",
        "## Command",
        "",
        "```",
        _command(),
        "```",
        "",
        "## What the network expects",
        "",
        f"- backbone `{spec['backbone']}`, {spec['in_channels']} input channels, image size {spec['image_size']}",
        f"- classes (output index order): {', '.join(f'{i}: `{n}`' for i, n in enumerate(names))}",
        f"- normalisation: mean {spec['normalization']['mean']}, std {spec['normalization']['std']}, "
        f"grey repeated to RGB: {spec['normalization']['repeat_channels']}",
    ]
    if spec.get("slicing"):
        lines.append(
            f"- slicing: axis {spec['slicing']['axis']}, neighbour offsets {spec['slicing']['offsets']}; "
            f"aggregation `{values.get('aggregation')}`"
        )
    lines += ["", "## Data", "", f"- dataset: `{values.get('dataset_dir', '?')}`"]
    for split, d in (data or {}).items():
        per = ", ".join(
            f"{names[int(k)] if str(k).isdigit() and int(k) < len(names) else k}: {v}"
            for k, v in d.get("per_class", {}).items()
        )
        lines.append(f"- {split}: {d.get('n')} {'volumes' if volume else 'images'} ({per})")
    if samples:
        lines.append(f"- `data/samples/`: {len(samples)} validation cases copied for a first inference run")
    lines += ["", "## Metrics (validation split, best checkpoint)", ""]
    if metrics_doc:
        m = metrics_doc.get("metrics", {})
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {m[k]:.4f} |" for k in _REPORTED_METRICS if isinstance(m.get(k), (int, float))]
        lines.append(f"| cases | {m.get('n_samples', '?')} |")
        thr = metrics_doc.get("threshold", {})
        value = thr.get("value") if isinstance(thr, dict) else None
        if isinstance(value, (int, float)):
            lines.append(f"\nDecision threshold {value:.4f}, stored in `models/threshold.json`.")
        elif isinstance(value, list):  # multi-label: one threshold per label
            per = ", ".join(f"{v:.4f}" for v in value)
            lines.append(f"\nDecision thresholds per label ({per}), stored in `models/threshold.json`.")
    else:
        lines.append("No validation report was found.")
    images = "data/samples"
    lines += [
        "",
        "## Use it",
        "",
        "```bash",
        f"RUN={run}",
        "# inference on the copied samples (or add --input_dir DIR)",
        "python -m monai.bundle run --config_file $RUN/configs/inference.json",
        "# evaluation on labelled cases",
        f"python -m monai_transfer.evaluate --bundle $RUN --images $RUN/{images} --labels $RUN/{images}/labels.csv "
        "--output $RUN/eval/samples",
        "# evaluation of the run's own split (train.json + evaluate.json overlay)",
        "python -m monai.bundle run --config_file \"['$RUN/configs/train.json','$RUN/configs/evaluate.json']\"",
        "# TorchScript export",
        "python -m monai.bundle ckpt_export network_def --bundle_root $RUN --config_file $RUN/configs/inference.json",
        "# MONAI Label, from the monai-transfer checkout (bash scripts/setup_label_env.sh .venv-label first)",
        ".venv-label/bin/python -m monailabel.main start_server --app apps/monailabel --studies IMAGES "
        "--conf models $RUN",
        "```",
        "",
    ]
    return "\n".join(lines)


def export_run_bundle(
    output_dir: str | os.PathLike,
    template_dir: str | os.PathLike,
    values: Mapping[str, Any],
    spec: Mapping[str, Any],
    datalists: Mapping[str, Any] | None = None,
    metrics_file: str | os.PathLike | None = None,
    ckpt_name: str = "model.pt",
    n_samples: int = 4,
) -> Path:
    """Make ``output_dir`` a complete bundle of this run (called at the end of ``train.json`` ``run``).

    Args:
        output_dir: the run folder (``models/<ckpt_name>`` must exist).
        template_dir: the bundle that was trained (its ``configs/`` are the templates).
        values: this run's values of the template's top-level ids (``class_names``, ``image_size``, ...); each one
            replaces the id of that name in the copied ``train.json``, and in the other configs where that id holds
            a literal (not a ``$``/``@`` expression derived from other ids).
        spec: what the network expects (:func:`model_spec` of the training config), written as the weights record.
        datalists: the run's splits: counts for the README and the validation cases copied to ``data/samples``.
        metrics_file: the validation report's ``metrics.json``.
        ckpt_name: the weights file in ``models/``.
        n_samples: validation cases to copy into ``data/samples`` (0: none, e.g. when the images may not leave
            their site; ``inference.json`` then keeps the template's ``input_dir``, so pass ``--input_dir``).

    Returns:
        the run folder.

    Raises:
        FileNotFoundError: when the weights or the template's ``configs/metadata.json`` are missing.
    """
    run, template = Path(output_dir).resolve(), Path(template_dir).resolve()
    ckpt = run / "models" / ckpt_name
    volume = bool(spec.get("slicing"))
    extra = {k: values[k] for k in ("aggregation", "aggregation_k", "dataset_dir", "epochs", "seed") if k in values}
    write_checkpoint_record(ckpt, spec, extra=extra)
    if run == template:
        logger.info(
            f"trained in place in the bundle folder {run}: its configs are kept as they are; wrote the weights "
            f"record {checkpoint_record_path(ckpt)}"
        )
        return run
    meta_file = template / "configs" / "metadata.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"template bundle {template}: no configs/metadata.json")
    metrics_doc = None
    if metrics_file is not None and Path(metrics_file).is_file():
        metrics_doc = json.loads(Path(metrics_file).read_text(encoding="utf-8"))
    from monai_transfer.engines.workflow import describe_datalists

    data = describe_datalists(datalists) if datalists else None
    samples = _copy_samples(datalists or {}, spec["class_names"], run / "data" / "samples", int(n_samples))
    root_expr = f"$monai_transfer.utils.run_bundle.resolve_run_root({str(run)!r})"
    for name in _CONFIG_FILES:
        src = template / "configs" / name
        if not src.is_file():
            continue
        # train.json produced the values: all its ids take them; the other configs derive ids such as dataset_dir
        # (inference: @input_dir) from others, so only their literal settings are replaced
        config = _substitute(
            json.loads(src.read_text(encoding="utf-8")), values, root_expr, literals_only=name != "train.json"
        )
        if name == "inference.json" and samples and "input_dir" in config:
            config["input_dir"] = "$@bundle_root + '/data/samples'"
        atomic_write_json(run / "configs" / name, config)
    if (template / "configs" / "logging.conf").is_file():
        shutil.copy2(template / "configs" / "logging.conf", run / "configs" / "logging.conf")
    default_data = str(template / "data")
    data_note = (
        f"Trained on {values.get('dataset_dir')}."
        if not str(values.get("dataset_dir", "")).startswith(default_data)
        else "Trained on the template bundle's shipped data."
    )
    meta = _metadata(
        json.loads(meta_file.read_text(encoding="utf-8")),
        spec,
        run.name,
        data_note,
        (metrics_doc or {}).get("metrics"),
    )
    if not str(values.get("dataset_dir", "")).startswith(default_data):
        meta["data_source"] = f"{values.get('dataset_dir')} (the run's training data)"
    atomic_write_json(run / "configs" / "metadata.json", meta)
    for extra_doc in ("data_license.txt",):
        if (template / "docs" / extra_doc).is_file() and data_note.endswith("shipped data."):
            (run / "docs").mkdir(parents=True, exist_ok=True)
            shutil.copy2(template / "docs" / extra_doc, run / "docs" / extra_doc)
    atomic_write_text(
        run / "docs" / "README.md", _readme(run, template, spec, values, data, metrics_doc, samples, volume)
    )
    logger.info(f"run bundle written to {run} (configs/, models/{ckpt_name} + model.json, docs/README.md)")
    return run
