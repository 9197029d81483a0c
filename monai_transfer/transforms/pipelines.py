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
"""Transform sequences that training, validation and inference of every bundle must share exactly.

- :func:`image_loading_transforms`: a file to an image in [0, 1] at the network's size (xray ``load_transforms``;
  ct_slices ``volume_transforms``/``volume_preprocessing``, without the resize).
- :func:`backbone_input_transforms`: the last step before the network (the bundles' ``final_transforms``), the
  backbone's normalisation of an image in [0, 1] (grey repeated to RGB) and MONAI tensors. A network serves correctly
  only with the normalisation it was trained with, so training, validation and inference take it from here instead
  of spelling it out in each config file.
- :func:`mode_activationd`: the post-processing activation that follows the task's ``mode`` (softmax, sigmoid for
  multi-label).
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import (
    Activationsd,
    EnsureTyped,
    MapTransform,
    RandBiasFieldd,
    RandGibbsNoised,
    ScaleIntensityd,
)

from monai_transfer.transforms.intensity.dictionary import (
    BackboneNormalized,
    FastRandHistogramShiftd,
    FastRandRicianNoised,
)
from monai_transfer.transforms.io.dictionary import LoadMedicalImaged
from monai_transfer.transforms.slicing.dictionary import ResizeKeepAspectd

__all__ = [
    "image_loading_transforms",
    "acquisition_shift_augmentation",
    "backbone_input_transforms",
    "mode_activationd",
]


def image_loading_transforms(
    image_size: int | Sequence[int] | None = None,
    keys: str | Sequence[str] = "image",
    expected_ndim: int | None = None,
) -> list[MapTransform]:
    """``[LoadMedicalImaged, ScaleIntensityd, ResizeKeepAspectd]``: a file to an image in [0, 1] at ``image_size``.

    The bundles' first step (xray ``load_transforms`` and the first part of ``inference.json``'s ``preprocessing``;
    ct_slices ``volume_transforms``/``volume_preprocessing``, without the resize), so that training and inference load
    alike. A bundle that needs another intensity step (a CT window, ``WindowIntensityd``) lists its transforms instead.

    Args:
        image_size: the size the longest side is scaled to (aspect kept, padded to a square); ``None``: no resize
            (volumes, resized slice by slice after slicing).
        keys: the image keys.
        expected_ndim: spatial dimensions every loaded image must have (``LoadMedicalImaged``); ``None``: any.

    Returns:
        the transforms, in order.
    """
    transforms: list[MapTransform] = [
        LoadMedicalImaged(keys=keys, expected_ndim=expected_ndim),
        ScaleIntensityd(keys=keys, minv=0.0, maxv=1.0),
    ]
    if image_size is not None:
        transforms.append(ResizeKeepAspectd(keys=keys, spatial_size=image_size))
    return transforms


def acquisition_shift_augmentation(keys: str | Sequence[str] = "image", prob: float = 0.3) -> list[MapTransform]:
    """Training augmentation aimed at acquisition shift (another scanner, dose, reconstruction or post-processing),
    of other kinds than the shift suite's corruptions (``monai_transfer.transforms.shift``), each applied with
    probability ``prob``: Rician noise (std 0.03), Gibbs ringing (k-space truncation, alpha 0-0.6), a random
    intensity curve (histogram shift, 5-10 control points) and a smooth multiplicative bias field (coefficients
    0-0.3). For images in [0, 1], after the geometric augmentation and before ``backbone_input_transforms``.

    The xray bundle's ``train#shift_augmentation`` (``shift_aug_prob``, 0.3): the fourth recipe round
    (``scripts/bench/recipe_xray.py``) chose it on the out-of-fold shift suite (mean AUC 0.935 -> 0.983) at the same
    clean cross-validated AUC (within 0.003).

    Args:
        keys: the image keys.
        prob: the probability of each transform; 0 makes all four the identity.

    Raises:
        ValueError: when ``prob`` is not in [0, 1].
    """
    if not 0.0 <= float(prob) <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob!r}.")
    return [
        FastRandRicianNoised(keys=keys, prob=prob, std=0.03),
        RandGibbsNoised(keys=keys, prob=prob, alpha=(0.0, 0.6)),
        FastRandHistogramShiftd(keys=keys, prob=prob, num_control_points=(5, 10)),
        RandBiasFieldd(keys=keys, prob=prob, coeff_range=(0.0, 0.3)),
    ]


def backbone_input_transforms(
    backbone: str,
    keys: str | Sequence[str] = ("image", "label"),
    image_key: str = "image",
    repeat_channels: bool = True,
    weights: str | None = None,
) -> list[MapTransform]:
    """``[BackboneNormalized, EnsureTyped]``: an image in [0, 1] as the network ``backbone`` expects it.

    Args:
        backbone: the backbone name; its default weights' mean/std (``weights`` for others) normalise ``image_key``.
        keys: keys made MONAI tensors (``EnsureTyped(track_meta=True)``); absent keys are allowed (no ``label`` at
            inference).
        image_key: the image key.
        repeat_channels: replicate a grey image to the RGB channels before normalising (the bundles train and serve
            ``in_channels=3`` networks).
        weights: the weights whose normalisation applies, when not the backbone's default.

    Returns:
        the two transforms, in order.
    """
    return [
        BackboneNormalized(keys=image_key, backbone=backbone, weights=weights, repeat_channels=repeat_channels),
        EnsureTyped(keys=keys, track_meta=True, allow_missing_keys=True),
    ]


def mode_activationd(mode: str, keys: str | Sequence[str] = "pred") -> Activationsd:
    """The activation of a classification task's logits: softmax, or sigmoid when ``mode`` is ``"multilabel"``.

    Args:
        mode: ``"binary"``, ``"multiclass"`` or ``"multilabel"`` (the bundles' ``mode`` id).
        keys: the keys of the logits.

    Raises:
        ValueError: when ``mode`` is not one of the three.
    """
    if mode not in ("binary", "multiclass", "multilabel"):
        raise ValueError(f"mode must be 'binary', 'multiclass' or 'multilabel', got {mode!r}.")
    return Activationsd(keys=keys, softmax=mode != "multilabel", sigmoid=mode == "multilabel")
