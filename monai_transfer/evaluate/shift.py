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
"""``--shift_suite`` of ``python -m monai_transfer.evaluate``: the labelled cases re-scored under acquisition shifts.

Each case is loaded once by the bundle's ``load_transforms`` (an image in [0, 1] at the network's size), corrupted by
:class:`~monai_transfer.transforms.shift.AcquisitionShift` (every family, severities 1..5, seeded), normalised by the
bundle's ``final_transforms`` and scored through the same :class:`~monai_transfer.evaluate.streaming.BatchRunner`
(network, inferer, temperature, activation) as the evaluation itself; the clean predictions are the evaluation's own.
The scores (:func:`~monai_transfer.metrics.shift.score_shift_suite`, at the evaluation's operating point) go to
``shift.json``, ``shift.md`` and ``shift.png`` (:func:`~monai_transfer.reports.shift.write_shift_report`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose

from monai_transfer.engines.utils import auto_device
from monai_transfer.evaluate.bundle_inference import Bundle, load_bundle, load_network, parsed
from monai_transfer.evaluate.cases import CasePrediction, EvaluationUsageError
from monai_transfer.evaluate.streaming import BatchRunner
from monai_transfer.metrics.shift import score_shift_suite
from monai_transfer.reports.shift import write_shift_report
from monai_transfer.transforms.shift import SEVERITIES, SHIFT_FAMILIES, AcquisitionShift

__all__ = [
    "SHIFT_IDS",
    "check_shift_suite",
    "parse_families",
    "select_cases",
    "shift_predictions",
    "run_shift_suite",
    "bundle_shift_predictions",
]

#: the bundle ids the suite needs: loading to [0, 1] at the network's size, then the backbone's normalisation
SHIFT_IDS = ("load_transforms", "final_transforms")


def parse_families(families: str | Sequence[str] | None) -> list[str]:
    """``None``/``"all"``: every family of :data:`SHIFT_FAMILIES`; else a comma-separated string or a list, each
    checked (a usage error names the unknown one and lists the valid names)."""
    if families is None or families == "all":
        return list(SHIFT_FAMILIES)
    names = [f.strip() for f in families.split(",")] if isinstance(families, str) else [str(f) for f in families]
    bad = [f for f in names if f not in SHIFT_FAMILIES]
    if bad or not names:
        raise EvaluationUsageError(f"--shift_families: unknown {bad or names}; choose from {', '.join(SHIFT_FAMILIES)}")
    return names


def check_shift_suite(b: Bundle, labels: Any) -> None:
    """Refuse, before any case runs, a shift suite the bundle or the arguments cannot give."""
    if labels is None:
        raise EvaluationUsageError("--shift_suite scores predictions against labels: pass --labels CSV")
    if b.kind != "2d" or not b.task.is_binary:
        raise EvaluationUsageError(
            f"--shift_suite supports 2D binary bundles; bundle {b.root} is {b.kind} {b.mode} "
            f"with classes {b.class_names}"
        )
    missing = [k for k in SHIFT_IDS if k not in b.parser]
    if missing:
        raise EvaluationUsageError(
            f"--shift_suite: bundle {b.root} (configs/inference.json) has no {missing}: the suite corrupts the image "
            "in [0, 1] between the bundle's loading and its normalisation (see bundles/xray/configs/inference.json)"
        )


def select_cases(preds: Sequence[CasePrediction], max_cases: int | None, seed: int = 0) -> list[CasePrediction]:
    """The labelled predictions, or a class-stratified random ``max_cases`` of them (seeded, case order kept)."""
    labelled = [p for p in preds if p.label is not None]
    if max_cases is None or len(labelled) <= int(max_cases):
        return labelled
    y = np.asarray([int(p.label) for p in labelled])
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n = max(1, int(round(int(max_cases) * len(idx) / len(y))))
        keep += rng.choice(idx, min(n, len(idx)), replace=False).tolist()
    return [labelled[i] for i in sorted(keep)]


def shift_predictions(
    b: Bundle,
    run: BatchRunner,
    images: Sequence[torch.Tensor],
    families: Sequence[str],
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, dict[int, np.ndarray]]:
    """``{family: {severity: positive-class probabilities}}`` of ``images`` (loaded, in [0, 1]) under every family
    and severity, through the bundle's ``final_transforms`` and ``run``."""
    final = Compose(parsed(b.parser, "final_transforms", b.root))
    out: dict[str, dict[int, np.ndarray]] = {}
    for family in families:
        out[family] = {}
        for severity in SEVERITIES:
            shift = AcquisitionShift(family, severity, seed=seed)
            probs = []
            for i in range(0, len(images), batch_size):
                batch = [final({"image": shift(img)})["image"] for img in images[i : i + batch_size]]
                probs.append(run(batch)[:, 1].double().numpy())
            out[family][severity] = np.concatenate(probs)
    return out


def run_shift_suite(
    b: Bundle,
    run: BatchRunner,
    preds: Sequence[CasePrediction],
    threshold: float,
    out: Path,
    families: str | Sequence[str] | None = None,
    max_cases: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
    log: logging.Logger | None = None,
) -> dict[str, Path]:
    """Score the labelled cases of an evaluation under the shift suite and write the report into ``out``.

    Returns:
        the written files (``shift_json``, ``shift_md``, ``shift_png``).
    """
    log = log or logging.getLogger(__name__)
    names = parse_families(families)
    cases = select_cases(preds, max_cases, seed)
    y = np.asarray([int(p.label) for p in cases])
    if len(np.unique(y)) < 2:
        log.warning(f"--shift_suite: the {len(y)} labelled case(s) hold one class; no shift report")
        return {}
    t0 = time.perf_counter()
    load = Compose(parsed(b.parser, "load_transforms", b.root))
    images = [torch.as_tensor(load({"image": p.path})["image"]).as_subclass(torch.Tensor) for p in cases]
    shifted = shift_predictions(b, run, images, names, batch_size, seed)
    clean = np.asarray([float(np.asarray(p.probs).reshape(-1)[1]) for p in cases])
    scores = score_shift_suite(y, clean, shifted, float(threshold), seed=seed)
    scores["meta"] = {
        "n_cases": len(cases),
        "n_labelled": sum(p.label is not None for p in preds),
        "max_cases": max_cases,
        "seed": seed,
        "families": {f: {"params": list(SHIFT_FAMILIES[f].params), "kind": SHIFT_FAMILIES[f].kind} for f in names},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    files = write_shift_report(out, scores)
    w = scores["worst"].get("auc", {})
    log.info(
        f"shift suite: {len(cases)} case(s), {len(names)} families x {len(SEVERITIES)} severities; suite AUC "
        f"{scores['suite_auc']:.4f}, worst AUC {w.get('value', float('nan')):.4f} ({w.get('family')}, severity "
        f"{w.get('severity')}); see {files['shift_md']}"
    )
    return files


def bundle_shift_predictions(
    bundle: str | Path,
    ckpt: str | Path,
    images: Sequence[str | Path],
    families: str | Sequence[str] | None = None,
    overrides: dict[str, Any] | None = None,
    calibration: str | Path | None = None,
    device: str | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, dict[int, np.ndarray]]]:
    """Positive-class probabilities of ``images`` clean and under every family and severity, through the bundle's
    ``inference.json`` components with ``ckpt`` (the evaluation's path: ``load_transforms``, the shift,
    ``final_transforms``, network, inferer, temperature, activation), for callers that pool the raw predictions
    (out-of-fold predictions of the CV fold models, ``scripts/bench/accuracy_xray.py``).

    Args:
        calibration: the ``calibration.json`` to apply (the bundle's ``calibration_path``); ``None``: the bundle's
            default (beside its checkpoint), ``"none"``: no temperature.

    Returns:
        ``(clean (N,), {family: {severity: (N,)}})``.
    """
    ids = dict(overrides or {})
    if calibration is not None:
        ids["calibration_path"] = None if str(calibration).lower() == "none" else str(calibration)
    b = load_bundle(bundle, ids, {"ckpt_path": str(ckpt)})
    check_shift_suite(b, labels=True)
    dev = auto_device(device)
    run = BatchRunner(b, load_network(b, Path(ckpt), dev), dev)
    load = Compose(parsed(b.parser, "load_transforms", b.root))
    final = Compose(parsed(b.parser, "final_transforms", b.root))
    loaded = [torch.as_tensor(load({"image": str(p)})["image"]).as_subclass(torch.Tensor) for p in images]
    clean = [
        run([final({"image": x})["image"] for x in loaded[i : i + batch_size]])
        for i in range(0, len(loaded), batch_size)
    ]
    shifted = shift_predictions(b, run, loaded, parse_families(families), batch_size, seed)
    return torch.cat(clean)[:, 1].double().numpy(), shifted
