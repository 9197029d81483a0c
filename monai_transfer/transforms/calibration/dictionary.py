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
"""Dictionary wrapper of :class:`~monai_transfer.transforms.calibration.array.ApplyTemperature`."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_transfer.transforms.calibration.array import ApplyTemperature

__all__ = ["ApplyTemperatured", "ApplyTemperatureD", "ApplyTemperatureDict"]


class ApplyTemperatured(MapTransform):
    """Dictionary-based :class:`~monai_transfer.transforms.calibration.array.ApplyTemperature`.

    Bundle example (inference ``postprocessing``, before the softmax)::

        {"_target_": "monai_transfer.transforms.ApplyTemperatured", "keys": "pred",
         "temperature": "$@bundle_root + '/models/calibration.json'", "allow_missing": true}

    Args:
        keys: keys of the logits (usually ``"pred"``).
        temperature: a number or a ``calibration.json`` path.
        allow_missing: a missing ``calibration.json`` means ``T = 1`` (logged) instead of an error.
        mode: the model's task; a ``calibration.json`` fitted for another task is refused (``None``: not checked).
        allow_missing_keys: don't raise when a key is absent.
    """

    backend = ApplyTemperature.backend

    def __init__(
        self,
        keys: KeysCollection,
        temperature: float | str | os.PathLike = 1.0,
        allow_missing: bool = False,
        allow_missing_keys: bool = False,
        mode: Any = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.t = ApplyTemperature(temperature, allow_missing, mode)

    @property
    def temperature(self) -> float:
        """The temperature in use."""
        return self.t.temperature

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.t(d[key])  # type: ignore[arg-type]
        return d


ApplyTemperatureD = ApplyTemperatureDict = ApplyTemperatured
