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
"""Load a model checkpoint safely and only into a config it was trained for.

MONAI's ``CheckpointLoader`` reads with ``weights_only=True`` too, but a refused (possibly malicious) file surfaces
as torch's ``UnpicklingError`` without the file's name, and it loads weights into whatever network the config
builds. :class:`VerifiedCheckpointLoader` (the bundles' ``inference.json`` handler) and :func:`load_verified_model`
(``evaluate.json``'s ``run`` step):

1. check the weights record beside the checkpoint (``models/model.json``, see
   :mod:`monai_transfer.networks.checkpoint_record`) against the config's ``model_spec``: a checkpoint trained at
   another image size, with other class names, backbone or normalisation raises
   :class:`~monai_transfer.networks.checkpoint_record.CheckpointConfigMismatchError` naming both values;
2. read the weights with :func:`monai_transfer.utils.io.load_state_dict_file` (``weights_only=True`` or
   safetensors; an unsafe file raises :class:`~monai_transfer.utils.io.UnsafeCheckpointError` naming it);
3. load them strictly, with an error naming the file when the keys or shapes do not fit.

Bundle snippet::

    {"_target_": "monai_transfer.handlers.model_loader.VerifiedCheckpointLoader", "load_path": "@ckpt_path",
     "load_dict": {"model": "@network"}, "map_location": "@device", "expected": "@model_spec"}
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from monai_transfer.networks.checkpoint_record import check_checkpoint_record
from monai_transfer.utils.io import load_state_dict_file

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["load_verified_model", "VerifiedCheckpointLoader"]

logger = logging.getLogger(__name__)


def load_verified_model(
    network: torch.nn.Module,
    path: str | os.PathLike,
    expected: Mapping[str, Any] | None = None,
    map_location: Any = "cpu",
    strict: bool = True,
    source: str = "config",
    preprocessing: Any = None,
) -> torch.nn.Module:
    """Check ``path``'s weights record against ``expected``, then load its state dict into ``network`` safely.

    Args:
        network: the model (a DistributedDataParallel wrapper is unwrapped).
        path: ``.pt``/``.pth``/``.ckpt`` (plain state dict or one wrapped in ``model``/``state_dict``/...) or
            ``.safetensors``.
        expected: the config's ``model_spec`` (:func:`~monai_transfer.networks.checkpoint_record.model_spec`);
            ``None`` skips the record check.
        map_location: device for the loaded tensors.
        strict: passed to ``load_state_dict``.
        source: how the error messages name the config.
        preprocessing: the config's preprocessing; compared (by what it does to a probe image) with the training's,
            when the record holds its probe (:func:`~monai_transfer.networks.checkpoint_record.preprocessing_probe`).

    Returns:
        ``network``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointConfigMismatchError: the record disagrees with ``expected`` (both values named).
        UnsafeCheckpointError: the file needs unrestricted unpickling (refused; the file is named).
        RuntimeError: the file is damaged, or its weights do not fit ``network``; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found (train the bundle first or set ckpt_path)")
    check_checkpoint_record(path, expected, source=source, preprocessing=preprocessing)
    state = load_state_dict_file(path, map_location=str(map_location) if map_location is not None else "cpu")
    net = network.module if hasattr(network, "module") else network
    try:
        net.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise RuntimeError(f"checkpoint {path} does not fit the config's network: {e}") from e
    return network


class VerifiedCheckpointLoader:
    """Ignite handler loading a checkpoint at ``Events.STARTED`` through :func:`load_verified_model`.

    Drop-in for MONAI's ``CheckpointLoader`` in inference/evaluation configs (same ``load_path``, ``load_dict``,
    ``map_location``, ``strict``), plus ``expected`` (the config's ``model_spec``).

    Args:
        load_path: the checkpoint file.
        load_dict: ``{name: module}``; with one entry the file is read as that module's state dict (unwrapping a
            ``{"model": state_dict}`` checkpoint); with several, each name must be a key of the checkpoint.
        map_location: device for the loaded tensors.
        strict: passed to ``load_state_dict``.
        expected: the config's ``model_spec`` checked against the weights record; ``None`` skips the check.
        name: optional logger name.
        preprocessing: the config's ``preprocessing``: what it does to a probe image must match the training's
            (recorded in the weights record), so a hand-edited resize or normalisation is refused.

    Raises:
        ValueError: when ``load_dict`` is empty.
    """

    def __init__(
        self,
        load_path: str | os.PathLike,
        load_dict: Mapping[str, Any],
        map_location: Any = None,
        strict: bool = True,
        expected: Mapping[str, Any] | None = None,
        name: str | None = None,
        preprocessing: Any = None,
    ) -> None:
        if not load_dict:
            raise ValueError("load_dict must name the module(s) to load, e.g. {'model': '@network'}.")
        self.load_path = Path(load_path)
        self.load_dict = dict(load_dict)
        self.map_location = map_location
        self.strict = strict
        self.expected = expected
        self.preprocessing = preprocessing
        self.logger = logging.getLogger(name or __name__)

    def attach(self, engine: Engine) -> None:
        """Register on ``Events.STARTED``."""
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        """Check and load the checkpoint into ``load_dict``."""
        device = self.map_location if self.map_location is not None else "cpu"
        if len(self.load_dict) == 1:
            load_verified_model(
                next(iter(self.load_dict.values())), self.load_path, self.expected, device, strict=self.strict,
                preprocessing=self.preprocessing,
            )  # fmt: skip
        else:
            from monai_transfer.utils.io import safe_torch_load

            check_checkpoint_record(self.load_path, self.expected, preprocessing=self.preprocessing)
            ckpt = safe_torch_load(self.load_path, map_location=str(device))
            missing = [k for k in self.load_dict if not isinstance(ckpt, Mapping) or k not in ckpt]
            if missing:
                raise RuntimeError(f"checkpoint {self.load_path} has no entries {missing} (load_dict names them)")
            for k, obj in self.load_dict.items():
                obj.load_state_dict(ckpt[k], **({"strict": self.strict} if isinstance(obj, torch.nn.Module) else {}))
        self.logger.info(f"restored all variables from {self.load_path}")
