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
"""2D/2.5D slice extraction from 3D volumes, aspect-preserving resize, grey to RGB."""

from __future__ import annotations

from monai_transfer.transforms.slicing.array import (
    SLICE_AXES,
    SLICE_STRATEGIES,
    ExtractSlices,
    GreyToRGB,
    ResizeKeepAspect,
    Stack25D,
    affine_grid_sample,
    grey_to_rgb,
    resolve_slice_axis,
)
from monai_transfer.transforms.slicing.dictionary import (
    ExtractSlicesD,
    ExtractSlicesd,
    ExtractSlicesDict,
    FastRandAffineD,
    FastRandAffined,
    FastRandAffineDict,
    GreyToRGBD,
    GreyToRGBd,
    GreyToRGBDict,
    ResizeKeepAspectD,
    ResizeKeepAspectd,
    ResizeKeepAspectDict,
    Stack25DD,
    Stack25Dd,
    Stack25DDict,
)

__all__ = [
    "SLICE_AXES",
    "SLICE_STRATEGIES",
    "resolve_slice_axis",
    "ExtractSlices",
    "Stack25D",
    "ResizeKeepAspect",
    "grey_to_rgb",
    "GreyToRGB",
    "ExtractSlicesd",
    "ExtractSlicesD",
    "ExtractSlicesDict",
    "Stack25Dd",
    "Stack25DD",
    "Stack25DDict",
    "ResizeKeepAspectd",
    "ResizeKeepAspectD",
    "ResizeKeepAspectDict",
    "GreyToRGBd",
    "GreyToRGBD",
    "GreyToRGBDict",
    "affine_grid_sample",
    "FastRandAffined",
    "FastRandAffineD",
    "FastRandAffineDict",
]
