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

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable

from monai_transfer.transforms.slicing.array import ExtractSlices, GreyToRGB, ResizeKeepAspect, Stack25D

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
