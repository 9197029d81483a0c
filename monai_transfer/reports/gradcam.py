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
"""Grad-CAM overlays (:class:`monai.visualize.GradCAM`) saved as PNG figures: the heat map over the image in its
original geometry, titled with the case, the explained class and its probability, with a colour bar."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.visualize import GradCAM

from monai_transfer.reports.plots import new_figure, save_figure

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


def _short(case: str) -> str:
    """The last folder and file name of a case path (``patient_07/IM0001.dcm``): generic file names stay telling."""
    return "/".join(Path(str(case)).parts[-2:])


def _temperature(temperature: float | str | os.PathLike | None) -> float:
    """``T`` of a number or ``calibration.json``; ``None`` or a path that does not exist (no calibration) give 1."""
    from monai_transfer.transforms.calibration.array import resolve_temperature

    if isinstance(temperature, (str, os.PathLike)) and not Path(temperature).is_file():
        return 1.0
    return resolve_temperature(temperature)


def _probabilities(logits: torch.Tensor, activation: str, temperature: float) -> torch.Tensor:
    z = logits.detach().float().cpu() / temperature
    return torch.sigmoid(z) if activation == "sigmoid" else torch.softmax(z, dim=1)


def _save_overlay(
    path: Path, background: np.ndarray, heat: np.ndarray, title: str, alpha: float, description: str
) -> Path:
    """The figure: grey ``background`` and the ``heat`` map (both ``(H0, W0)``, in [0, 1]), title, colour bar."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    h, w = background.shape
    side = min(max(h, w, 320), 900) / 120  # the image's longer side: 320-900 px at the figures' 120 dpi
    fig = new_figure((side * w / max(h, w) + 1.4, side * h / max(h, w) + 0.9))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(background, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.imshow(heat, cmap="jet", vmin=0.0, vmax=1.0, alpha=alpha, interpolation="bilinear")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), colormaps["jet"]), ax=ax, fraction=0.046, pad=0.03)
    bar.set_label("Grad-CAM (scaled per image)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return save_figure(fig, path, metadata={"Title": title.replace("\n", " | "), "Description": description})


def _checked_count(
    images: Any, n: int, activation: str, original_images: Sequence[Any] | None, ids: Sequence[str] | None
) -> int:
    """The number of cases to explain, ``min(n, batch size)``; ``ValueError`` naming a wrong argument."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if int(n) < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    if activation not in ("softmax", "sigmoid"):
        raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
    n = min(int(n), images.shape[0])
    if original_images is not None and len(original_images) < n:
        raise ValueError(f"original_images must have at least n={n} entries, got {len(original_images)}")
    if ids is not None and len(ids) < n:
        raise ValueError(f"ids must have at least n={n} entries, got {len(ids)}")
    return n


def _title(case: str, cls: str, highest: bool, prob: float, temperature: float) -> str:
    """The figure title: case, explained class (``highest``: chosen as the top score) and its probability."""
    why = " (highest score)" if highest else ""
    cal = "" if temperature == 1.0 else f", temperature {temperature:.3g}"
    return f"{_short(case)}\nGrad-CAM for '{cls}'{why}\np({cls}) = {prob:.3f}{cal}"


def _logits_and_maps(
    model: torch.nn.Module, x: torch.Tensor, target_layer: str, class_index: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, Grad-CAM maps (n, 1, H, W) in [0, 1])`` of ``x`` in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x)
        cam = GradCAM(nn_module=model, target_layers=target_layer)
        with torch.enable_grad():
            maps = cam(x=x, class_idx=class_index)
    finally:
        model.train(was_training)
    return logits, maps


def _central_slices(
    dataset: Sequence[Any], n: int, image_key: str
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[str]]:
    """``(network inputs, backgrounds, names)`` of the middle slice of each of the first ``n`` volumes."""
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
    return images, backgrounds, ids


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
    class_names: Sequence[str] | None = None,
    activation: str = "softmax",
    temperature: float | str | os.PathLike | None = None,
) -> list[Path]:
    """Compute Grad-CAM for the first ``n`` images and save each heat-map overlay as a titled PNG figure.

    Each map is resized (bilinear) to its original image's size and drawn over it in that geometry (``H0 x W0``, not
    the network input size). The title names the case, the explained class and the model's probability of that
    class (``activation`` of the logits divided by ``temperature``: the probability the bundle reports when its
    calibration is passed); a colour bar gives the heat map's scale. The title and the geometry are also stored in
    the PNG's ``Title``/``Description`` text fields.

    Args:
        model: a 2D classifier, ``(B, C, H, W)`` -> logits.
        images: network input batch ``(B, C, H, W)`` (already preprocessed), on the model's device.
        target_layer: name of the layer to explain (see ``model.named_modules()``), e.g. the last conv stage.
        output_dir: folder for ``gradcam_<id>.png``.
        n: number of cases (the first ``n`` of the batch).
        class_index: class to explain; ``None`` uses each case's highest-scoring class.
        original_images: per-case images in original geometry (``(H0, W0)``, ``(C, H0, W0)`` or ``(H0, W0, 3)``)
            used as background; default the first channel of ``images``.
        ids: per-case names for the files and titles; default ``case_00000``...
        alpha: opacity of the heat map.
        class_names: class names by output index, for the titles; default ``class <k>``.
        activation: ``"softmax"`` (single-label) or ``"sigmoid"`` (multi-label) for the probability in the title.
        temperature: temperature scaling of the logits for that probability: a number or a ``calibration.json``
            path; ``None`` or a path that does not exist: none.

    Returns:
        the written PNG paths.

    Raises:
        ValueError: ``images`` is not a 4D batch, ``n < 1``, ``original_images``/``ids`` are too short, or an unknown
            ``activation``.
    """
    n = _checked_count(images, n, activation, original_images, ids)
    t = _temperature(temperature)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    logits, maps = _logits_and_maps(model, images[:n].as_subclass(torch.Tensor), target_layer, class_index)
    probs = _probabilities(logits, activation, t)
    paths = []
    for i in range(n):
        bg = _to_grey01(original_images[i] if original_images is not None else images[i, 0])
        m = F.interpolate(maps[i : i + 1].detach().float().cpu(), size=bg.shape, mode="bilinear", align_corners=False)
        k = int(class_index) if class_index is not None else int(logits[i].argmax())
        cls = class_names[k] if class_names is not None and 0 <= k < len(class_names) else f"class {k}"
        case = str(ids[i]) if ids is not None else f"case_{i:05d}"
        title = _title(case, cls, class_index is None, float(probs[i, k]), t)
        description = f"Grad-CAM of layer {target_layer} for output {k} ({cls}), drawn over the " + (
            f"{bg.shape[0]}x{bg.shape[1]} original image; {activation} probability {float(probs[i, k]):.6f}"
        )
        path = out_dir / f"gradcam_{_safe_name(ids[i]) if ids is not None else f'case_{i:05d}'}.png"
        paths.append(_save_overlay(path, bg, np.clip(m[0, 0].numpy(), 0, 1), title, alpha, description))
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
    class_names: Sequence[str] | None = None,
    activation: str = "softmax",
    temperature: float | str | os.PathLike | None = None,
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
        class_index: class to explain; ``None`` uses each image's highest-scoring class.
        alpha: opacity of the heat map.
        class_names, activation, temperature: the title's class name and probability (see
            :func:`save_gradcam_overlays`).

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
        alpha=alpha, class_names=class_names, activation=activation, temperature=temperature,
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
    class_names: Sequence[str] | None = None,
    activation: str = "softmax",
    temperature: float | str | os.PathLike | None = None,
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
        class_index: class to explain; ``None`` uses each slice's highest-scoring class.
        alpha: opacity of the heat map.
        class_names, activation, temperature: the title's class name and probability of the slice (see
            :func:`save_gradcam_overlays`).

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
    images, backgrounds, ids = _central_slices(dataset, n, image_key)
    batch = torch.stack(images).to(device)
    return save_gradcam_overlays(
        model, batch, target_layer, output_dir, n=len(images), class_index=class_index,
        original_images=backgrounds, ids=ids, alpha=alpha, class_names=class_names, activation=activation,
        temperature=temperature,
    )  # fmt: skip
