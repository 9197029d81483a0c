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
"""MONAI Label integration: serve the project's classification bundles in ``monailabel start_server``.

The helpers in :mod:`monai_transfer.label.utils` are pure Python. The task classes in :mod:`monai_transfer.label.tasks`
subclass MONAI Label's bundle tasks; MONAI Label is an optional extra installed in its own environment
(``scripts/setup_label_env.sh``), so they raise ``OptionalImportError`` only when instantiated without it.
:mod:`monai_transfer.label.volume_tasks` serves 2.5D slice bundles (``bundles/ct_slices``) with one prediction per
volume. The app itself is ``apps/monailabel/main.py``; see ``docs/monailabel.md``.
"""

from __future__ import annotations

from monai_transfer.label.tasks import (
    ClassificationBundleInferTask,
    ClassificationBundleTrainTask,
    has_monailabel,
    multilabel_validation_indices,
    scores_to_result,
)
from monai_transfer.label.utils import (
    INFER_CONFIGS,
    LABEL_FILE_SUFFIX,
    bundle_task_mode,
    find_classification_bundles,
    is_classification_bundle,
    parse_image_label,
    parse_image_labels,
    parse_model_names,
    read_class_names,
    resolve_bundles_dir,
    write_image_label,
)
from monai_transfer.label.volume_tasks import (
    SLICE_BUNDLE_IDS,
    VolumeSliceBundleInferTask,
    infer_task_class,
    is_slice_bundle,
)

__all__ = [
    "ClassificationBundleInferTask",
    "ClassificationBundleTrainTask",
    "has_monailabel",
    "multilabel_validation_indices",
    "scores_to_result",
    "INFER_CONFIGS",
    "LABEL_FILE_SUFFIX",
    "bundle_task_mode",
    "find_classification_bundles",
    "is_classification_bundle",
    "parse_image_label",
    "parse_image_labels",
    "parse_model_names",
    "read_class_names",
    "resolve_bundles_dir",
    "write_image_label",
    "SLICE_BUNDLE_IDS",
    "VolumeSliceBundleInferTask",
    "infer_task_class",
    "is_slice_bundle",
]
