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
"""MONAI Label tasks that serve the project's bundles as classification models.

Out of the box MONAI Label's ``BundleInferTask`` guesses the task type from the bundle's folder name (anything without
"classification" is segmentation), drops a class named "background", lower-cases the class names and appends a
``Restored`` post-transform that fails on a class-score vector. ``BundleTrainTask`` hands the datastore's label *file
paths* to the bundle. The subclasses here fix both for image-level classification:

- :class:`ClassificationBundleInferTask` passes ``type=InferType.CLASSIFICATION`` and ``add_post_restore=False``,
  takes every class name from the bundle's ``channel_def`` and answers with the class probabilities and the
  predicted label (see :meth:`ClassificationBundleInferTask.writer`).
- :class:`ClassificationBundleTrainTask` turns each datastore label file (``<image id>.label.json``, see
  :mod:`monai_transfer.label.utils`) into the integer class index the bundle's ``train.json`` expects.

MONAI Label is optional (it lives in its own environment, ``scripts/setup_label_env.sh``): importing this module without
it works, instantiating a task raises ``OptionalImportError`` naming ``monailabel``.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import optional_import

from monai_transfer.label.utils import parse_image_label, read_class_names

if TYPE_CHECKING:
    from monailabel.interfaces.datastore import Datastore
    from monailabel.tasks.infer.bundle import BundleInferTask
    from monailabel.tasks.train.bundle import BundleTrainTask
else:
    BundleInferTask, _ = optional_import("monailabel.tasks.infer.bundle", name="BundleInferTask", as_type="base")
    BundleTrainTask, _ = optional_import("monailabel.tasks.train.bundle", name="BundleTrainTask", as_type="base")
    Datastore = Any

InferType, has_monailabel = optional_import("monailabel.interfaces.tasks.infer_v2", name="InferType")

__all__ = ["ClassificationBundleInferTask", "ClassificationBundleTrainTask", "has_monailabel", "scores_to_result"]

logger = logging.getLogger(__name__)


def scores_to_result(scores: Any, class_names: list[str]) -> dict[str, Any]:
    """Build the JSON answer of a classification inference from a 1-D score vector.

    Args:
        scores: the post-processed prediction (probabilities), shape ``(num_classes,)`` or ``(num_classes, 1, ...)``.
        class_names: class names ordered by index.

    Returns:
        ``{"prediction": [{"idx", "label", "score"}, ...], "probabilities": {name: p}, "label": name,
        "label_index": i, "score": p}``; ``prediction`` is the format of MONAI Label's own ``ClassificationWriter``.

    Raises:
        ValueError: when the number of scores differs from the number of classes.
    """
    t = torch.as_tensor(scores.as_tensor() if hasattr(scores, "as_tensor") else scores).detach().float().cpu()
    t = t.reshape(t.shape[0], -1)[:, 0] if t.ndim > 1 else t.reshape(-1)
    if t.numel() != len(class_names):
        raise ValueError(f"prediction has {t.numel()} scores but the bundle defines classes {class_names}.")
    values = [float(v) for v in t.tolist()]
    best = max(range(len(values)), key=values.__getitem__)
    return {
        "prediction": [{"idx": i, "label": n, "score": v} for i, (n, v) in enumerate(zip(class_names, values))],
        "probabilities": dict(zip(class_names, values)),
        "label": class_names[best],
        "label_index": best,
        "score": values[best],
    }


class ClassificationBundleInferTask(BundleInferTask):
    """``BundleInferTask`` for an image-level classification bundle.

    Args:
        path: the bundle folder (``configs/inference.json``, ``configs/metadata.json``, ``models/model.pt``).
        conf: the app's ``--conf`` settings (``preload`` is read by MONAI Label).
        kwargs: passed to ``BundleInferTask``; defaults here are ``type=InferType.CLASSIFICATION``,
            ``add_post_restore=False`` and ``load_strict=True`` (a checkpoint that does not match the network is an
            error, not a warning).

    Raises:
        OptionalImportError: when MONAI Label is not installed.
        ValueError: when the bundle's ``metadata.json`` has no usable ``channel_def``.
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        self.class_names: list[str] = read_class_names(path) if os.path.isdir(path) else []
        kwargs.setdefault("type", InferType.CLASSIFICATION)
        kwargs.setdefault("add_post_restore", False)
        kwargs.setdefault("load_strict", True)
        super().__init__(path, conf, **kwargs)
        if self.is_valid():
            # keep every class (MONAI Label drops "background" and lower-cases the names)
            self.labels = {name: i for i, name in enumerate(self.class_names)}

    def info(self) -> dict[str, Any]:
        """MONAI Label's model info plus ``class_names`` (ordered by output index)."""
        i = super().info()
        i["class_names"] = list(self.class_names)
        return i

    def writer(self, data: dict[str, Any], extension: Any = None, dtype: Any = None) -> tuple[None, dict[str, Any]]:
        """Answer with the class probabilities and the predicted label (no label file is written).

        Returns:
            ``(None, scores_to_result(data[pred], class_names))``.
        """
        return None, scores_to_result(data[self.output_label_key], self.class_names)


class ClassificationBundleTrainTask(BundleTrainTask):
    """``BundleTrainTask`` whose datalist carries integer class labels read from image-level label files.

    The datastore's final labels (``labels/final/<image id>.label.json``, see :mod:`monai_transfer.label.utils`)
    become ``{"image": path, "label": class index}``; the bundle's ``train.json`` must accept that (the project's
    bundles do) and save ``models/model.pt``, which MONAI Label's inference reloads when it changes. Multi-GPU training
    is switched off when the bundle has no ``multi_gpu_train.json`` (MONAI Label would otherwise skip training).

    Args:
        path: the bundle folder (needs ``configs/train.json``).
        conf: the app's ``--conf`` settings.
        kwargs: passed to ``BundleTrainTask`` (``enable_tracking``, ``model_dict_key``, ``load_strict``).

    Raises:
        OptionalImportError: when MONAI Label is not installed.
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        self.class_names: list[str] = read_class_names(path) if os.path.isdir(path) else []
        super().__init__(path, conf, **kwargs)

    def _fetch_datalist(self, request: dict[str, Any], datastore: Datastore) -> list[dict[str, Any]]:
        items = []
        for d in datastore.datalist():
            if d and d.get("label"):
                items.append({"image": d["image"], "label": parse_image_label(d["label"], self.class_names)})
        if not items:
            raise ValueError(
                "the datastore has no final labels to train on: save one label file per image, e.g. "
                f'PUT /datastore/label?image=<id>&tag=final with a file <id>.label.json holding {{"label": '
                f'"{self.class_names[0] if self.class_names else "<class>"}"}}.'
            )
        return items

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        # a bundle without a validation section gets no validation datalist (setting it would create a bogus key)
        key = self.const.key_validate_dataset_data()
        if key in overrides and self.bundle_config.get(key.rsplit("#", 1)[0]) is None:
            overrides.pop(key)
        return overrides

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> Any:
        configs = [os.path.join(self.bundle_path, "configs", c) for c in self.const.multi_gpu_configs()]
        if not any(os.path.exists(c) for c in configs):
            request = {**request, "multi_gpu": False, "force_multi_gpu": False}
        return super().__call__(request, datastore)
