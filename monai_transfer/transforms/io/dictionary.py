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
"""Dictionary wrapper of :class:`~monai_transfer.transforms.io.array.LoadMedicalImage`."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_transfer.transforms.io.array import LoadMedicalImage

__all__ = ["LoadMedicalImaged", "LoadMedicalImageD", "LoadMedicalImageDict"]


class LoadMedicalImaged(MapTransform):
    """Dictionary-based :class:`~monai_transfer.transforms.io.array.LoadMedicalImage`.

    Replaces each path under ``keys`` by the loaded channel-first ``MetaTensor`` (its metadata, including
    ``filename_or_obj``, travels in ``img.meta``). Other keys (e.g. ``label``, ``patient_id``) are kept.

    Args:
        keys: keys of the paths to load.
        voi, invert_monochrome1, multiframe, expected_ndim, axcodes, grey, dtype, nan_policy, series_uid: see
            ``LoadMedicalImage``.
        allow_missing_keys: don't raise when a key is missing; default ``False``.

    Raises:
        MedicalImageLoadError: naming the file and the reason.

    Example::

        {"_target_": "monai_transfer.transforms.LoadMedicalImaged", "keys": ["image"], "voi": "auto"}
    """

    def __init__(
        self,
        keys: KeysCollection,
        voi: str = "auto",
        invert_monochrome1: bool = True,
        multiframe: str = "spatial",
        expected_ndim: int | None = None,
        axcodes: str | None = None,
        grey: bool = True,
        dtype: torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
        nan_policy: str = "raise",
        series_uid: str | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadMedicalImage(
            voi=voi,
            invert_monochrome1=invert_monochrome1,
            multiframe=multiframe,
            expected_ndim=expected_ndim,
            axcodes=axcodes,
            grey=grey,
            dtype=dtype,
            nan_policy=nan_policy,
            series_uid=series_uid,
        )

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


LoadMedicalImageD = LoadMedicalImageDict = LoadMedicalImaged
