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

A thin command line over the bundle's own ``configs/inference.json``: its ``network_def`` with the checkpoint
(verified as by the bundle's ``VerifiedCheckpointLoader``), ``inferer`` (``TTAInferer`` with ``--tta``),
``postprocessing`` (the temperature of ``calibration.json`` beside the checkpoint, then the activation) and
preprocessing (2D: ``preprocessing``; volumes: ``volume_preprocessing``, ``slicing``, ``aggregation``); see
:mod:`monai_transfer.engines.bundle_inference` and :mod:`monai_transfer.engines.streaming` (flat memory).

Bad cases are reported by name (``failures.csv``, ``failures.json``, the log) and the run goes on. Exit codes: 0 (every
case evaluated, or failures with ``--tolerate-failures``), 1 (usage or environment error: bundle, checkpoint,
images, argument, invalid config or ``threshold.json``, a threshold chosen on calibrated probabilities without its
calibration, NaN/inf weights, an unwritable report), 2 (some case failed: unreadable, dangling link, no or bad
label, non-finite probabilities; or none could be evaluated). See ``docs/evaluate.md``.

Example::

    python -m monai_transfer.evaluate --bundle bundles/ct_slices --images /data/test_volumes \\
        --labels /data/test_labels.csv --output eval/test
"""

from __future__ import annotations

from monai_transfer.data.cases import (
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
from monai_transfer.engines.bundle_inference import resolve_aggregation as _resolve_aggregation
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
