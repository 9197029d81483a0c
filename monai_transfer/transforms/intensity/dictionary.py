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
"""Dictionary wrappers of :mod:`monai_transfer.transforms.intensity.array`."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from monai.config import KeysCollection
from monai.transforms import (
    MapTransform,
    NormalizeIntensityd,
    RandHistogramShiftd,
    RandRicianNoised,
    ScaleIntensityRangePercentilesd,
)

from monai_transfer.networks.backbones import WeightsCfg
from monai_transfer.transforms.intensity.array import (
    BackboneNormalize,
    FastRandHistogramShift,
    FastRandRicianNoise,
    MultiWindowStack,
    PercentileRescale,
    WindowIntensity,
    ZScoreNormalize,
)

__all__ = [
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
    "FastRandRicianNoised",
    "FastRandRicianNoiseD",
    "FastRandRicianNoiseDict",
    "FastRandHistogramShiftd",
    "FastRandHistogramShiftD",
    "FastRandHistogramShiftDict",
]


class _ArrayMapd(MapTransform):
    """Apply one array transform ``self.t`` to every key."""

    t: object

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.t(d[key])  # type: ignore[operator]
        return d


class WindowIntensityd(_ArrayMapd):
    """Dictionary-based :class:`~monai_transfer.transforms.intensity.array.WindowIntensity`.

    Example::

        {"_target_": "monai_transfer.transforms.WindowIntensityd", "keys": "image", "preset": "lung"}
    """

    backend = WindowIntensity.backend

    def __init__(
        self,
        keys: KeysCollection,
        preset: str | None = None,
        center: float | None = None,
        width: float | None = None,
        b_min: float = 0.0,
        b_max: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.t = WindowIntensity(preset=preset, center=center, width=width, b_min=b_min, b_max=b_max)


class MultiWindowStackd(_ArrayMapd):
    """Dictionary-based :class:`~monai_transfer.transforms.intensity.array.MultiWindowStack`."""

    backend = MultiWindowStack.backend

    def __init__(
        self,
        keys: KeysCollection,
        windows: Sequence = ("lung", "mediastinum", "bone"),
        b_min: float = 0.0,
        b_max: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.t = MultiWindowStack(windows=windows, b_min=b_min, b_max=b_max)


class PercentileRescaled(ScaleIntensityRangePercentilesd):
    """Dictionary-based :class:`~monai_transfer.transforms.intensity.array.PercentileRescale`: MONAI's
    ``ScaleIntensityRangePercentilesd`` (its key loop) around a :class:`PercentileRescale` (same defaults and check)."""

    def __init__(
        self,
        keys: KeysCollection,
        lower: float = 0.5,
        upper: float = 99.5,
        b_min: float = 0.0,
        b_max: float = 1.0,
        clip: bool = True,
        channel_wise: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        scaler = PercentileRescale(lower, upper, b_min, b_max, clip, channel_wise)  # checks lower < upper
        super().__init__(
            keys, lower, upper, b_min, b_max, clip, channel_wise=channel_wise, allow_missing_keys=allow_missing_keys
        )
        self.scaler = scaler


class ZScoreNormalized(NormalizeIntensityd):
    """Dictionary-based :class:`~monai_transfer.transforms.intensity.array.ZScoreNormalize`: MONAI's
    ``NormalizeIntensityd`` (its key loop) around a :class:`ZScoreNormalize` (channel-wise default)."""

    def __init__(
        self, keys: KeysCollection, nonzero: bool = False, channel_wise: bool = True, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, nonzero=nonzero, channel_wise=channel_wise, allow_missing_keys=allow_missing_keys)
        self.normalizer = ZScoreNormalize(nonzero=nonzero, channel_wise=channel_wise)


class BackboneNormalized(_ArrayMapd):
    """Dictionary-based :class:`~monai_transfer.transforms.intensity.array.BackboneNormalize`.

    Example::

        {"_target_": "monai_transfer.transforms.BackboneNormalized", "keys": "image",
         "backbone": "tf_efficientnet_lite0", "weights": "packaged", "repeat_channels": true}
    """

    backend = BackboneNormalize.backend

    def __init__(
        self,
        keys: KeysCollection,
        backbone: str | None = None,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
        repeat_channels: bool = False,
        allow_missing_keys: bool = False,
        weights: str | WeightsCfg | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.t = BackboneNormalize(
            backbone=backbone, mean=mean, std=std, repeat_channels=repeat_channels, weights=weights
        )


class FastRandRicianNoised(RandRicianNoised):
    """MONAI's ``RandRicianNoised`` on :class:`~monai_transfer.transforms.intensity.array.FastRandRicianNoise` (torch
    float32 noise fields); MONAI's arguments except ``dtype`` (the output is float32 for float32 input)."""

    def __init__(self, keys: KeysCollection, prob: float = 0.1, mean: float = 0.0, std: float = 1.0,
                 channel_wise: bool = False, relative: bool = False, sample_std: bool = True,
                 allow_missing_keys: bool = False) -> None:  # fmt: skip
        super().__init__(keys, prob=prob, mean=mean, std=std, channel_wise=channel_wise, relative=relative,
                         sample_std=sample_std, allow_missing_keys=allow_missing_keys)  # fmt: skip
        self.rand_rician_noise = FastRandRicianNoise(prob=1.0, mean=mean, std=std, channel_wise=channel_wise,
                                                     relative=relative, sample_std=sample_std)  # fmt: skip


class FastRandHistogramShiftd(RandHistogramShiftd):
    """MONAI's ``RandHistogramShiftd`` on :class:`~monai_transfer.transforms.intensity.array.FastRandHistogramShift`
    (the map evaluated segment by segment); same arguments."""

    def __init__(self, keys: KeysCollection, num_control_points: tuple[int, int] | int = 10, prob: float = 0.1,
                 allow_missing_keys: bool = False) -> None:  # fmt: skip
        super().__init__(keys, num_control_points=num_control_points, prob=prob, allow_missing_keys=allow_missing_keys)
        self.shifter = FastRandHistogramShift(num_control_points=num_control_points, prob=1.0)


WindowIntensityD = WindowIntensityDict = WindowIntensityd
MultiWindowStackD = MultiWindowStackDict = MultiWindowStackd
PercentileRescaleD = PercentileRescaleDict = PercentileRescaled
ZScoreNormalizeD = ZScoreNormalizeDict = ZScoreNormalized
BackboneNormalizeD = BackboneNormalizeDict = BackboneNormalized
FastRandRicianNoiseD = FastRandRicianNoiseDict = FastRandRicianNoised
FastRandHistogramShiftD = FastRandHistogramShiftDict = FastRandHistogramShiftd
