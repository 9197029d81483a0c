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
- :func:`resolve_run_root` is the run configs' ``bundle_root``: the run folder, wherever the configs are run from.

The weights record itself (what the network expects, checked when the weights load) is
:mod:`monai_transfer.networks.checkpoint_record`, a lower layer that handlers and MONAI Label tasks import; this module
sits on top of the package (it reads the data lists' summary of :mod:`monai_transfer.engines.workflow`).
"""

from __future__ import annotations

import ast
import csv
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

from monai_transfer.engines.workflow import describe_datalists
from monai_transfer.networks.checkpoint_record import (
    checkpoint_record_path,
    preprocessing_probe,
    write_checkpoint_record,
)
from monai_transfer.utils.bundle import resolving_parser
from monai_transfer.utils.io import atomic_write_json, atomic_write_text, to_jsonable

__all__ = ["resolve_run_root", "export_run_bundle"]

logger = logging.getLogger(__name__)

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


def _workflow_bundle_roots() -> list[Path]:
    """Bundle folders of the ``monai.bundle.ConfigWorkflow`` objects on this thread's stack (innermost first): the
    folder holding the config files being run, as ``python -m monai.bundle run`` and the workflow API load them."""
    from monai.bundle import ConfigWorkflow

    roots, frame = [], sys._getframe(1)
    while frame is not None:
        obj = frame.f_locals.get("self")
        if isinstance(obj, ConfigWorkflow) and getattr(obj, "config_root_path", None) is not None:
            roots.append(Path(obj.config_root_path).absolute().parent)
        frame = frame.f_back
    return roots


def _argv_config_files(argv: Sequence[str]) -> list[Path]:
    """The files of ``--config_file VALUE`` / ``--config_file=VALUE`` in ``argv``: a path (spaces, quotes and any other
    character kept), a Python/JSON list of paths, or comma-separated paths (as MONAI reads them)."""
    values = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config_file"]
    values += [a.split("=", 1)[1] for a in argv if a.startswith("--config_file=")]
    files: list[Path] = []
    for value in values:
        try:
            parsed = ast.literal_eval(value) if value.lstrip().startswith(("[", "(")) else value
        except (ValueError, SyntaxError):
            parsed = value
        names = [parsed] if isinstance(parsed, str) else [str(v) for v in parsed]
        if len(names) == 1 and not Path(names[0]).is_file() and "," in names[0]:
            names = names[0].split(",")
        files += [Path(n.strip()) for n in names if n.strip()]
    return files


def resolve_run_root(exported_to: str | os.PathLike) -> str:
    """``bundle_root`` of a run folder's configs: the folder itself, wherever it was moved or copied to.

    In order: ``$MONAI_TRANSFER_BUNDLE_ROOT``; the folder of the config files a ``monai.bundle.ConfigWorkflow`` on the
    stack is running (``python -m monai.bundle run --config_file ...`` and the workflow API); the bundle of
    ``--config_file`` in the command line (a path with spaces or other characters, a list, ``--config_file=...``); the
    current folder when it is a bundle; ``exported_to``. A run folder copied to another path therefore reads its own
    weights and writes its own predictions, never the original folder's. When none of the first four applies and the
    configs are read from elsewhere (a bare ``ConfigParser``), pass ``bundle_root``.

    Raises:
        FileNotFoundError: when none of these is a bundle folder; the message says how to pass ``--bundle_root``.
    """
    candidates: list[Path] = []
    env = os.environ.get("MONAI_TRANSFER_BUNDLE_ROOT")
    if env:
        candidates.append(Path(env))
    candidates += _workflow_bundle_roots()
    candidates += [f.absolute().parent.parent for f in _argv_config_files(list(sys.argv))]
    candidates += [Path.cwd(), Path(exported_to)]
    for c in candidates:
        if (c / "configs" / "metadata.json").is_file():
            return str(c.resolve())
    raise FileNotFoundError(
        f"cannot find the run bundle (exported to {exported_to}) from {Path.cwd()}: run from inside the run folder "
        "or pass --bundle_root /path/to/run"
    )


# ------------------------------------------------------------------------------------------------------- export
def _training_probe(volume: bool) -> dict[str, Any] | None:
    """What the training's validation preprocessing (``validate#preprocessing`` of the config running this export)
    does to a synthetic image, for the weights record; ``None`` outside a bundle run."""
    parser = resolving_parser()
    if parser is None or "validate#preprocessing" not in parser:
        return None
    try:
        return preprocessing_probe(parser.get_parsed_content("validate#preprocessing"), volume)
    except Exception as e:  # the record then holds the ids only, as before
        logger.warning(f"weights record: cannot describe the training's preprocessing on a probe image ({e})")
        return None


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
            out[k] = to_jsonable(v)
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
    # MONAI renamed optional_packages_version to required_packages_version (DEPRECATED_ID_MAPPING) and warns on every
    # command of a bundle that has the old name: a run folder gets only the new one, the old entries merged into it
    optional = meta.pop("optional_packages_version", None)
    if optional or "required_packages_version" not in meta:
        meta["required_packages_version"] = {**(optional or {}), **meta.get("required_packages_version", {})}
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


def _audit_lines(audit: Mapping[str, Any] | None, run: Path) -> list[str]:
    """README lines for the data checks of :func:`~monai_transfer.data.bundle_datalists` (``describe_datalists``'s
    ``audit``): near-duplicates across splits, label conflicts, DICOM patient ids, and where the audit report is."""
    if not audit:
        return []
    lines = []
    dup = audit.get("duplicates")
    if isinstance(dup, Mapping):
        lines.append(
            f"- near-duplicate check: {dup.get('n_clusters_across_splits', 0)} cluster(s) of copies across splits "
            f"({dup.get('n_files_in_clusters_across_splits', 0)} files), {dup.get('n_clusters', 0)} cluster(s) in "
            f"all, {dup.get('n_label_conflicts', 0)} with conflicting labels, {dup.get('n_unreadable', 0)} "
            "unreadable file(s)"
        )
    dicom = audit.get("dicom")
    if isinstance(dicom, Mapping):
        lines.append(
            f"- DICOM: {dicom.get('patients')} patient(s) in {dicom.get('items')} item(s); "
            f"{dicom.get('patient_id_fallback_to_file', 0)} without a PatientID (each its own group)"
        )
    report = audit.get("report")
    if report:
        try:
            shown = Path(report).resolve().relative_to(run).as_posix()
        except ValueError:
            shown = str(report)
        sheet = Path(report).with_name("cross_split_pairs.png")
        more = ", the closest pairs across splits side by side in `cross_split_pairs.png`" if sheet.is_file() else ""
        lines.append(f"- audit report: `{shown}` (every near-duplicate cluster, `clusters.csv`{more})")
    return lines


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
    """The run's ``docs/README.md``: what the network expects, the data, the validation metrics and the commands."""
    lines = _readme_network_lines(run, template, spec, values)
    lines += _readme_data_lines(run, spec["class_names"], values, data, samples, volume)
    lines += _readme_metrics_lines(metrics_doc)
    lines += _readme_usage_lines(run)
    return "\n".join(lines)


def _readme_network_lines(run: Path, template: Path, spec: Mapping[str, Any], values: Mapping[str, Any]) -> list[str]:
    """README title, command and what the network expects (backbone, classes, normalisation, slicing)."""
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
    return lines


def _readme_data_lines(
    run: Path,
    names: list[str],
    values: Mapping[str, Any],
    data: Mapping[str, Any] | None,
    samples: list[dict],
    volume: bool,
) -> list[str]:
    """README ``## Data``: the dataset, cases per split and class, the audit and the copied samples."""
    lines = ["", "## Data", "", f"- dataset: `{values.get('dataset_dir', '?')}`"]
    for split, d in (data or {}).items():
        if split == "audit" or not isinstance(d, Mapping) or "n" not in d:
            continue  # the checks' summary, not a split: below
        if "per_class" in d:
            per = ", ".join(
                f"{names[int(k)] if str(k).isdigit() and int(k) < len(names) else k}: {v}"
                for k, v in d["per_class"].items()
            )
        else:  # multi-label: positives per label
            per = ", ".join(f"{n}: {v}" for n, v in zip(names, d.get("positives_per_label", []))) + " positive"
        lines.append(f"- {split}: {d['n']} {'volumes' if volume else 'images'} ({per})")
    lines += _audit_lines((data or {}).get("audit"), run)
    if samples:
        lines.append(f"- `data/samples/`: {len(samples)} validation cases copied for a first inference run")
    return lines


def _readme_metrics_lines(metrics_doc: Mapping[str, Any] | None) -> list[str]:
    """README ``## Metrics``: the validation metrics table and the stored decision threshold(s)."""
    lines = ["", "## Metrics (validation split, best checkpoint)", ""]
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
    return lines


def _readme_usage_lines(run: Path) -> list[str]:
    """README ``## Use it``: inference, evaluation, export and MONAI Label commands for this run."""
    images = "data/samples"
    return [
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


def _write_configs(run: Path, template: Path, values: Mapping[str, Any], has_samples: bool) -> None:
    """The template's configs with this run's ``values`` (and ``logging.conf``) into ``run/configs``."""
    root_expr = f"$monai_transfer.run_bundle.resolve_run_root({str(run)!r})"
    for name in _CONFIG_FILES:
        src = template / "configs" / name
        if not src.is_file():
            continue
        # train.json produced the values: all its ids take them; the other configs derive ids such as dataset_dir
        # (inference: @input_dir) from others, so only their literal settings are replaced
        config = _substitute(
            json.loads(src.read_text(encoding="utf-8")), values, root_expr, literals_only=name != "train.json"
        )
        if name == "inference.json" and has_samples and "input_dir" in config:
            config["input_dir"] = "$@bundle_root + '/data/samples'"
        atomic_write_json(run / "configs" / name, config)
    if (template / "configs" / "logging.conf").is_file():
        shutil.copy2(template / "configs" / "logging.conf", run / "configs" / "logging.conf")


def _write_metadata(
    run: Path,
    template: Path,
    meta_file: Path,
    spec: Mapping[str, Any],
    values: Mapping[str, Any],
    metrics_doc: Mapping[str, Any] | None,
) -> None:
    """``configs/metadata.json`` of the run (and the data licence when it was trained on the shipped data)."""
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
        spec: what the network expects (:func:`~monai_transfer.networks.checkpoint_record.model_spec` of the training
            config), written as the weights record.
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
    probe = _training_probe(volume)
    write_checkpoint_record(ckpt, {**spec, "preprocessing_probe": probe} if probe else spec, extra=extra)
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
    data = describe_datalists(datalists) if datalists else None
    samples = _copy_samples(datalists or {}, spec["class_names"], run / "data" / "samples", int(n_samples))
    _write_configs(run, template, values, bool(samples))
    _write_metadata(run, template, meta_file, spec, values, metrics_doc)
    atomic_write_text(
        run / "docs" / "README.md", _readme(run, template, spec, values, data, metrics_doc, samples, volume)
    )
    logger.info(f"run bundle written to {run} (configs/, models/{ckpt_name} + model.json, docs/README.md)")
    return run
