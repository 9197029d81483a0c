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
"""Grad-CAM overlays (:class:`monai.visualize.GradCAM`) saved as PNG in the original image geometry."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.visualize import GradCAM

from monai_transfer.utils.io import atomic_write

__all__ = ["save_gradcam_overlays", "save_dataset_gradcam_overlays", "save_slice_gradcam_overlays"]


def _to_grey01(img: Any) -> np.ndarray:
    """``(H, W)``, ``(C, H, W)`` (first channel) or ``(H, W, 3)`` -> ``(H, W)`` float in [0, 1] (min-max)."""
    a = img.detach().cpu().float().numpy() if isinstance(img, torch.Tensor) else np.asarray(img, dtype=np.float32)
    if a.ndim == 3:
        a = a.mean(-1) if a.shape[-1] in (3, 4) and a.shape[0] not in (1, 3) else a[0]
    if a.ndim != 2:
        raise ValueError(f"original image must be 2D (H, W), (C, H, W) or (H, W, 3), got shape {a.shape}")
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _safe_name(s: str) -> str:
    base = re.sub(r"\.(nii\.gz|nii|png|jpe?g|dcm|npy|tiff?|bmp)$", "", Path(str(s)).name, flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base)[:80] or "case"


def save_gradcam_overlays(
    model: torch.nn.Module,
    images: torch.Tensor,
    target_layer: str,
    output_dir: str | os.PathLike,
    n: int = 8,
    class_index: int | None = None,
    original_images: Sequence[Any] | None = None,
    ids: Sequence[str] | None = None,
    alpha: float = 0.4,
) -> list[Path]:
    """Compute Grad-CAM for the first ``n`` images and save heat-map overlays as RGB PNGs.

    Each map is resized (bilinear) to its original image's size, so the PNG has exactly the original pixel
    geometry (``H0 x W0``), not the network input size.

    Args:
        model: a 2D classifier, ``(B, C, H, W)`` -> logits.
        images: network input batch ``(B, C, H, W)`` (already preprocessed), on the model's device.
        target_layer: name of the layer to explain (see ``model.named_modules()``), e.g. the last conv stage.
        output_dir: folder for ``gradcam_<id>.png``.
        n: number of cases (the first ``n`` of the batch).
        class_index: class to explain; ``None`` uses each case's predicted (arg-max) class.
        original_images: per-case images in original geometry (``(H0, W0)``, ``(C, H0, W0)`` or ``(H0, W0, 3)``)
            used as background; default the first channel of ``images``.
        ids: per-case names for the files; default ``case_00000``...
        alpha: opacity of the heat map.

    Returns:
        the written PNG paths.

    Raises:
        ValueError: ``images`` is not a 4D batch, ``n < 1``, or ``original_images``/``ids`` are too short.
    """
    from matplotlib import colormaps
    from PIL import Image

    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if int(n) < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    n = min(int(n), images.shape[0])
    if original_images is not None and len(original_images) < n:
        raise ValueError(f"original_images must have at least n={n} entries, got {len(original_images)}")
    if ids is not None and len(ids) < n:
        raise ValueError(f"ids must have at least n={n} entries, got {len(ids)}")
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        cam = GradCAM(nn_module=model, target_layers=target_layer)
        with torch.enable_grad():
            maps = cam(x=images[:n].as_subclass(torch.Tensor), class_idx=class_index)  # (n, 1, H, W) in [0, 1]
    finally:
        model.train(was_training)
    cmap = colormaps["jet"]
    paths = []
    for i in range(n):
        bg = _to_grey01(original_images[i] if original_images is not None else images[i, 0])
        m = F.interpolate(maps[i : i + 1].detach().float().cpu(), size=bg.shape, mode="bilinear", align_corners=False)
        heat = cmap(np.clip(m[0, 0].numpy(), 0, 1))[..., :3]
        rgb = (1 - alpha) * np.repeat(bg[..., None], 3, -1) + alpha * heat
        img = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), mode="RGB")
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        name = _safe_name(ids[i]) if ids is not None else f"case_{i:05d}"
        paths.append(atomic_write(out_dir / f"gradcam_{name}.png", lambda f, b=buf: f.write(b.getvalue())))
    return paths


def save_dataset_gradcam_overlays(
    model: torch.nn.Module,
    dataset: Sequence[Any],
    target_layer: str,
    output_dir: str | os.PathLike,
    n: int = 4,
    device: str | torch.device | None = None,
    image_key: str = "image",
    class_index: int | None = None,
    alpha: float = 0.4,
) -> list[Path]:
    """Grad-CAM overlays of the first ``n`` items of a 2D image dataset (e.g. the xray bundle's ``validate#dataset``).

    The network inputs are the dataset's transformed items; when the dataset has a ``data`` list (MONAI datasets
    do), each overlay is drawn on the original image of that item, loaded with
    :class:`~monai_transfer.transforms.LoadMedicalImage`, and named after its path. ``n <= 0`` writes nothing.

    Args:
        model: the 2D classifier.
        dataset: indexable dataset of dicts holding ``image_key``.
        target_layer: name of the layer to explain (see ``model.named_modules()``).
        output_dir: folder for the PNGs.
        n: number of items (the first ``n``); 0 disables.
        device: device of ``model``; default the device of its first parameter.
        image_key: key of the network input (and of the image path in ``dataset.data``).
        class_index: class to explain; ``None`` uses each image's predicted class.
        alpha: opacity of the heat map.

    Returns:
        the written PNG paths (empty when ``n <= 0`` or the dataset is empty).
    """
    n = min(int(n), len(dataset))
    if n <= 0:
        return []
    if device is None:
        device = next(model.parameters()).device
    images = torch.stack([torch.as_tensor(dataset[i][image_key]) for i in range(n)]).to(device)
    data = getattr(dataset, "data", None)
    originals = ids = None
    if data is not None:
        from monai_transfer.transforms import LoadMedicalImage

        load = LoadMedicalImage()
        originals = [load(x[image_key]) for x in data[:n]]
        ids = [str(x[image_key]) for x in data[:n]]
    return save_gradcam_overlays(
        model, images, target_layer, output_dir, n=n, class_index=class_index, original_images=originals, ids=ids,
        alpha=alpha,
    )  # fmt: skip


def save_slice_gradcam_overlays(
    model: torch.nn.Module,
    dataset: Sequence[Any],
    target_layer: str,
    output_dir: str | os.PathLike,
    n: int = 4,
    device: str | torch.device | None = None,
    image_key: str = "image",
    class_index: int | None = None,
    alpha: float = 0.4,
) -> list[Path]:
    """Grad-CAM overlays of the central slice of the first ``n`` volumes of a 2.5D slice dataset.

    Each item of ``dataset`` is what a slice chain (:class:`~monai_transfer.transforms.ExtractSlicesd`) returns for
    one volume: a list of slice dicts (a single dict counts as one slice). The middle slice of each volume is
    explained with :func:`save_gradcam_overlays`; the background is the centre channel of its network input (the
    slice itself, between its neighbours), min-max scaled, in the network input geometry. Files are named
    ``gradcam_<volume>_slice<index>.png`` from the slice's ``source_id`` and ``slice_index``.

    Args:
        model: the 2D slice classifier.
        dataset: indexable slice dataset (e.g. the bundle's ``validate#dataset``).
        target_layer: name of the layer to explain (see ``model.named_modules()``).
        output_dir: folder for the PNGs.
        n: number of volumes (the first ``n``).
        device: device of ``model``; default the device of its first parameter.
        image_key: key of the network input in each slice dict.
        class_index: class to explain; ``None`` uses each slice's predicted class.
        alpha: opacity of the heat map.

    Returns:
        the written PNG paths.

    Raises:
        ValueError: ``n < 1``, an empty dataset, or an item without slices or without ``image_key``.
    """
    if int(n) < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    if len(dataset) == 0:
        raise ValueError("the slice dataset is empty: no volume to explain with Grad-CAM")
    if device is None:
        device = next(model.parameters()).device
    images, backgrounds, ids = [], [], []
    for i in range(min(int(n), len(dataset))):
        item = dataset[i]
        slices = list(item) if isinstance(item, (list, tuple)) else [item]
        if not slices or not isinstance(slices[0], dict) or image_key not in slices[len(slices) // 2]:
            raise ValueError(f"dataset item {i} holds no slice dict with key '{image_key}'")
        s = slices[len(slices) // 2]
        img = torch.as_tensor(s[image_key]).as_subclass(torch.Tensor).float()
        images.append(img)
        backgrounds.append(img[img.shape[0] // 2])
        name = _safe_name(str(s.get("source_id", f"case_{i:05d}")))
        ids.append(f"{name}_slice{int(s['slice_index']):03d}" if s.get("slice_index") is not None else name)
    batch = torch.stack(images).to(device)
    return save_gradcam_overlays(
        model, batch, target_layer, output_dir, n=len(images), class_index=class_index,
        original_images=backgrounds, ids=ids, alpha=alpha,
    )  # fmt: skip
