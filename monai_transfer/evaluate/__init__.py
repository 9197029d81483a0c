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

A thin command line over the bundle's own ``configs/inference.json``, run as its evaluator runs it (the components:
:mod:`monai_transfer.evaluate.bundle_inference`), one case at a time in flat memory
(:mod:`monai_transfer.evaluate.streaming`).

Bad cases are reported by name (``failures.csv``, ``failures.json``, the log) and the run goes on. Exit codes: 0 (every
case evaluated, or failures with ``--tolerate_failures``), 1 (usage or environment error: bundle, checkpoint,
images, argument, invalid config or ``threshold.json``, a threshold chosen on calibrated probabilities without its
calibration, NaN/inf weights, an unwritable report), 2 (some case failed: unreadable, dangling link, no or bad
label, non-finite probabilities; or none could be evaluated). See ``docs/evaluate.md``.

Example::

    python -m monai_transfer.evaluate --bundle bundles/ct_slices --images /data/test_volumes \\
        --labels /data/test_labels.csv --output eval/test
"""

from __future__ import annotations

from monai_transfer.evaluate.cases import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, EvaluationUsageError, list_cases
from monai_transfer.evaluate.cli import main
from monai_transfer.evaluate.run import evaluate_bundle

__all__ = ["evaluate_bundle", "main", "EvaluationUsageError", "list_cases", "EXIT_OK", "EXIT_USAGE", "EXIT_FAILURES"]
