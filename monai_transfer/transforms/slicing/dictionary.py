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
"""Dictionary wrappers of :mod:`monai_transfer.transforms.slicing.array`.

``ExtractSlicesd`` returns a **list of dicts**, one per slice, like MONAI's ``RandCropByPosNegLabeld``; MONAI's
``Compose`` applies the following transforms to each and ``list_data_collate`` flattens them into the batch.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandAffined, Randomizable

from monai_transfer.transforms.slicing.array import (
    ExtractSlices,
    GreyToRGB,
    ResizeKeepAspect,
    Stack25D,
    affine_grid_sample,
)

__all__ = [
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
    "FastRandAffined",
    "FastRandAffineD",
    "FastRandAffineDict",
]


class _ArrayMapd(MapTransform):
    t: Any

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.t(d[key])
        return d


class Stack25Dd(_ArrayMapd):
    """Dictionary-based :class:`~monai_transfer.transforms.slicing.array.Stack25D` (apply to images, not masks)."""

    backend = Stack25D.backend

    def __init__(
        self,
        keys: KeysCollection,
        axis: str | int = "axial",
        offsets: Sequence[int] = (-1, 0, 1),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.t = Stack25D(axis=axis, offsets=offsets)


class ResizeKeepAspectd(_ArrayMapd):
    """Dictionary-based :class:`~monai_transfer.transforms.slicing.array.ResizeKeepAspect`."""

    backend = ResizeKeepAspect.backend

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: int | Sequence[int],
        keep_aspect: bool = True,
        mode: str = "auto",
        anti_aliasing: bool = True,
        pad_value: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.t = ResizeKeepAspect(
            spatial_size, keep_aspect=keep_aspect, mode=mode, anti_aliasing=anti_aliasing, pad_value=pad_value
        )


class GreyToRGBd(_ArrayMapd):
    """Dictionary-based :class:`~monai_transfer.transforms.slicing.array.GreyToRGB`."""

    backend = GreyToRGB.backend

    def __init__(self, keys: KeysCollection, num_channels: int = 3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.t = GreyToRGB(num_channels=num_channels)


class ExtractSlicesd(Randomizable, MapTransform):
    """Dictionary-based :class:`~monai_transfer.transforms.slicing.array.ExtractSlices`: one dict per slice.

    The slice indices are chosen once per volume (from ``mask_key`` when given, else from the first key's image)
    and applied to every key in ``keys`` (with ``offsets``, as 2.5D) and to ``mask_key`` (plain 2D, so a
    segmentation mask stays one channel). Every output dict is a copy of the input (so the volume's ``label``,
    ``patient_id``, ... are carried) plus:

    - ``source_id``: ``data[source_id_key]`` when given, else the first key's ``filename_or_obj``;
    - ``slice_index``: index along the axis; ``slice_axis``: ``"sagittal"|"coronal"|"axial"``.

    Args:
        keys: volume keys to slice (the first one drives the selection without ``mask_key``).
        axis, strategy, k, n, offsets, foreground_threshold, min_foreground, random_pool, on_empty: see
            ``ExtractSlices``.
        mask_key: key of a mask volume used by ``strategy="foreground"``/``random_pool="foreground"``; it is
            sliced as well.
        source_id_key: key holding the volume's id; default None (use the file name).
        allow_missing_keys: don't raise when a key is missing; default False.

    Raises:
        ValueError: no source id can be found; see also ``ExtractSlices``.

    Example::

        {"_target_": "monai_transfer.transforms.ExtractSlicesd", "keys": ["image"], "axis": "axial",
         "strategy": "random_n", "n": 4, "offsets": [-1, 0, 1], "mask_key": "mask", "random_pool": "foreground"}
    """

    backend = ExtractSlices.backend

    def __init__(
        self,
        keys: KeysCollection,
        axis: str | int = "axial",
        strategy: str = "all",
        k: int = 1,
        n: int = 1,
        offsets: Sequence[int] | None = None,
        mask_key: str | None = None,
        source_id_key: str | None = None,
        foreground_threshold: float = 0.0,
        min_foreground: int = 1,
        random_pool: str = "all",
        on_empty: str = "central",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.extractor = ExtractSlices(
            axis=axis,
            strategy=strategy,
            k=k,
            n=n,
            offsets=offsets,
            foreground_threshold=foreground_threshold,
            min_foreground=min_foreground,
            random_pool=random_pool,
            on_empty=on_empty,
        )
        self.mask_key = mask_key
        self.source_id_key = source_id_key

    def set_random_state(self, seed: int | None = None, state: Any = None) -> ExtractSlicesd:
        super().set_random_state(seed, state)
        self.extractor.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        self.extractor.randomize(data)

    def _source_id(self, d: Mapping[Hashable, Any], first_key: Hashable) -> str:
        if self.source_id_key is not None:
            if self.source_id_key not in d:
                raise ValueError(f"source_id_key {self.source_id_key!r} is not in the data (keys: {list(d)}).")
            return str(d[self.source_id_key])
        img = d[first_key]
        if isinstance(img, MetaTensor) and img.meta.get("filename_or_obj"):
            return str(img.meta["filename_or_obj"])
        raise ValueError(
            f"cannot tell which volume {first_key!r} comes from: it has no 'filename_or_obj' metadata; "
            "set source_id_key to a key holding the volume id."
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return [d]
        first = keys[0]
        src = self._source_id(d, first)
        mask = d[self.mask_key] if self.mask_key is not None else None
        indices = self.extractor.select_indices(d[first], mask, randomize=True, source=src)
        ex = self.extractor
        out = []
        for i in indices:
            item = dict(d)
            for key in keys:
                item[key] = ex.slice_at(d[key], i, ex.offsets)
            if self.mask_key is not None and self.mask_key not in keys:
                item[self.mask_key] = ex.slice_at(mask, i)
            item["source_id"] = src
            item["slice_index"] = int(i)
            item["slice_axis"] = ex.axis_name
            out.append(item)
        return out


ExtractSlicesD = ExtractSlicesDict = ExtractSlicesd
Stack25DD = Stack25DDict = Stack25Dd
ResizeKeepAspectD = ResizeKeepAspectDict = ResizeKeepAspectd
GreyToRGBD = GreyToRGBDict = GreyToRGBd


class FastRandAffined(RandAffined):
    """MONAI's ``RandAffined`` with a faster resampling of plain tensors: same settings, same random draws.

    When no key holds a metadata-tracked ``MetaTensor`` (MONAI's ``set_track_meta(False)``, as the cached datasets
    run their random transforms with ``track_meta=False``), the output has the input's size (no ``spatial_size``),
    the call is not lazy and the modes are ``grid_sample`` modes, the affine MONAI draws (the same random numbers in
    the same order, so a seeded run draws the same matrices) is applied by
    :func:`~monai_transfer.transforms.slicing.array.affine_grid_sample` in float32 instead of MONAI's identity grid,
    matrix product and float64 ``grid_sample``: about 0.55 ms instead of 1.45 ms per 224 x 224 grey image on one CPU
    core (issue 25). The values agree with MONAI's to float32 rounding. Anything else (tracked ``MetaTensor``, whose
    applied operations MONAI records for ``inverse``, lazy resampling, ``spatial_size``, spline modes,
    ``USE_COMPILED``) runs MONAI's own code.

    Args: as ``monai.transforms.RandAffined``.
    """

    def _fast(self, d: Mapping[Hashable, Any], lazy: bool | None) -> bool:
        from monai.config import USE_COMPILED
        from monai.data.meta_obj import get_track_meta

        keys = [k for k in self.keys if k in d]
        return bool(
            keys
            and not (self.lazy if lazy is None else lazy)
            and not USE_COMPILED
            and self.rand_affine.spatial_size is None
            and not (get_track_meta() and any(isinstance(d[k], MetaTensor) for k in keys))
            and all(isinstance(d[k], torch.Tensor) for k in keys)
            and all(str(m) in ("bilinear", "nearest", "bicubic") for m in self.mode)
            and all(str(p) in ("zeros", "border", "reflection") for p in self.padding_mode)
        )

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict[Hashable, Any]:
        if not self._fast(data, lazy):
            return super().__call__(data, lazy=lazy)
        d = dict(data)
        self.randomize(None)
        self.rand_affine.randomize()  # MONAI's RandAffined draws here, then draws the grid parameters again below
        affine = None
        if self._do_transform:
            size = d[self.first_key(d)].shape[1:]
            self.rand_affine.rand_affine_grid(size, lazy=True)  # randomize=True, as MONAI; the matrix only
            affine = self.rand_affine.rand_affine_grid.get_transformation_matrix()
        for key, mode, padding_mode in self.key_iterator(d, self.mode, self.padding_mode):
            img = d[key].as_tensor() if isinstance(d[key], MetaTensor) else d[key]
            if affine is None:
                d[key] = img.to(torch.float32)
            else:
                self.rand_affine.randomize()  # MONAI's RandAffine draws again for each key (with the grid given)
                d[key] = affine_grid_sample(img, affine, mode=str(mode), padding_mode=str(padding_mode))
        return d


FastRandAffineD = FastRandAffineDict = FastRandAffined
