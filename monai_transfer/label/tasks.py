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
  predicted label at the bundle's stored threshold (binary) or the arg-max (multi-class), as ``inference.json``
  decides; for a multi-label bundle (``mode`` ``"multilabel"`` in ``inference.json``) every finding's probability
  and the findings at or above their per-label thresholds (see :meth:`ClassificationBundleInferTask.writer`).
- :class:`ClassificationBundleTrainTask` turns each datastore label file (``<image id>.label.json``, see
  :mod:`monai_transfer.label.utils`) into the integer class index the bundle's ``train.json`` expects, or for a
  multi-label bundle (``"mode": "multilabel"`` in ``train.json``) into the 0/1 vector over its findings.

MONAI Label is optional (it lives in its own environment, ``scripts/setup_label_env.sh``): importing this module without
it works, instantiating a task raises ``OptionalImportError`` naming ``monailabel``.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import optional_import

from monai_transfer.label.utils import bundle_task_mode, parse_image_label, parse_image_labels, read_class_names
from monai_transfer.utils.task import Task, apply_threshold, as_task, derive_task

if TYPE_CHECKING:
    from monailabel.interfaces.datastore import Datastore
    from monailabel.tasks.infer.bundle import BundleInferTask
    from monailabel.tasks.train.bundle import BundleTrainTask
else:
    BundleInferTask, _ = optional_import("monailabel.tasks.infer.bundle", name="BundleInferTask", as_type="base")
    BundleTrainTask, _ = optional_import("monailabel.tasks.train.bundle", name="BundleTrainTask", as_type="base")
    Datastore = Any

InferType, has_monailabel = optional_import("monailabel.interfaces.tasks.infer_v2", name="InferType")

__all__ = [
    "ClassificationBundleInferTask",
    "ClassificationBundleTrainTask",
    "has_monailabel",
    "multilabel_validation_indices",
    "scores_to_result",
]

logger = logging.getLogger(__name__)


def _score_vector(scores: Any, class_names: list[str]) -> list[float]:
    t = torch.as_tensor(scores.as_tensor() if hasattr(scores, "as_tensor") else scores).detach().float().cpu()
    t = t.reshape(t.shape[0], -1)[:, 0] if t.ndim > 1 else t.reshape(-1)
    if t.numel() != len(class_names):
        raise ValueError(f"prediction has {t.numel()} scores but the bundle defines classes {class_names}.")
    return [float(v) for v in t.tolist()]


def _multilabel_result(
    values: list[float], class_names: list[str], task: Task, thresholds: list[float] | None
) -> dict[str, Any]:
    """The multi-label answer of :func:`scores_to_result`: every label with its threshold and the findings."""
    t = [0.5] * len(class_names) if thresholds is None else [float(v) for v in thresholds]
    if len(t) != len(class_names):
        raise ValueError(f"{len(t)} thresholds given for the {len(class_names)} labels {class_names}.")
    hit = [int(i) for i in apply_threshold([values], task, t)[0].nonzero()[0]]
    return {
        "mode": "multilabel",
        "prediction": [
            {"idx": i, "label": n, "score": v, "threshold": ti, "positive": i in hit}
            for i, (n, v, ti) in enumerate(zip(class_names, values, t))
        ],
        "probabilities": dict(zip(class_names, values)),
        "thresholds": dict(zip(class_names, t)),
        "findings": [class_names[i] for i in hit],
        "finding_indices": hit,
        "label": ";".join(class_names[i] for i in hit),
    }


def scores_to_result(
    scores: Any,
    class_names: list[str],
    mode: str | None = None,
    thresholds: list[float] | None = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Build the JSON answer of a classification inference from a 1-D score vector.

    Args:
        scores: the post-processed prediction (probabilities), shape ``(num_classes,)`` or ``(num_classes, 1, ...)``.
        class_names: class names ordered by index.
        mode: ``None``/``"binary"``/``"multiclass"``: one label; ``"multilabel"``: independent (sigmoid)
            probabilities, finding ``k`` is present when ``p_k >= thresholds[k]``.
        thresholds: multi-label only: one threshold per label (default 0.5 each).
        threshold: 2 classes only: the label is class 1 when ``p_1 >= threshold`` (the rule of ``inference.json``'s
            predictions and of evaluation), else class 0; ``None``: the top-scoring class.

    Returns:
        binary/multi-class: ``{"prediction": [{"idx", "label", "score"}, ...], "probabilities": {name: p}, "label":
        name, "label_index": i, "score": p}`` (plus ``"threshold"`` when one was applied); ``prediction`` is the
        format of MONAI Label's own ``ClassificationWriter``. Multi-label: ``{"mode": "multilabel", "prediction":
        [{"idx", "label", "score", "threshold", "positive"}, ...], "probabilities": {name: p}, "thresholds": {name:
        t}, "findings": [names at or above their threshold, in class order], "finding_indices": [...], "label": the
        findings joined by ";" ("" for none)}``.

    Raises:
        ValueError: when the number of scores (or multi-label thresholds) differs from the number of classes, or a
            ``threshold`` is given for another number of classes than 2.
    """
    values = _score_vector(scores, class_names)
    task = derive_task(mode, class_names=class_names)
    if task.is_multilabel:
        return _multilabel_result(values, class_names, task, thresholds)
    if threshold is not None and len(values) != 2:
        raise ValueError(f"a decision threshold applies to 2 classes, the bundle defines {class_names}.")
    if threshold is None:
        best = max(range(len(values)), key=values.__getitem__)
    else:  # the binary rule of inference.json's predictions and of evaluation
        best = int(task.class_index(apply_threshold([values], task, float(threshold)))[0])
    result = {
        "prediction": [{"idx": i, "label": n, "score": v} for i, (n, v) in enumerate(zip(class_names, values))],
        "probabilities": dict(zip(class_names, values)),
        "label": class_names[best],
        "label_index": best,
        "score": values[best],
    }
    if threshold is not None:
        result["threshold"] = float(threshold)
    return result


def multilabel_validation_indices(
    labels: list[list[int]], val_split: float, names: list[str] | None = None
) -> list[int]:
    """Validation items of a multi-label datastore: ``round(n * val_split)`` of them (at least 1, at most ``n - 1``).

    Findings are served rarest first: a finding with two or more positives and none in validation yet gets its last
    positive item (datastore order) that leaves it a positive for training, while the share allows; the remaining
    places go to the last items of the list. Deterministic. A finding left without a positive on either side is
    logged at WARNING (its validation AUC is undefined, or the model never sees it).

    Args:
        labels: one 0/1 list per item, all of one length.
        val_split: validation share, in (0, 1).
        names: the findings, for the warnings; default their indices.

    Returns:
        the validation indices, ascending.
    """
    n = len(labels)
    if n < 2:
        return []
    n_val = min(max(round(n * val_split), 1), n - 1)
    y = [[int(v) for v in row] for row in labels]
    k = len(y[0])
    pos = [[i for i in range(n) if y[i][j] == 1] for j in range(k)]
    val: set[int] = set()
    for j in sorted(range(k), key=lambda j: len(pos[j])):
        if len(val) >= n_val or len(pos[j]) < 2 or any(i in val for i in pos[j]):
            continue
        for i in reversed(pos[j]):  # keep a positive of every finding in training
            if all(sum(1 for p in pos[m] if p not in val and p != i) > 0 for m in range(k) if y[i][m] and pos[m]):
                val.add(i)
                break
    for i in reversed(range(n)):
        if len(val) >= n_val:
            break
        val.add(i)
    for j in range(k):
        name, in_val = names[j] if names is not None else j, sum(1 for i in pos[j] if i in val)
        if not pos[j]:
            logger.warning(f"finding {name!r} has no positive item in the datastore: the model cannot learn it")
        elif in_val in (0, len(pos[j])):
            side = "validation" if in_val == 0 else "training"
            logger.warning(f"finding {name!r} has no positive item in the {side} split ({len(pos[j])} in all)")
    return sorted(val)


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

    def _get_network(self, device: Any, data: Any) -> Any:
        """MONAI Label's network loading, after checking the weights record beside the checkpoint and the file.

        Once per new or retrained ``model.pt``: the file is read with
        :func:`~monai_transfer.utils.io.safe_torch_load` (an unsafe or damaged file is refused naming it), and a
        checkpoint whose ``models/model.json`` disagrees with the bundle's ``model_spec`` (class names, image size,
        backbone, normalisation) raises
        :class:`~monai_transfer.networks.checkpoint_record.CheckpointConfigMismatchError` naming both values instead
        of answering with scores of the wrong classes or size. A ``threshold.json`` chosen on calibrated
        probabilities without the ``calibration.json`` the bundle's ``postprocessing`` applies (or the reverse) is
        refused (:func:`~monai_transfer.metrics.threshold.check_threshold_calibration`), and so is a
        ``calibration.json`` that is invalid or fitted for another task
        (:func:`~monai_transfer.metrics.calibration.load_calibration`). Calibration (``ApplyTemperatured``),
        test-time augmentation (``use_tta``) and ensembles (``num_members``) come from the bundle's ``inference.json``
        like in every other inference path.
        """
        path = self.get_path()
        if path and str(path).endswith((".pt", ".pth")) and os.path.isfile(path):
            stamp = (str(path), os.stat(path).st_mtime_ns)
            if stamp != getattr(self, "_verified", None):  # once per new or retrained checkpoint
                from monai_transfer.networks.checkpoint_record import check_checkpoint_record
                from monai_transfer.utils.io import safe_torch_load

                if self.bundle_config.get("model_spec") is not None:
                    spec = self.bundle_config.get_parsed_content("model_spec")
                    pre = self.bundle_config.get("preprocessing")
                    pre = self.bundle_config.get_parsed_content("preprocessing") if pre is not None else None
                    check_checkpoint_record(path, spec, source=f"bundle {self.bundle_path}", preprocessing=pre)
                cfg = self.bundle_config
                if cfg.get("threshold_path") is not None and cfg.get("calibration_path") is not None:
                    from monai_transfer.metrics.threshold import check_threshold_calibration

                    # a threshold chosen on calibrated probabilities needs the calibration.json the postprocessing reads
                    thr, cal = cfg.get_parsed_content("threshold_path"), cfg.get_parsed_content("calibration_path")
                    check_threshold_calibration(thr, cal)
                if cfg.get("calibration_path") is not None:
                    from monai_transfer.metrics.calibration import load_calibration

                    cal = cfg.get_parsed_content("calibration_path")
                    if cal is not None and os.path.isfile(str(cal)):  # an invalid or other task's file, named
                        load_calibration(str(cal), self.output_mode())
                safe_torch_load(path)  # an unsafe or damaged file is refused with its name (MONAI Label's is not)
                self._verified = stamp
        return super()._get_network(device, data)

    def post_transforms(self, data: Any = None) -> Any:
        """MONAI Label's postprocessing of the bundle, rebuilt when the bundle's ``calibration_path`` file appears,
        changes or goes (e.g. a training through MONAI Label refits or drops it).

        The bundle's ``ApplyTemperatured`` reads ``calibration.json`` when it is built, and MONAI Label keeps the
        parsed postprocessing for the life of the server, so a retrained bundle would otherwise be answered with the
        old temperature while its ``inference.json`` uses the new one.
        """
        stamp = None
        if self.bundle_config.get("calibration_path") is not None:
            path = str(self.bundle_config.get_parsed_content("calibration_path"))
            stamp = (path, os.stat(path).st_mtime_ns if os.path.isfile(path) else None)
        if stamp != getattr(self, "_post_stamp", stamp):
            self.bundle_config.parse()  # drop the parsed objects: the postprocessing re-reads the file
        self._post_stamp = stamp
        return super().post_transforms(data)

    def info(self) -> dict[str, Any]:
        """MONAI Label's model info plus ``class_names`` (ordered by output index)."""
        i = super().info()
        i["class_names"] = list(self.class_names)
        return i

    def output_mode(self) -> str:
        """The bundle's ``mode`` id (``"binary"``, ``"multiclass"``, ``"multilabel"``); by the class count without
        (:func:`~monai_transfer.utils.task.derive_task`, as the train task and every other path)."""
        mode = self.bundle_config.get_parsed_content("mode") if self.bundle_config.get("mode") is not None else None
        return derive_task(mode, class_names=self.class_names).mode.value

    def label_thresholds(self) -> list[float]:
        """The per-label thresholds of a multi-label bundle, read from its ``threshold_path`` (``models/threshold.json``
        of the training, re-read on every answer so a retrained model's file is used) with
        :func:`~monai_transfer.metrics.threshold.resolve_multilabel_threshold`; 0.5 per label without that file.

        Raises:
            ValueError: an invalid file, one with another number of values or other ``class_names`` (named).
        """
        from monai_transfer.metrics.threshold import resolve_multilabel_threshold

        path = self.bundle_config.get("threshold_path")
        path = self.bundle_config.get_parsed_content("threshold_path") if path is not None else None
        return resolve_multilabel_threshold(path, self.class_names, missing_ok=True)[0]

    def binary_threshold(self) -> float:
        """The decision threshold of a 2-class bundle, read from its ``threshold_path`` (``models/threshold.json``,
        re-read on every answer) with :func:`~monai_transfer.metrics.threshold.resolve_binary_threshold`, the
        resolver of ``inference.json``'s prediction writer and of evaluation; 0.5 (logged) without that file.

        Raises:
            ValueError: an invalid threshold file (named).
        """
        from monai_transfer.metrics.threshold import resolve_binary_threshold

        path = self.bundle_config.get("threshold_path")
        path = self.bundle_config.get_parsed_content("threshold_path") if path is not None else None
        return resolve_binary_threshold(path, missing_ok=True)[0]

    def writer(self, data: dict[str, Any], extension: Any = None, dtype: Any = None) -> tuple[None, dict[str, Any]]:
        """Answer with the class probabilities and the predicted label (no label file is written). The probabilities
        are the bundle's ``postprocessing`` output (temperature scaling with the bundle's ``calibration.json``
        included); a binary bundle's label applies its stored threshold (:meth:`binary_threshold`), a multi-class
        bundle's is the arg-max, as ``inference.json`` decides; for a multi-label bundle every finding's probability,
        its threshold and the findings at or above their thresholds.

        Returns:
            ``(None, scores_to_result(data[pred], class_names, mode, thresholds, threshold))``.
        """
        mode = self.output_mode()
        task = as_task(mode)
        thresholds = self.label_thresholds() if task.is_multilabel else None
        threshold = self.binary_threshold() if task.is_binary and len(self.class_names) == 2 else None
        return None, scores_to_result(data[self.output_label_key], self.class_names, mode, thresholds, threshold)


class ClassificationBundleTrainTask(BundleTrainTask):
    """``BundleTrainTask`` whose datalist carries class labels read from image-level label files.

    The datastore's final labels (``labels/final/<image id>.label.json``, see :mod:`monai_transfer.label.utils`)
    become ``{"image": path, "label": class index}``, or, when the bundle's ``train.json`` fixes ``"mode":
    "multilabel"`` (a multi-label training run folder), ``{"image": path, "label": [0/1 per finding]}`` read with
    :func:`~monai_transfer.label.utils.parse_image_labels` (a label file holding a single class is refused, naming the
    mode; a finding list for a one-class-per-image bundle likewise). The mode is
    :func:`~monai_transfer.label.utils.bundle_task_mode`. The bundle's ``train.json`` must accept these labels (the
    project's bundles do) and save ``models/model.pt``, which MONAI Label's inference reloads when it changes. On top
    of MONAI Label's own overrides (``bundle_root``, ``device``, ``train#trainer#max_epochs``, ``train#dataset#data``,
    ``validate#dataset#data``, ``train#handlers``) the task, for a bundle that defines these top-level ids:

    - splits train/validation per class (every class with at least two images gets one in each split), so a small
      datastore does not end up with a single-class validation set; multi-label: see :meth:`_partition_datalist`;
    - sets ``epochs`` to the requested ``max_epochs`` (schedulers follow the trainer's length) and ``datalists`` to
      the two splits (ids that would otherwise read the bundle's own ``dataset_dir``);
    - forwards the request parameters named in :attr:`BUNDLE_REQUEST_KEYS` (e.g. ``batch_size``) and caps
      ``batch_size`` at the number of training items (a ``drop_last`` loader would otherwise yield no batch).

    Multi-GPU training is switched off when the bundle has no ``multi_gpu_train.json`` (MONAI Label would otherwise
    skip training).

    Args:
        path: the bundle folder (needs ``configs/train.json``).
        conf: the app's ``--conf`` settings.
        kwargs: passed to ``BundleTrainTask`` (``enable_tracking``, ``model_dict_key``, ``load_strict``).

    Raises:
        OptionalImportError: when MONAI Label is not installed.
    """

    #: request parameters passed on to the bundle id of the same name when the bundle's train config defines it.
    BUNDLE_REQUEST_KEYS: tuple[str, ...] = ("batch_size", "learning_rate", "n_bootstrap", "val_interval")

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        self.class_names: list[str] = read_class_names(path) if os.path.isdir(path) else []
        self._request_overrides: dict[str, Any] = {}
        super().__init__(path, conf, **kwargs)

    def config(self) -> dict[str, Any]:
        """MONAI Label's train options plus the bundle's values of :attr:`BUNDLE_REQUEST_KEYS`."""
        options = super().config()
        for k in self.BUNDLE_REQUEST_KEYS:
            value = self.bundle_config.get(k)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                options[k] = value
        return options

    def train_mode(self) -> str:
        """``"binary"``, ``"multiclass"`` or ``"multilabel"``: :func:`~monai_transfer.label.utils.bundle_task_mode` of
        the ``mode`` id of the bundle's ``train.json``."""
        # no ``bundle_config`` when the bundle has no train config (MONAI Label then marks the task invalid): the
        # datalist still follows the class count, as ``inference.json`` does
        config = getattr(self, "bundle_config", None)
        return bundle_task_mode(config.get("mode") if config is not None else None, self.class_names)

    def _fetch_datalist(self, request: dict[str, Any], datastore: Datastore) -> list[dict[str, Any]]:
        mode = self.train_mode()
        multilabel = as_task(mode).is_multilabel
        parse = parse_image_labels if multilabel else parse_image_label
        items = []
        for d in datastore.datalist():
            if d and d.get("label"):
                try:
                    label = parse(d["label"], self.class_names)
                except ValueError as e:
                    raise ValueError(f"bundle {self.bundle_path} (mode {mode!r}): {e}") from e
                items.append({"image": d["image"], "label": label})
        if not items:
            first = self.class_names[0] if self.class_names else "<class>"
            example = f'["{first}"]' if multilabel else f'"{first}"'
            raise ValueError(
                "the datastore has no final labels to train on: save one label file per image, e.g. "
                f'PUT /datastore/label?image=<id>&tag=final with a file <id>.label.json holding {{"label": {example}}}'
                + (" (the findings present, [] for none)." if multilabel else ".")
            )
        return items

    def _partition_datalist(
        self, datalist: list[dict[str, Any]], request: dict[str, Any], shuffle: bool = False
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        """Split per class: ``round(n * val_split)`` items of each class (at least 1 when it has 2 or more) validate.

        Multi-label items (``label`` a 0/1 list) are split by :func:`multilabel_validation_indices`:
        ``round(n * val_split)`` items (at least 1) validate, chosen so that every finding with two or more positives
        has one in validation when the share allows. ``val_split`` 0 trains on everything with an empty validation
        list; a negative value keeps the bundle's own validation data (MONAI Label's convention). The split keeps the
        datastore order (deterministic).
        """
        val_split = float(request.get("val_split", 0.2))
        if val_split <= 0.0:
            return list(datalist), (None if val_split < 0 else [])
        if val_split >= 1.0:
            raise ValueError(f"val_split must be below 1, got {val_split}.")
        if datalist and derive_task(labels=[d["label"] for d in datalist]).is_multilabel:
            names = getattr(self, "class_names", None)
            val_idx = set(multilabel_validation_indices([d["label"] for d in datalist], val_split, names))
        else:
            by_class: dict[int, list[int]] = {}
            for i, d in enumerate(datalist):
                by_class.setdefault(int(d["label"]), []).append(i)
            val_idx = set()
            for idx in by_class.values():
                n_val = min(max(round(len(idx) * val_split), 1 if len(idx) > 1 else 0), len(idx) - 1)
                val_idx.update(idx[len(idx) - n_val :])
        train = [d for i, d in enumerate(datalist) if i not in val_idx]
        val = [d for i, d in enumerate(datalist) if i in val_idx]
        logger.info(f"{len(datalist)} labelled items; val_split {val_split}: {len(train)} train, {len(val)} validation")
        return train, val

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        # a bundle without a validation section gets no validation datalist (setting it would create a bogus key)
        val_key = self.const.key_validate_dataset_data()
        if val_key in overrides and self.bundle_config.get(val_key.rsplit("#", 1)[0]) is None:
            overrides.pop(val_key)
        train = overrides[self.const.key_train_dataset_data()]
        if "epochs" in self.bundle_config:
            overrides["epochs"] = overrides[self.const.key_train_trainer_max_epochs()]
        if "datalists" in self.bundle_config and val_key in overrides:
            overrides["datalists"] = {"train": train, "val": overrides[val_key]}
        for k, v in self._request_overrides.items():
            if k in self.bundle_config:
                overrides[k] = v
        batch_size = overrides.get("batch_size", self.bundle_config.get("batch_size"))
        if isinstance(batch_size, int) and not isinstance(batch_size, bool) and train:
            overrides["batch_size"] = max(1, min(batch_size, len(train)))
        return overrides

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> Any:
        configs = [os.path.join(self.bundle_path, "configs", c) for c in self.const.multi_gpu_configs()]
        if not any(os.path.exists(c) for c in configs):
            request = {**request, "multi_gpu": False, "force_multi_gpu": False}
        self._request_overrides = {k: request[k] for k in self.BUNDLE_REQUEST_KEYS if request.get(k) is not None}
        try:
            return super().__call__(request, datastore)
        finally:
            self._request_overrides = {}
