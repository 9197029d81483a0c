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
"""Cross-validated selection on the training split: ``python -m monai_transfer.cv --bundle bundles/xray --folds 5``.

The number of epochs, the temperature and the threshold are chosen on out-of-fold predictions of the bundle's own
``train.json`` run per fold, then one final fit is scored once on the validation split (:mod:`monai_transfer.cv.run`);
``cli.py`` is the command line (``--<id> VALUE`` pairs override ``train.json`` ids).
``bundles/xray/configs/train_cv.json`` runs the same through ``python -m monai.bundle run``. See
``docs/generalisation.md``.
"""

from __future__ import annotations

from monai_transfer.cv.cli import build_arg_parser, main
from monai_transfer.cv.run import (
    align_predictions,
    choose_epoch,
    default_output_dir,
    read_datalists,
    run_cross_validation,
)

__all__ = [
    "run_cross_validation",
    "default_output_dir",
    "read_datalists",
    "align_predictions",
    "choose_epoch",
    "main",
    "build_arg_parser",
]
