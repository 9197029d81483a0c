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

A thin command line over the bundle's own ``configs/inference.json`` (any bundle that follows the bundle contract of
``docs/ARCHITECTURE.md``): ``network_def`` with the checkpoint (``--ckpt`` or ``ckpt_path``, loaded and verified by
:func:`monai_transfer.handlers.model_loader.load_verified_model`, as the bundle's ``VerifiedCheckpointLoader`` does),
its ``inferer`` (``TTAInferer`` with ``use_tta``/``--tta``) and its ``postprocessing`` (the temperature of
``calibration.json`` beside the checkpoint, then the activation), ``class_names`` (or the ``channel_def`` of
``metadata.json``'s ``pred`` output), and:

- 2D bundles (``bundles/xray``): ``preprocessing`` (``{"image": path}`` -> ``{"image": (C, H, W)}``);
- volume bundles (``bundles/ct_slices``): ``volume_preprocessing`` (``{"image": path}`` -> volume dict),
  ``slicing`` (volume dict -> list of slice dicts with ``image``) and ``aggregation`` (``"mean"``, ``"max"``,
  ``"topk_mean"`` pooled by :func:`~monai_transfer.data.volumes.aggregate_volume_probs` with ``k`` from
  ``aggregation_k``; or a dict ``{"method": ..., "k": ...}``; or a callable ``(n_slices, K) -> (K,)``).

Cases are streamed (:mod:`monai_transfer.evaluate.streaming`): flat memory whatever the number of cases.

Bad cases are reported by name (``failures.csv``, ``failures.json`` and the log); the run completes for the good
ones. Exit codes: 0 (every case evaluated, or failures with ``--tolerate-failures``), 1 (usage or environment
error: missing bundle, checkpoint or images, bad argument, an invalid ``inference.json``/``metadata.json`` or
``threshold.json``, a threshold chosen on calibrated probabilities without its calibration, a checkpoint with NaN/inf
weights, or a report file that cannot be written, e.g. a full disk), 2 (at least one case failed, or none could be
evaluated). A case fails (exit 2) when it cannot be read (also a dangling symbolic link), has no or a bad label, or
the network gives it non-finite (NaN) probabilities; such a case is never reported as a prediction. File names that
are not valid UTF-8 are written with ``\\xNN`` escapes.

Example::

    python -m monai_transfer.evaluate --bundle bundles/ct_slices --images /data/test_volumes \\
        --labels /data/test_labels.csv --output eval/test
"""

from __future__ import annotations

from monai_transfer.evaluate.bundle import resolve_aggregation as _resolve_aggregation
from monai_transfer.evaluate.cases import (
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_USAGE,
    IMAGE_2D_EXTENSIONS,
    VOLUME_EXTENSIONS,
    CaseFailure,
    CasePrediction,
    EvaluationResult,
    EvaluationUsageError,
    list_cases,
    read_labels_csv,
)
from monai_transfer.evaluate.cli import build_arg_parser, main, parse_overrides
from monai_transfer.evaluate.run import evaluate_bundle

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
    "_resolve_aggregation",
]
