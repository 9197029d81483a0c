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
"""Acquisition-shift corruptions of 2D images in [0, 1]: the evaluation suite of ``--shift_suite``.

The chest X-ray families of MedMNIST-C (Di Salvo, Doerrich, Ledig, "MedMNIST-C: Comprehensive benchmark and improved
classifier robustness by simulating realistic image corruptions", 2024, arXiv:2406.17536; Apache-2.0 package
``medmnistc``): pixelate, JPEG, Gaussian/speckle/impulse/shot noise, Gaussian blur, brightness, contrast and gamma
up/down, five severities each. The severity values are those the package lists for PneumoniaMNIST; the operations are
reimplemented here with torch/MONAI (and Pillow for JPEG), not copied, and without its pinned dependencies (Wand,
ImageMagick), so pixel values differ from the released MedMNIST-C files. Blur kernel sizes are the package's for
224-pixel images and are scaled to the image's size. Three families come from this project's own data sets:
``resolution`` (a coarser detector: antialiased down-sampling, bilinear up-sampling), ``windowing`` (a narrower,
off-centre display window, as another site's VOI LUT) and ``exposure`` (a saturating detector/film characteristic
curve).
A fourth shift, the class balance (prevalence), is a resampling of the evaluation set, not an image operation:
:func:`monai_transfer.metrics.shift.prevalence_indices`.

Every family keeps the shape, dtype and type (tensor/array, ``MetaTensor`` metadata) of its input; inputs are
expected in [0, 1] (after ``ScaleIntensity``) and outputs are clipped to [0, 1]. The random families draw from the
transform's ``R`` (seed ``seed``, :meth:`set_random_state`), so a suite is reproducible.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import NdarrayOrTensor
from monai.transforms import GaussianSmooth, Randomizable, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor, optional_import

Image, has_pil = optional_import("PIL.Image")

__all__ = [
    "SHIFT_FAMILIES",
    "MEDMNISTC_FAMILIES",
    "PROJECT_FAMILIES",
    "SEVERITIES",
    "ShiftFamily",
    "AcquisitionShift",
    "shift_parameter",
]

#: severities of every family, mildest first
SEVERITIES = (1, 2, 3, 4, 5)


def _down(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``(1, C, h, w)``: antialiased bilinear down-sampling by ``factor`` (monotone in the factor, unlike area
    averaging, whose aligned 2:1 case loses less than 0.6)."""
    h, w = x.shape[-2:]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    return F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)


def _pixelate(x: torch.Tensor, factor: float, g: torch.Generator) -> torch.Tensor:
    return F.interpolate(_down(x, factor), size=tuple(x.shape[-2:]), mode="nearest-exact")[0]


def _jpeg(x: torch.Tensor, quality: float, g: torch.Generator) -> torch.Tensor:
    if not has_pil:
        raise RuntimeError("the 'jpeg' shift family needs Pillow (pip install pillow)")
    out = torch.empty_like(x)
    for c in range(x.shape[0]):
        buf = io.BytesIO()
        u8 = (x[c].clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
        Image.fromarray(u8).save(buf, format="JPEG", quality=int(quality))
        out[c] = torch.from_numpy(np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255.0)
    return out


def _gaussian_noise(x: torch.Tensor, std: float, g: torch.Generator) -> torch.Tensor:
    return x + std * torch.randn(x.shape, generator=g, dtype=x.dtype)


def _speckle_noise(x: torch.Tensor, std: float, g: torch.Generator) -> torch.Tensor:
    return x + x * std * torch.randn(x.shape, generator=g, dtype=x.dtype)


def _impulse_noise(x: torch.Tensor, amount: float, g: torch.Generator) -> torch.Tensor:
    u = torch.rand(x.shape, generator=g, dtype=x.dtype)  # salt below amount/2, pepper in [amount/2, amount)
    salt = torch.rand(x.shape, generator=g, dtype=x.dtype) < 0.5
    hit = u < amount
    return torch.where(hit & salt, torch.ones_like(x), torch.where(hit, torch.zeros_like(x), x))


def _shot_noise(x: torch.Tensor, photons: float, g: torch.Generator) -> torch.Tensor:
    return torch.poisson(x.clamp(0, 1).double() * photons, generator=g).to(x.dtype) / photons


def _gaussian_blur(x: torch.Tensor, kernel_224: float, g: torch.Generator) -> torch.Tensor:
    sigma = (0.3 * ((kernel_224 - 1) * 0.5 - 1) + 0.8) * max(x.shape[-2:]) / 224.0  # OpenCV's sigma of a k-kernel
    return torch.as_tensor(GaussianSmooth(sigma=sigma)(x)).as_subclass(torch.Tensor)


def _brightness(x: torch.Tensor, factor: float, g: torch.Generator) -> torch.Tensor:
    return x * factor


def _contrast(x: torch.Tensor, factor: float, g: torch.Generator) -> torch.Tensor:
    mean = x.mean()
    return mean + (x - mean) * factor


def _gamma(x: torch.Tensor, gamma: float, g: torch.Generator) -> torch.Tensor:
    return x.clamp(0, 1) ** gamma


def _resolution(x: torch.Tensor, factor: float, g: torch.Generator) -> torch.Tensor:
    return F.interpolate(_down(x, factor), size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[0]


def _windowing(x: torch.Tensor, width: float, g: torch.Generator) -> torch.Tensor:
    low = 0.5 - width / 2 + (1.0 - width) / 4  # narrower and shifted up: another site's display window
    return (x - low) / width


def _exposure(x: torch.Tensor, k: float, g: torch.Generator) -> torch.Tensor:
    return (1.0 - torch.exp(-k * x.clamp(0, 1))) / (1.0 - math.exp(-k))


class ShiftFamily:
    """One corruption family: ``fn(image (C, H, W) float tensor, parameter, generator)``, its five parameters
    (severity 1..5) and where they come from."""

    def __init__(self, fn: Callable, params: tuple[float, ...], source: str, kind: str) -> None:
        if len(params) != len(SEVERITIES):
            raise ValueError(f"a shift family needs {len(SEVERITIES)} severity parameters, got {params}")
        self.fn, self.params, self.source, self.kind = fn, tuple(params), source, kind

    def __repr__(self) -> str:
        return f"ShiftFamily({self.fn.__name__.lstrip('_')}, params={self.params}, kind={self.kind!r})"


_MC = "MedMNIST-C (pneumoniamnist), reimplemented"
#: family name -> :class:`ShiftFamily`; severity ``s`` uses ``params[s - 1]``
SHIFT_FAMILIES: dict[str, ShiftFamily] = {
    "pixelate": ShiftFamily(_pixelate, (0.8, 0.7, 0.6, 0.5, 0.4), _MC, "digital"),
    "jpeg": ShiftFamily(_jpeg, (50, 30, 15, 10, 7), _MC, "digital"),
    "gaussian_noise": ShiftFamily(_gaussian_noise, (0.04, 0.05, 0.06, 0.07, 0.08), _MC, "noise"),
    "speckle_noise": ShiftFamily(_speckle_noise, (0.05, 0.07, 0.10, 0.15, 0.20), _MC, "noise"),
    "impulse_noise": ShiftFamily(_impulse_noise, (0.005, 0.01, 0.013, 0.017, 0.02), _MC, "noise"),
    "shot_noise": ShiftFamily(_shot_noise, (300, 200, 150, 100, 80), _MC, "noise"),
    "gaussian_blur": ShiftFamily(_gaussian_blur, (3, 5, 7, 9, 11), _MC, "blur"),
    "brightness_up": ShiftFamily(_brightness, (1.1, 1.2, 1.3, 1.4, 1.5), _MC, "intensity"),
    "brightness_down": ShiftFamily(_brightness, (0.9, 0.8, 0.7, 0.6, 0.5), _MC, "intensity"),
    "contrast_up": ShiftFamily(_contrast, (1.1, 1.2, 1.3, 1.4, 1.6), _MC, "intensity"),
    "contrast_down": ShiftFamily(_contrast, (0.9, 0.8, 0.7, 0.6, 0.4), _MC, "intensity"),
    "gamma_up": ShiftFamily(_gamma, (1.1, 1.2, 1.3, 1.4, 1.6), _MC, "intensity"),
    "gamma_down": ShiftFamily(_gamma, (0.9, 0.8, 0.7, 0.6, 0.4), _MC, "intensity"),
    "resolution": ShiftFamily(_resolution, (0.8, 0.6, 0.5, 0.4, 0.3), "monai-transfer", "acquisition"),
    "windowing": ShiftFamily(_windowing, (0.9, 0.8, 0.7, 0.6, 0.5), "monai-transfer", "acquisition"),
    "exposure": ShiftFamily(_exposure, (0.5, 1.0, 1.5, 2.0, 3.0), "monai-transfer", "acquisition"),
}
MEDMNISTC_FAMILIES = tuple(k for k, v in SHIFT_FAMILIES.items() if v.source == _MC)
PROJECT_FAMILIES = tuple(k for k in SHIFT_FAMILIES if k not in MEDMNISTC_FAMILIES)


def shift_parameter(family: str, severity: int) -> float:
    """The parameter of ``family`` at ``severity`` (1..5); raises ``ValueError`` naming the bad value."""
    if family not in SHIFT_FAMILIES:
        raise ValueError(f"unknown shift family {family!r}; available: {sorted(SHIFT_FAMILIES)}")
    if int(severity) not in SEVERITIES or int(severity) != severity:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    return float(SHIFT_FAMILIES[family].params[int(severity) - 1])


class AcquisitionShift(Randomizable, Transform):
    """Corrupt a channel-first 2D image in [0, 1] with one family of the shift suite at one severity.

    Args:
        family: a name of :data:`SHIFT_FAMILIES` (MedMNIST-C's chest X-ray families and this project's
            ``resolution``, ``windowing``, ``exposure``).
        severity: 1 (mildest) to 5.
        seed: seed of the random families (noises); each call draws the next image's noise from it.

    Raises:
        ValueError: unknown family or severity; an image that is not ``(C, H, W)``.

    Example::

        shift = AcquisitionShift("gaussian_noise", severity=3, seed=0)
        noisy = shift(torch.rand(1, 64, 64))
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, family: str, severity: int = 1, seed: int = 0) -> None:
        self.param = shift_parameter(family, severity)
        self.family, self.severity = family, int(severity)
        self.fn = SHIFT_FAMILIES[family].fn
        self.set_random_state(seed=seed)
        self._seed = 0

    def randomize(self, data: object = None) -> None:
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize()
        t = convert_to_tensor(img, track_meta=False)
        if t.ndim != 3:
            raise ValueError(f"AcquisitionShift({self.family!r}) needs a (C, H, W) image, got shape {tuple(t.shape)}")
        x = t.detach().cpu().float()
        g = torch.Generator().manual_seed(self._seed)
        out = self.fn(x, self.param, g).clamp(0.0, 1.0).to(t.dtype)
        return convert_to_dst_type(out, img)[0]
