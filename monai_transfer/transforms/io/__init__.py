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
"""Medical image loading: DICOM (file or series), NIfTI, PNG/JPEG."""

from __future__ import annotations

from monai_transfer.transforms.io.array import (
    DICOM_EXTENSIONS,
    IMAGE_EXTENSIONS,
    NIFTI_EXTENSIONS,
    RADIOGRAPH_MODALITIES,
    SUPPORTED_EXTENSIONS,
    LoadMedicalImage,
    MedicalImageLoadError,
    detect_image_format,
)
from monai_transfer.transforms.io.dictionary import LoadMedicalImageD, LoadMedicalImaged, LoadMedicalImageDict

__all__ = [
    "DICOM_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "NIFTI_EXTENSIONS",
    "RADIOGRAPH_MODALITIES",
    "SUPPORTED_EXTENSIONS",
    "LoadMedicalImage",
    "MedicalImageLoadError",
    "detect_image_format",
    "LoadMedicalImaged",
    "LoadMedicalImageD",
    "LoadMedicalImageDict",
]
