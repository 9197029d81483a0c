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
"""Dictionary wrapper of :mod:`monai_transfer.transforms.shift.array`."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from monai_transfer.transforms.shift.array import AcquisitionShift

__all__ = ["AcquisitionShiftd", "AcquisitionShiftD", "AcquisitionShiftDict"]


class AcquisitionShiftd(Randomizable, MapTransform):
    """Dictionary-based :class:`~monai_transfer.transforms.shift.array.AcquisitionShift`; every key gets the same
    draw of the random families.

    Example::

        {"_target_": "monai_transfer.transforms.shift.AcquisitionShiftd", "keys": "image",
         "family": "jpeg", "severity": 3}
    """

    backend = AcquisitionShift.backend

    def __init__(
        self,
        keys: KeysCollection,
        family: str,
        severity: int = 1,
        seed: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.t = AcquisitionShift(family, severity, seed)

    def set_random_state(self, seed: int | None = None, state=None) -> AcquisitionShiftd:  # type: ignore[override]
        super().set_random_state(seed, state)
        self.t.set_random_state(seed, state)
        return self

    def randomize(self, data: object = None) -> None:
        self.t.randomize()

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            d[key] = self.t(d[key], randomize=False)  # type: ignore[arg-type]
        return d


AcquisitionShiftD = AcquisitionShiftDict = AcquisitionShiftd
