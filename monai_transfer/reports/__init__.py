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
"""Evaluation reports (metrics JSON, predictions CSV, ROC / confusion / reliability plots) and Grad-CAM overlays."""

from __future__ import annotations

from typing import Any

from monai_transfer.deprecated import install, moved_attribute
from monai_transfer.reports.tables import PER_CLASS_COLUMNS, per_class_rows, write_per_class_table
from monai_transfer.reports.writer import (
    CI_METRICS,
    HEADLINE_METRICS,
    prevalence_report,
    write_classification_report,
    write_predictions_csv,
)

__all__ = [
    "CI_METRICS",
    "HEADLINE_METRICS",
    "prevalence_report",
    "write_classification_report",
    "write_predictions_csv",
    "PER_CLASS_COLUMNS",
    "per_class_rows",
    "write_per_class_table",
    "save_gradcam_overlays",
]


install()  # the old module paths of monai_transfer.deprecated.MOVED, for one release


def __getattr__(name: str) -> Any:
    if name == "save_gradcam_overlays":  # imports monai.visualize lazily
        from monai_transfer.reports.gradcam import save_gradcam_overlays

        return save_gradcam_overlays
    return moved_attribute(__name__, name)
