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
"""The acquisition-shift suite (MedMNIST-C chest X-ray families + resolution, windowing, exposure)."""

from __future__ import annotations

from monai_transfer.transforms.shift.array import (
    MEDMNISTC_FAMILIES,
    PROJECT_FAMILIES,
    SEVERITIES,
    SHIFT_FAMILIES,
    AcquisitionShift,
    ShiftFamily,
    shift_parameter,
)
from monai_transfer.transforms.shift.dictionary import AcquisitionShiftD, AcquisitionShiftd, AcquisitionShiftDict

__all__ = [
    "SHIFT_FAMILIES",
    "MEDMNISTC_FAMILIES",
    "PROJECT_FAMILIES",
    "SEVERITIES",
    "ShiftFamily",
    "AcquisitionShift",
    "shift_parameter",
    "AcquisitionShiftd",
    "AcquisitionShiftD",
    "AcquisitionShiftDict",
]
