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
"""MONAI Label inference for 2.5D slice bundles (``bundles/ct_slices``): one prediction per VOLUME.

A slice bundle's ``preprocessing`` turns one volume into a list of slice dicts
(:class:`~monai_transfer.transforms.ExtractSlicesd`), which MONAI Label's ``BasicInferTask`` cannot batch, and its
network answers per slice. :class:`VolumeSliceBundleInferTask` runs the bundle's preprocessing on the volume, the
network on all its slices as one batch, the bundle's ``postprocessing`` on each slice (softmax per slice, as the
bundle's own evaluator does), and pools the slice probabilities into one volume prediction with
:func:`~monai_transfer.data.volumes.aggregate_volume_probs` and the bundle's ``aggregation``/``aggregation_k`` (the
same pooling as ``inference.json``'s ``VolumePredictionWriter``), then applies the Platt step of the pooled
probabilities that the bundle's ``calibration.json`` holds for that pooling
(:mod:`monai_transfer.metrics.volume_calibration`; binary bundles that apply their temperature).

:func:`is_slice_bundle` tells the app which bundles need it; :func:`infer_task_class` picks the task class.
MONAI Label is optional: importing this module works without it, instantiating the task raises
``OptionalImportError``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose

from monai_transfer.data.volumes import AGGREGATION_METHODS, aggregate_volume_probs
from monai_transfer.label.tasks import ClassificationBundleInferTask
from monai_transfer.label.utils import INFER_CONFIGS
from monai_transfer.metrics.volume_calibration import VolumePlatt, load_volume_platt
from monai_transfer.transforms import ApplyTemperatured

__all__ = ["VolumeSliceBundleInferTask", "is_slice_bundle", "infer_task_class", "SLICE_BUNDLE_IDS"]

logger = logging.getLogger(__name__)

#: top-level ids of an inference config that make it a 2.5D slice bundle (one prediction per volume).
SLICE_BUNDLE_IDS = ("slicing", "aggregation")


def _infer_config(bundle_dir: str | os.PathLike) -> Path | None:
    configs = Path(bundle_dir) / "configs"
    return next((configs / c for c in INFER_CONFIGS if (configs / c).is_file()), None)


def is_slice_bundle(bundle_dir: str | os.PathLike) -> bool:
    """Whether the bundle's inference config defines the ids of a slice bundle (:data:`SLICE_BUNDLE_IDS`).

    Raises:
        ValueError: when the inference config cannot be read; the message names the file.
    """
    from monai.bundle import ConfigParser

    path = _infer_config(bundle_dir)
    if path is None:
        return False
    try:
        config = ConfigParser.load_config_file(str(path))
    except Exception as e:  # JSON/YAML syntax errors of the bundle
        raise ValueError(f"{path}: cannot read the inference config: {e}") from e
    return isinstance(config, dict) and all(k in config for k in SLICE_BUNDLE_IDS)


def infer_task_class(bundle_dir: str | os.PathLike) -> type:
    """:class:`VolumeSliceBundleInferTask` for a slice bundle, else ``ClassificationBundleInferTask``."""
    return VolumeSliceBundleInferTask if is_slice_bundle(bundle_dir) else ClassificationBundleInferTask


class VolumeSliceBundleInferTask(ClassificationBundleInferTask):
    """:class:`~monai_transfer.label.tasks.ClassificationBundleInferTask` for slice bundles: one answer per volume.

    The request's image is a volume (NIfTI, or whatever the bundle's ``volume_preprocessing`` reads). The answer is
    that of the parent (``prediction``, ``probabilities``, ``label``, ...) for the POOLED volume probabilities, plus
    ``aggregation`` (``method``, ``k``, ``n_slices``) and ``slices`` (``slice_index`` and class probabilities of
    every slice). A request may pass ``aggregation`` (``"mean"``, ``"max"``, ``"topk_mean"``) and ``aggregation_k``
    to override the bundle's.

    Args:
        path: the bundle folder (``configs/inference.json`` with ``slicing`` and ``aggregation``,
            ``configs/metadata.json``, ``models/model.pt``).
        conf: the app's ``--conf`` settings.
        kwargs: passed to ``ClassificationBundleInferTask``.

    Raises:
        OptionalImportError: when MONAI Label is not installed.
    """

    def _bundle_value(self, key: str, default: Any) -> Any:
        return self.bundle_config.get_parsed_content(key) if key in self.bundle_config else default

    def _pooling(self, data: dict[str, Any]) -> tuple[str, int]:
        method = str(data.get("aggregation") or self._bundle_value("aggregation", "mean"))
        k = int(data.get("aggregation_k") or self._bundle_value("aggregation_k", 3))
        if method not in AGGREGATION_METHODS:
            raise ValueError(f"aggregation must be one of {AGGREGATION_METHODS}, got {method!r}.")
        if k < 1:
            raise ValueError(f"aggregation_k must be >= 1, got {k}.")
        return method, k

    def _volume_platt(self, transforms: Any, method: str, k: int) -> VolumePlatt | None:
        """The ``calibration.json`` Platt step for this pooling, when the postprocessing applies the temperature of
        a binary bundle (none for a pooling the request changed to one it was not fitted for)."""
        if self.output_mode() != "binary" or not any(isinstance(t, ApplyTemperatured) for t in transforms or ()):
            return None
        path = self._bundle_value("calibration_path", None)
        return load_volume_platt(path, method, k, where=f"MONAI Label task {type(self).__name__}")

    def run_pre_transforms(self, data: dict[str, Any], transforms: Any) -> dict[str, Any]:
        """Slice the volume with the bundle's ``preprocessing``; ``data[image]`` becomes the ``(S, C, H, W)`` slices.

        Raises:
            ValueError: when the preprocessing gives no slice; the message names the image.
        """
        source = data[self.input_key]
        out = Compose(list(transforms))({self.input_key: source})
        slices = list(out) if isinstance(out, (list, tuple)) else [out]
        if not slices:
            raise ValueError(f"{data.get('image_path', source)}: the bundle's preprocessing gave no slice.")
        data[self.input_key] = torch.stack(
            [torch.as_tensor(s[self.input_key]).as_subclass(torch.Tensor).float() for s in slices]
        )
        data["slice_index"] = [int(s.get("slice_index", i)) for i, s in enumerate(slices)]
        return data

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict[str, Any]:
        """Run the network on all slices of the volume as one batch (they already are one)."""
        return super().run_inferer(data, convert_to_batch=False, device=device)

    def run_post_transforms(self, data: dict[str, Any], transforms: Any) -> dict[str, Any]:
        """Post-process each slice (the bundle's ``postprocessing``), then pool them into one volume prediction (and
        Platt-scale it, see :meth:`_volume_platt`)."""
        key = self.output_label_key
        logits = torch.as_tensor(data[key]).as_subclass(torch.Tensor).detach().float().cpu()
        post = Compose(list(transforms)) if transforms else None
        rows = []
        for i in range(logits.shape[0]):
            d = {key: logits[i]}
            d = post(d) if post is not None else d
            rows.append(torch.as_tensor(d[key]).as_subclass(torch.Tensor).detach().float().cpu().reshape(-1))
        probs = torch.stack(rows).numpy()
        method, k = self._pooling(data)
        platt = self._volume_platt(transforms, method, k)
        data["slice_probabilities"] = probs
        data["volume_aggregation"] = {
            "method": method,
            "k": k if method == "topk_mean" else None,
            "n_slices": len(rows),
            "volume_platt": None if platt is None else platt.to_dict(),
        }
        pooled = aggregate_volume_probs(probs, method=method, k=k)
        data[key] = torch.as_tensor(np.atleast_1d(pooled if platt is None else platt(pooled)))
        return data

    def writer(self, data: dict[str, Any], extension: Any = None, dtype: Any = None) -> tuple[None, dict[str, Any]]:
        """The parent's answer for the volume, plus the pooling and the per-slice probabilities."""
        _, result = super().writer(data, extension, dtype)
        result["aggregation"] = dict(data["volume_aggregation"])
        result["slices"] = [
            {"slice_index": int(idx), "probabilities": dict(zip(self.class_names, (float(v) for v in p)))}
            for idx, p in zip(data["slice_index"], data["slice_probabilities"])
        ]
        return None, result
