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
"""2D and 2.5D slices from 3D volumes, resizing that keeps the aspect ratio, and grey to RGB.

MONAI's ``SplitDim`` turns a volume into all its slices but has no slice-selection strategy, no 2.5D neighbour
stacking and does not record where a slice came from; :class:`ExtractSlices` adds those (the index and axis are
written to each slice's metadata, and the dictionary version adds ``source_id``/``slice_index``/``slice_axis``
keys so predictions can be aggregated per volume).

Axes: volumes are ``(C, x, y, z)`` as MONAI's NIfTI/DICOM readers give them; with an RAS-like orientation
(``LoadMedicalImage(axcodes="RAS")``) spatial axis 0 is sagittal (x), 1 coronal (y) and 2 axial (z).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.data.utils import to_affine_nd
from monai.transforms import Randomizable, Resize, SpatialPad, Transform
from monai.utils import TransformBackends, convert_to_tensor

from monai_transfer.networks.utils import grey_to_rgb

__all__ = [
    "SLICE_AXES",
    "SLICE_STRATEGIES",
    "resolve_slice_axis",
    "Stack25D",
    "ExtractSlices",
    "ResizeKeepAspect",
    "grey_to_rgb",
    "GreyToRGB",
    "affine_grid_sample",
]

logger = logging.getLogger(__name__)

#: anatomical name -> spatial axis of a ``(C, x, y, z)`` RAS-oriented volume
SLICE_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
_AXIS_NAMES = {v: k for k, v in SLICE_AXES.items()}
SLICE_STRATEGIES = ("all", "every_k", "central_n", "foreground", "random_n")


def resolve_slice_axis(axis: str | int) -> int:
    """Spatial axis (0, 1, 2) from ``"sagittal"|"coronal"|"axial"`` or an int.

    Raises:
        ValueError: any other value.
    """
    if isinstance(axis, str):
        key = axis.lower()
        if key in SLICE_AXES:
            return SLICE_AXES[key]
        if key.isdigit():
            axis = int(key)
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool) and 0 <= int(axis) <= 2:
        return int(axis)
    raise ValueError(f"slice axis must be 'sagittal', 'coronal', 'axial' or 0, 1, 2, got {axis!r}.")


def _check_volume(img: NdarrayOrTensor, name: str) -> None:
    if img.ndim != 4:
        raise ValueError(f"{name} expects a channel-first 3D volume (C, x, y, z), got shape {tuple(img.shape)}.")


def _neighbour_stack(img: torch.Tensor, dim: int, offsets: Sequence[int], index: torch.Tensor) -> torch.Tensor:
    """For each offset (in order), the slices ``clamp(index + offset)`` along ``dim``, concatenated on channels."""
    size = img.shape[dim]
    parts = [torch.index_select(img, dim, (index + int(o)).clamp(0, size - 1)) for o in offsets]
    return torch.cat(parts, dim=0)


class Stack25D(Transform):
    """2.5D input: each slice position gets its neighbours (``offsets`` along ``axis``) as channels.

    For a volume ``(C, x, y, z)`` the output is ``(C * len(offsets), x, y, z)``; channel block ``k`` holds the
    volume shifted by ``offsets[k]``, so with ``offsets=(-1, 0, 1)`` a later 2D slice ``i`` has channels
    ``(i - 1, i, i + 1)``. At the first/last slice the index is clamped (edge slice repeated). Follow it with
    :class:`ExtractSlices` on the same axis, or pass ``offsets`` to ``ExtractSlices`` directly (cheaper: only the
    selected slices are stacked).

    Args:
        axis: ``"axial"`` (default), ``"coronal"``, ``"sagittal"`` or 0/1/2.
        offsets: neighbour offsets, default ``(-1, 0, 1)``.

    Raises:
        ValueError: bad axis, empty offsets, input that is not ``(C, x, y, z)``.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, axis: str | int = "axial", offsets: Sequence[int] = (-1, 0, 1)) -> None:
        self.axis = resolve_slice_axis(axis)
        if len(offsets) == 0:
            raise ValueError("offsets must not be empty.")
        self.offsets = tuple(int(o) for o in offsets)

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        _check_volume(img, "Stack25D")
        t = convert_to_tensor(img, track_meta=isinstance(img, MetaTensor))
        dim = self.axis + 1
        return _neighbour_stack(t, dim, self.offsets, torch.arange(t.shape[dim], device=t.device))


class ExtractSlices(Randomizable, Transform):
    """Turn a 3D volume ``(C, x, y, z)`` into a list of 2D slices ``(C, ., .)`` along one axis.

    Strategies:

    - ``"all"``: every slice.
    - ``"every_k"``: slices ``0, k, 2k, ...``.
    - ``"central_n"``: the ``n`` central slices (all when the volume has fewer).
    - ``"foreground"``: slices where ``mask`` (or, without one, the image itself) has at least
      ``min_foreground`` voxels above ``foreground_threshold``.
    - ``"random_n"``: ``n`` distinct random slices, sorted (seeded through MONAI's ``Randomizable``); drawn from
      all slices, or from the foreground slices with ``random_pool="foreground"``.

    When no slice has foreground, ``on_empty`` decides: ``"central"`` (default) falls back to the central slice and
    logs a WARNING, ``"raise"`` raises, ``"empty"`` returns no slice.

    Each output slice is a ``MetaTensor`` whose meta holds ``slice_index``, ``slice_axis`` (name) and a 2D
    ``affine``/``spacing`` for the remaining axes. With ``offsets`` (e.g. ``(-1, 0, 1)``) each slice is 2.5D:
    the neighbours are stacked as channels in offset order, clamped at the edges (see :class:`Stack25D`).

    Args:
        axis: ``"axial"`` (default), ``"coronal"``, ``"sagittal"`` or 0/1/2.
        strategy: one of :data:`SLICE_STRATEGIES`; default ``"all"``.
        k: step for ``every_k``, default 1.
        n: count for ``central_n``/``random_n``, default 1.
        offsets: neighbour offsets for 2.5D, default None (plain 2D).
        foreground_threshold: a voxel is foreground when ``> foreground_threshold``; default 0.
        min_foreground: foreground voxels a slice needs; default 1.
        random_pool: ``"all"`` (default) or ``"foreground"``, for ``random_n``.
        on_empty: ``"central"``, ``"raise"`` or ``"empty"``.

    Raises:
        ValueError: bad arguments; input that is not ``(C, x, y, z)``; mask of another spatial shape; no foreground
            with ``on_empty="raise"``.

    Example::

        slices = ExtractSlices("axial", "central_n", n=5, offsets=(-1, 0, 1))(ct)  # 5 tensors (3, x, y)
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        axis: str | int = "axial",
        strategy: str = "all",
        k: int = 1,
        n: int = 1,
        offsets: Sequence[int] | None = None,
        foreground_threshold: float = 0.0,
        min_foreground: int = 1,
        random_pool: str = "all",
        on_empty: str = "central",
    ) -> None:
        self.axis = resolve_slice_axis(axis)
        if strategy not in SLICE_STRATEGIES:
            raise ValueError(f"strategy must be one of {SLICE_STRATEGIES}, got {strategy!r}.")
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        if int(n) < 1:
            raise ValueError(f"n must be >= 1, got {n}.")
        if random_pool not in ("all", "foreground"):
            raise ValueError(f"random_pool must be 'all' or 'foreground', got {random_pool!r}.")
        if on_empty not in ("central", "raise", "empty"):
            raise ValueError(f"on_empty must be 'central', 'raise' or 'empty', got {on_empty!r}.")
        if offsets is not None and len(offsets) == 0:
            raise ValueError("offsets must not be empty (use None for plain 2D slices).")
        self.strategy = strategy
        self.k = int(k)
        self.n = int(n)
        self.offsets = None if offsets is None else tuple(int(o) for o in offsets)
        self.foreground_threshold = float(foreground_threshold)
        self.min_foreground = int(min_foreground)
        self.random_pool = random_pool
        self.on_empty = on_empty
        self._chosen: list[int] = []

    @property
    def axis_name(self) -> str:
        return _AXIS_NAMES[self.axis]

    def randomize(self, data: Sequence[int]) -> None:
        """Choose ``n`` distinct indices from ``data`` (sorted)."""
        pool = np.asarray(list(data), dtype=np.int64)
        if len(pool) == 0:
            self._chosen = []
            return
        take = min(self.n, len(pool))
        self._chosen = sorted(int(i) for i in self.R.choice(pool, size=take, replace=False))

    def foreground_indices(self, img: NdarrayOrTensor, mask: NdarrayOrTensor | None = None) -> list[int]:
        """Slice indices whose ``mask`` (or ``img``) has at least ``min_foreground`` voxels above threshold."""
        ref = img if mask is None else mask
        _check_volume(ref, "ExtractSlices (mask)")
        if mask is not None and tuple(mask.shape[1:]) != tuple(img.shape[1:]):
            raise ValueError(f"mask spatial shape {tuple(mask.shape[1:])} differs from image {tuple(img.shape[1:])}.")
        t = convert_to_tensor(ref, track_meta=False)
        fg = (t > self.foreground_threshold).sum(dim=tuple(d for d in range(4) if d != self.axis + 1))
        return [int(i) for i in torch.nonzero(fg >= self.min_foreground).flatten().tolist()]

    def select_indices(
        self, img: NdarrayOrTensor, mask: NdarrayOrTensor | None = None, randomize: bool = True, source: str = ""
    ) -> list[int]:
        """The slice indices the strategy picks for this volume (draws new random ones when ``randomize``)."""
        _check_volume(img, "ExtractSlices")
        size = int(img.shape[self.axis + 1])
        if self.strategy == "all":
            return list(range(size))
        if self.strategy == "every_k":
            return list(range(0, size, self.k))
        if self.strategy == "central_n":
            take = min(self.n, size)
            start = size // 2 - take // 2
            return list(range(start, start + take))
        if self.strategy == "foreground" or self.random_pool == "foreground":
            pool = self.foreground_indices(img, mask)
            if not pool:
                pool = self._empty(size, source)
            if self.strategy == "foreground":
                return pool
        else:
            pool = list(range(size))
        if randomize:
            self.randomize(pool)
        return list(self._chosen)

    def _empty(self, size: int, source: str) -> list[int]:
        what = f" in {source}" if source else ""
        msg = f"no {self.axis_name} slice has foreground (> {self.foreground_threshold}){what}"
        if self.on_empty == "raise":
            raise ValueError(msg + ".")
        if self.on_empty == "empty":
            logger.warning("%s; returning no slice.", msg)
            return []
        logger.warning("%s; using the central slice %d.", msg, size // 2)
        return [size // 2]

    def slice_at(self, img: NdarrayOrTensor, index: int, offsets: Sequence[int] | None = None) -> torch.Tensor:
        """The 2D (or 2.5D with ``offsets``) slice ``index`` as a tensor, a ``MetaTensor`` with slice metadata."""
        t = convert_to_tensor(img, track_meta=False)
        if isinstance(t, MetaTensor):
            t = t.as_tensor()
        dim = self.axis + 1
        offs = offsets if offsets is not None else (0,)
        out = _neighbour_stack(t, dim, offs, torch.tensor([int(index)], device=t.device)).squeeze(dim)
        if not isinstance(img, MetaTensor):
            return out
        meta: dict[str, Any] = dict(img.meta)
        keep = [i for i in range(3) if i != self.axis]
        aff = img.affine.detach().cpu().numpy().astype(np.float64)
        aff3 = aff[np.ix_(keep + [3], keep + [3])] if aff.shape == (4, 4) else np.eye(3)
        if aff.shape == (4, 4):
            aff3[:2, 2] = (aff[:3, :3] @ np.eye(3)[:, self.axis] * int(index) + aff[:3, 3])[keep]
        meta.pop("affine", None)
        sp = meta.get("spacing")
        if sp is not None and len(np.atleast_1d(sp)) == 3:
            meta["spacing"] = np.asarray(np.atleast_1d(sp)[keep], dtype=np.float64)
        meta["spatial_shape"] = np.asarray(out.shape[1:], dtype=np.int64)
        meta["slice_index"] = int(index)
        meta["slice_axis"] = self.axis_name
        return MetaTensor(out, affine=torch.as_tensor(to_affine_nd(3, aff3)), meta=meta)

    def __call__(
        self, img: NdarrayOrTensor, mask: NdarrayOrTensor | None = None, randomize: bool = True
    ) -> list[torch.Tensor]:
        """Slices of ``img`` chosen by the strategy (see the class docstring)."""
        src = str(img.meta.get("filename_or_obj", "")) if isinstance(img, MetaTensor) else ""
        indices = self.select_indices(img, mask, randomize=randomize, source=src)
        return [self.slice_at(img, i, self.offsets) for i in indices]


class ResizeKeepAspect(Transform):
    """Resize a channel-first image to the network's input size, keeping the aspect ratio by padding (default).

    With ``keep_aspect=True`` the image is scaled so that it fits inside ``spatial_size`` (the longest side
    matches; MONAI's ``Resize(size_mode="longest")`` for square targets) and then padded symmetrically with
    ``pad_value`` (MONAI's ``SpatialPad``); with ``keep_aspect=False`` it is stretched to ``spatial_size``.

    Args:
        spatial_size: target size, an int (square/cube) or one value per spatial axis.
        keep_aspect: scale + pad (default) or plain resize.
        mode: interpolation. Default ``"auto"``: ``"area"`` when every axis shrinks (averaging is anti-aliased by
            construction and, on full-size radiographs, about 10x faster than a Gaussian pre-filter; see
            ``benchmarks/README.md``), else ``"bilinear"`` (``"trilinear"`` for 3D). Any MONAI ``Resize`` mode is
            accepted.
        anti_aliasing: Gaussian smoothing before downsampling with a non-area mode, default True.
        pad_value: constant padding value, default 0.

    Raises:
        ValueError: non-positive size, or a size with the wrong number of axes.
    """

    backend = Resize.backend

    def __init__(
        self,
        spatial_size: int | Sequence[int],
        keep_aspect: bool = True,
        mode: str = "auto",
        anti_aliasing: bool = True,
        pad_value: float = 0.0,
    ) -> None:
        sizes = [int(spatial_size)] if isinstance(spatial_size, (int, np.integer)) else [int(s) for s in spatial_size]
        if not sizes or any(s < 1 for s in sizes):
            raise ValueError(f"spatial_size must be positive, got {spatial_size!r}.")
        self.spatial_size = sizes
        self.keep_aspect = keep_aspect
        self.mode = mode
        self.anti_aliasing = anti_aliasing
        self.pad_value = float(pad_value)

    def _target(self, nd: int) -> list[int]:
        if len(self.spatial_size) == 1:
            return self.spatial_size * nd
        if len(self.spatial_size) != nd:
            raise ValueError(f"spatial_size {self.spatial_size} does not match an image with {nd} spatial axes.")
        return list(self.spatial_size)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        nd = img.ndim - 1
        target = self._target(nd)
        shape = [int(s) for s in img.shape[1:]]
        if not self.keep_aspect:
            return self._resize(img, shape, target)
        scale = min(t / s for t, s in zip(target, shape))
        new = [max(1, min(t, int(round(s * scale)))) for t, s in zip(target, shape)]
        out = img if new == shape else self._resize(img, shape, new)
        if new == target:
            return out
        return SpatialPad(target, method="symmetric", mode="constant", value=self.pad_value)(out)

    def _resize(self, img: NdarrayOrTensor, shape: list[int], new: list[int]) -> NdarrayOrTensor:
        mode, anti_aliasing = self.mode, self.anti_aliasing
        if mode == "auto":
            mode = "area" if all(n <= s for n, s in zip(new, shape)) else "bilinear"
        if mode == "area":
            anti_aliasing = False  # area averaging already integrates over each output pixel
        if mode == "bilinear" and len(shape) == 3:
            mode = "trilinear"
        return Resize(new, mode=mode, anti_aliasing=anti_aliasing)(img)


class GreyToRGB(Transform):
    """Copy a one-channel (grey) image to ``num_channels`` channels (:func:`grey_to_rgb`); idempotent.

    Unlike a bare ``RepeatChannel(3)``, an image that already has ``num_channels`` channels passes unchanged, so a
    dataset mixing grey and RGB files (e.g. PNG exports) gives 3 channels throughout. A replicated image is returned
    as a tensor (a ``MetaTensor`` while MONAI tracks metadata), as MONAI's ``RepeatChannel`` does.

    Args:
        num_channels: output channels, default 3.

    Raises:
        ValueError: an input with neither 1 nor ``num_channels`` channels.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, num_channels: int = 3) -> None:
        if int(num_channels) < 1:
            raise ValueError(f"num_channels must be >= 1, got {num_channels}.")
        self.num_channels = int(num_channels)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if img.shape[0] == self.num_channels:
            return img
        return grey_to_rgb(convert_to_tensor(img, track_meta=get_track_meta()), self.num_channels)


_AXES: dict[tuple[Any, ...], list[torch.Tensor]] = {}


def _normalised_axes(shape: tuple[int, ...], device: torch.device) -> list[torch.Tensor]:
    """``align_corners=False`` normalised coordinates of each spatial axis, shaped to broadcast (cached per shape)."""
    key = (shape, str(device))
    if key not in _AXES:
        if len(_AXES) > 32:
            _AXES.clear()
        axes = []
        for j, n in enumerate(shape):
            view = [1] * len(shape)
            view[j] = n
            axes.append(((torch.arange(n, dtype=torch.float32, device=device) * 2 + 1) / n - 1).reshape(view))
        _AXES[key] = axes
    return _AXES[key]


def affine_grid_sample(
    img: torch.Tensor, affine: NdarrayOrTensor, mode: str = "bilinear", padding_mode: str = "border"
) -> torch.Tensor:
    """Resample a channel-first image ``(C, *spatial)`` with a MONAI centred affine, as ``monai.transforms.Affine``
    does without ``spatial_size`` (same output size), in one ``torch.nn.functional.grid_sample`` in float32.

    ``affine`` is a ``(d + 1) x (d + 1)`` matrix as ``monai.transforms.AffineGrid`` returns it (from output to input
    pixel coordinates, both relative to the image centre). MONAI builds the identity grid, multiplies it by the
    matrix, rescales it to ``[-1, 1]`` and samples in float64; here the sampling grid is computed directly in
    normalised coordinates (``align_corners=False``, as MONAI's ``Resample``), a few broadcast operations instead of
    a matrix product over every pixel. The values agree with MONAI's to float32 rounding (``tests/transforms``).

    Args:
        img: plain tensor ``(C, H, W)`` or ``(C, H, W, D)``.
        affine: the centred affine.
        mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"`` (2D).
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.

    Returns:
        float32 tensor of ``img``'s shape.
    """
    nd = img.ndim - 1
    a = torch.as_tensor(np.asarray(affine, dtype=np.float64) if not isinstance(affine, torch.Tensor) else affine)
    a = a.to(torch.float64).cpu().tolist()
    shape = tuple(img.shape[1:])
    size = [float(max(2, n)) for n in shape]
    axes = _normalised_axes(shape, img.device)
    grid = torch.empty((1,) + shape + (nd,), dtype=torch.float32, device=img.device)
    for k, i in enumerate(range(nd - 1, -1, -1)):  # grid_sample's last dimension is (x, y[, z]): axes reversed
        # input axis i, normalised: sum_j A_ij * (n_j * shape_j / 2) * 2 / size_i + A_i,d * 2 / size_i
        terms = [(a[i][j] * shape[j] / size[i], axes[j]) for j in range(nd) if a[i][j] != 0.0]
        t = a[i][nd] * 2.0 / size[i]
        out = grid[0, ..., k]
        if not terms:
            out.fill_(t)
            continue
        acc = terms[0][1] * terms[0][0] + t  # small: broadcast shapes until the last term
        for coef, ax in terms[1:-1]:
            acc = acc + coef * ax
        if len(terms) == 1:
            out.copy_(acc.expand(shape))
        else:  # the one full-size operation of this coordinate, written in place into the grid
            torch.add(acc.expand(shape), terms[-1][1].expand(shape), alpha=terms[-1][0], out=out)
    src = img if img.dtype == torch.float32 else img.to(torch.float32)
    out = torch.nn.functional.grid_sample(src[None], grid, mode=mode, padding_mode=padding_mode, align_corners=False)
    return out[0]
