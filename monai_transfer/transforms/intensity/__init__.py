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
"""Intensity transforms: CT windows, percentile rescale, z-score, backbone normalisation."""

from __future__ import annotations

from monai_transfer.transforms.intensity.array import (
    WINDOW_PRESETS,
    BackboneNormalize,
    MultiWindowStack,
    PercentileRescale,
    WindowIntensity,
    ZScoreNormalize,
    resolve_window,
)
from monai_transfer.transforms.intensity.dictionary import (
    BackboneNormalizeD,
    BackboneNormalized,
    BackboneNormalizeDict,
    MultiWindowStackD,
    MultiWindowStackd,
    MultiWindowStackDict,
    PercentileRescaleD,
    PercentileRescaled,
    PercentileRescaleDict,
    WindowIntensityD,
    WindowIntensityd,
    WindowIntensityDict,
    ZScoreNormalizeD,
    ZScoreNormalized,
    ZScoreNormalizeDict,
)

__all__ = [
    "WINDOW_PRESETS",
    "resolve_window",
    "WindowIntensity",
    "MultiWindowStack",
    "PercentileRescale",
    "ZScoreNormalize",
    "BackboneNormalize",
    "WindowIntensityd",
    "WindowIntensityD",
    "WindowIntensityDict",
    "MultiWindowStackd",
    "MultiWindowStackD",
    "MultiWindowStackDict",
    "PercentileRescaled",
    "PercentileRescaleD",
    "PercentileRescaleDict",
    "ZScoreNormalized",
    "ZScoreNormalizeD",
    "ZScoreNormalizeDict",
    "BackboneNormalized",
    "BackboneNormalizeD",
    "BackboneNormalizeDict",
]
