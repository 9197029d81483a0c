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
"""TensorBoard logging that MONAI's handlers leave out for classification training.

MONAI's ``TensorBoardStatsHandler`` logs the loss and the validation metrics, but not the optimiser's learning rates,
and ``TensorBoardImageHandler`` is built for segmentation (image/label/output volumes). This handler adds both for
classification: the learning rate of every parameter group (discriminative learning rates show as several curves)
and, once per epoch, a grid of a few input images exactly as the network sees them (after augmentation), so wrong
windowing, inversion or orientation is visible at a glance.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["TensorBoardTrainingExtras", "log_folder_writer", "tensorboard_write_error"]


def tensorboard_write_error(log_dir: str | os.PathLike, cause: OSError) -> OSError:
    """The error of a failed TensorBoard write, naming the log folder: a full disk (``ENOSPC``/``EDQUOT``) gives a
    :class:`~monai_transfer.utils.io.DiskFullError` with the free space there; TensorBoard's own message names
    neither the folder nor the event file (its writes happen in a background thread)."""
    import shutil

    from monai_transfer.utils.io import DiskFullError

    if cause.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        try:
            free = f"{shutil.disk_usage(log_dir).free / (1 << 20):.1f} MiB free"
        except OSError:
            free = "free space unknown"
        return DiskFullError(
            cause.errno,
            f"No space left on device (disk full) while writing TensorBoard logs to the folder {log_dir} ({free}; "
            f"{cause.strerror or cause}): free some space, or set log_dir to another disk",
        )
    return OSError(cause.errno, f"cannot write TensorBoard logs to the folder {log_dir}: {cause.strerror or cause}")


class _FolderNamingWriter:
    """A TensorBoard ``FileWriter`` whose failed calls raise :func:`tensorboard_write_error`."""

    def __init__(self, writer: Any, log_dir: str) -> None:
        self._writer, self._log_dir = writer, log_dir

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._writer, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except OSError as e:
                raise tensorboard_write_error(self._log_dir, e) from e

        return call


def log_folder_writer(log_dir: str | os.PathLike | None) -> Any:
    """A ``torch.utils.tensorboard.SummaryWriter`` for ``log_dir`` whose write failures (a full disk, a folder that
    became read-only) name the folder; the one writer of :class:`TensorBoardTrainingExtras` and, through
    :mod:`monai_transfer.handlers.loggers`, of MONAI's ``TensorBoardStatsHandler`` in the bundles.

    Raises:
        OSError: the folder or its event file cannot be created (named).
    """
    from torch.utils.tensorboard import SummaryWriter

    class _Writer(SummaryWriter):
        def _get_file_writer(self) -> Any:
            try:
                return _FolderNamingWriter(super()._get_file_writer(), str(self.log_dir))
            except OSError as e:
                raise tensorboard_write_error(self.log_dir, e) from e

        def flush(self) -> None:
            try:
                super().flush()
            except OSError as e:
                raise tensorboard_write_error(self.log_dir, e) from e

        def close(self) -> None:
            try:
                super().close()
            except OSError as e:
                raise tensorboard_write_error(self.log_dir, e) from e

    try:
        return _Writer(log_dir=None if log_dir is None else str(log_dir))
    except OSError as e:
        raise tensorboard_write_error(log_dir or "runs", e) from e


class TensorBoardTrainingExtras:
    """Log learning rates and sample input images of a trainer to TensorBoard.

    Args:
        log_dir: TensorBoard folder (used when ``summary_writer`` is None).
        optimizer: optimiser whose ``param_groups[i]["lr"]`` are logged as ``lr/group_<i>``; default: the engine's
            ``optimizer`` attribute (MONAI's ``SupervisedTrainer`` has one).
        summary_writer: an existing ``SummaryWriter`` to share.
        n_images: images per grid (0 disables images); default 8.
        image_key: batch key of the images; default ``"image"``.
        lr_interval: log learning rates every this many iterations; default 1.
        tag_prefix: prefix of the image tag; default ``"train"``.

    Raises:
        ValueError: ``n_images`` negative or ``lr_interval`` < 1.

    Example::

        {"_target_": "monai_transfer.handlers.tensorboard.TensorBoardTrainingExtras", "log_dir": "@log_dir"}
    """

    def __init__(
        self,
        log_dir: str | os.PathLike | None = "./runs",
        optimizer: torch.optim.Optimizer | None = None,
        summary_writer: Any = None,
        n_images: int = 8,
        image_key: str = "image",
        lr_interval: int = 1,
        tag_prefix: str = "train",
    ) -> None:
        if n_images < 0:
            raise ValueError(f"n_images must be >= 0, got {n_images}.")
        if lr_interval < 1:
            raise ValueError(f"lr_interval must be >= 1, got {lr_interval}.")
        if summary_writer is None:
            summary_writer = log_folder_writer(log_dir)  # failed writes name the folder
        self.writer = summary_writer
        self.optimizer = optimizer
        self.n_images = n_images
        self.image_key = image_key
        self.lr_interval = lr_interval
        self.tag_prefix = tag_prefix
        self._logged_epoch = -1

    def attach(self, engine: Engine) -> None:
        """Log learning rates every ``lr_interval`` iterations and one image grid per epoch."""
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.lr_interval), self.log_lr)
        if self.n_images:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.log_images)
        engine.add_event_handler(Events.COMPLETED, lambda _: self.writer.flush())

    def __call__(self, engine: Engine) -> None:
        """Log learning rates and, once per epoch, images (for use as a plain event handler)."""
        self.log_lr(engine)
        self.log_images(engine)

    def log_lr(self, engine: Engine) -> None:
        optimizer = self.optimizer if self.optimizer is not None else getattr(engine, "optimizer", None)
        if optimizer is None:
            return
        step = engine.state.iteration
        for i, group in enumerate(optimizer.param_groups):
            self.writer.add_scalar(f"lr/group_{i}", float(group["lr"]), step)

    def _batch_images(self, batch: Any) -> torch.Tensor | None:
        """The first ``n_images`` images of a batch: a collated dict, or the per-case dicts MONAI's engines leave in
        ``engine.state.batch`` after an iteration (decollated)."""
        if isinstance(batch, dict):
            return None if self.image_key not in batch else torch.as_tensor(batch[self.image_key][: self.n_images])
        if isinstance(batch, (list, tuple)) and batch and all(isinstance(b, dict) for b in batch):
            items = [torch.as_tensor(b[self.image_key]) for b in batch[: self.n_images] if self.image_key in b]
            if items and all(x.shape == items[0].shape for x in items):
                return torch.stack(items)
        return None

    def log_images(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        if epoch == self._logged_epoch:
            return
        images = self._batch_images(engine.state.batch)
        if images is None or images.ndim != 4:  # (B, C, H, W) only; volumes are not gridded here
            return
        self._logged_epoch = epoch
        images = images.as_subclass(torch.Tensor).detach().float().cpu()
        images = images[:, :1] if images.shape[1] not in (1, 3) else images
        flat = images.flatten(1)
        lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
        hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
        images = (images - lo) / (hi - lo).clamp_min(1e-8)
        from torchvision.utils import make_grid

        self.writer.add_image(
            f"{self.tag_prefix}/inputs", make_grid(images, nrow=min(len(images), 8), padding=2), epoch
        )
