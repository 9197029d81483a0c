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
"""Atomic checkpoints and one-switch resume from the last checkpoint.

- MONAI's ``CheckpointSaver`` (1.4 to 1.6) writes through Ignite's ``DiskSaver`` with ``atomic=False``, so a run
  killed while saving leaves a truncated file where the previous good one was. :class:`AtomicCheckpointSaver` is
  the same handler (same arguments, same file names) writing each file to a temporary file in the same folder,
  ``fsync``-ing it and moving it into place with ``os.replace`` (:func:`monai_transfer.utils.io.atomic_write`).
- MONAI's ``CheckpointLoader`` (1.6.1) already reads with ``torch.load(..., weights_only=True)``; it is reused.
  :class:`LastCheckpointResume` finds the newest epoch checkpoint in a folder and loads it through
  ``CheckpointLoader``, or starts fresh when there is none, so a bundle resumes with one override
  (``--resume true``).

With AMP, add the trainer's ``GradScaler`` (``"scaler": "$@train#trainer.scaler"``) to ``save_dict`` so its loss
scale is restored too.

Bundle snippet::

    "save_dict": {"network": "@network", "optimizer": "@optimizer", "lr_scheduler": "@lr_scheduler",
                  "trainer": "@train#trainer", "handler_states": "@train#handler_states"},
    "train#handler_states": {"_target_": "monai_transfer.handlers.checkpoint.HandlerStates",
                             "best_model": "@validate#best_model_saver", "early_stop": "@validate#early_stop",
                             "evaluator": "@validate#evaluator"},
    "train#handlers": [
        {"_target_": "monai_transfer.handlers.checkpoint.LastCheckpointResume", "enabled": "@resume",
         "checkpoint_dir": "@ckpt_dir", "load_dict": "@save_dict"},
        {"_target_": "monai_transfer.handlers.seeding.EpochSeed", "seed": "@seed", "data_loader": "@train#dataloader"},
        {"_target_": "monai_transfer.handlers.checkpoint.AtomicCheckpointSaver", "save_dir": "@ckpt_dir",
         "save_dict": "@save_dict", "save_interval": 1, "n_saved": 1, "epoch_level": true}, ...]
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver

from monai_transfer.utils.io import atomic_write

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = [
    "AtomicDiskSaver",
    "AtomicCheckpointSaver",
    "checkpoint_progress",
    "find_last_checkpoint",
    "HandlerStates",
    "LastCheckpointResume",
]

_CKPT_EXTENSIONS = (".pt", ".pth", ".ckpt")


class AtomicDiskSaver(DiskSaver):
    """Ignite ``DiskSaver`` writing through :func:`~monai_transfer.utils.io.atomic_write` (temp file, fsync, rename).

    It is Ignite's ``DiskSaver(atomic=True)`` with two additions. Removals are deferred until the next save has
    succeeded: Ignite's ``Checkpoint`` (0.5.x) deletes the oldest file *before* writing the new one, so with
    ``n_saved=1`` a failed save leaves no checkpoint at all
    (``tests/handlers/test_handler_checkpoint.py::test_ignite_atomic_disk_saver_falls_short_of_keeping_a_checkpoint``).
    And the temporary file is fsync-ed before the rename (Ignite's is not), with the umask's permissions.
    ``filename`` fixes the file name, like MONAI's ``CheckpointSaver`` ``final_filename``.

    Args:
        dirname: folder of the checkpoints (created when missing).
        filename: fixed file name, or ``None`` for Ignite's generated names.
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None, **kwargs: Any) -> None:
        super().__init__(dirname=str(dirname), atomic=True, create_dir=True, require_empty=False, **kwargs)
        self.filename = filename
        self._pending_removal: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        filename = self.filename or filename
        super().__call__(checkpoint, filename, metadata)
        pending, self._pending_removal = self._pending_removal, []
        for old in pending:
            if old != filename and (self.dirname / old).exists():
                super().remove(old)

    def remove(self, filename: str) -> None:
        """Schedule ``filename`` for deletion after the next successful save."""
        self._pending_removal.append(self.filename or filename)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Any) -> None:
        atomic_write(path, lambda f: func(checkpoint, f, **self.kwargs))


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI ``CheckpointSaver`` whose files are written atomically (see :class:`AtomicDiskSaver`).

    Same arguments and file names as ``monai.handlers.CheckpointSaver`` (e.g. ``checkpoint_epoch=3.pt`` for
    ``save_interval=1, epoch_level=True``, ``checkpoint_final_iteration=N.pt`` for ``save_final=True``,
    ``checkpoint_key_metric=0.9123.pt`` for ``save_key_metric=True``). A run killed at any moment leaves either the
    previous complete file or the new complete file, never a truncated one, and the previous checkpoint is deleted
    only once its successor is on disk.
    """

    def __init__(self, save_dir: str, save_dict: dict, **kwargs: Any) -> None:
        super().__init__(save_dir=save_dir, save_dict=save_dict, **kwargs)
        fixed = {
            "_final_checkpoint": kwargs.get("final_filename"),
            "_key_metric_checkpoint": kwargs.get("key_metric_filename"),
            "_interval_checkpoint": None,
        }
        for attr, filename in fixed.items():
            ckpt = getattr(self, attr, None)
            if ckpt is not None:
                ckpt.save_handler = AtomicDiskSaver(save_dir, filename=filename)


def _as_number(x: Any) -> Any:
    """A 0-d tensor or NumPy scalar as a Python number (``weights_only`` checkpoints store plain values best)."""
    return x.item() if hasattr(x, "item") and getattr(x, "ndim", 1) == 0 else x


class HandlerStates:
    """The memory of validation-side handlers as one ``state_dict``/``load_state_dict`` object for a checkpoint.

    A trainer checkpoint restores the network, optimiser, scheduler and trainer, but the handlers attached to the
    evaluator start afresh: the best-model saver would overwrite ``model.pt`` with the first epoch after the resume
    even when it is worse than the best epoch before the interruption, and early stopping would count again from
    zero. Put this object in the trainer checkpoint's ``save_dict`` so their state travels with the checkpoint.

    Supported handlers (``None`` entries, e.g. a handler disabled on this rank with ``_disabled_``, are skipped):

    - a MONAI ``CheckpointSaver`` / :class:`AtomicCheckpointSaver` with ``save_key_metric=True``: its Ignite
      ``Checkpoint`` list of ``(score, file)`` pairs. It is restored only when the file is still on disk (otherwise a
      warning names it and best-model tracking starts afresh, so a model is written again);
    - MONAI's ``EarlyStopHandler`` (after ``set_trainer``): Ignite ``EarlyStopping``'s counter and best score; when
      the checkpoint was written by the epoch that stopped the run early, the resumed trainer is terminated at once
      (a run killed during its final report does not train further);
    - an Ignite/MONAI engine (the evaluator): ``best_metric`` and ``best_metric_epoch`` of its state;
    - anything else with ``state_dict``/``load_state_dict``.

    Args:
        handlers: name -> handler (or ``None``).
    """

    def __init__(self, **handlers: Any) -> None:
        self.handlers = handlers

    def add(self, name: str, handler: Any) -> None:
        """Register one more handler, e.g. one built after this object.

        :class:`~monai_transfer.handlers.ema.WeightEMA` registers itself this way (its ``handler_states`` argument).

        Raises:
            ValueError: ``name`` is already taken.
        """
        if name in self.handlers:
            raise ValueError(f"HandlerStates: a handler named {name!r} is already registered.")
        self.handlers[name] = handler

    @staticmethod
    def _state_of(handler: Any) -> dict | None:
        from ignite.engine import Engine
        from monai.handlers import EarlyStopHandler

        if handler is None:
            return None
        if isinstance(handler, CheckpointSaver):
            ckpt = handler._key_metric_checkpoint
            if ckpt is None:
                return None
            return {"_saved": [(_as_number(p), str(f)) for p, f in ckpt._saved]}
        if isinstance(handler, EarlyStopHandler):
            if handler._handler is None:  # not set up (early stopping switched off)
                return None
            sd = handler._handler.state_dict()
            return {k: _as_number(v) for k, v in sd.items()}  # counter, best_score, threshold_mode
        if isinstance(handler, Engine):
            return {
                "best_metric": _as_number(getattr(handler.state, "best_metric", -1)),
                "best_metric_epoch": int(getattr(handler.state, "best_metric_epoch", -1)),
            }
        if hasattr(handler, "state_dict"):
            return dict(handler.state_dict())
        raise TypeError(f"HandlerStates cannot save the state of {type(handler).__name__}: no state_dict().")

    def state_dict(self) -> dict[str, dict]:
        """``{name: state}`` of every handler that has a state (``None`` and unset handlers are left out)."""
        out = {}
        for name, handler in self.handlers.items():
            state = self._state_of(handler)
            if state is not None:
                out[name] = state
        return out

    def load_state_dict(self, state_dict: Mapping[str, Mapping]) -> None:
        """Restore each handler's state; a handler with no entry in ``state_dict`` starts afresh (with a warning)."""
        from ignite.engine import Engine
        from monai.handlers import EarlyStopHandler

        for name, handler in self.handlers.items():
            if self._state_of(handler) is None:
                continue  # disabled here, or switched off: nothing to restore into
            if name not in state_dict:
                warnings.warn(f"resume: the checkpoint holds no state for '{name}'; it starts afresh", stacklevel=2)
                continue
            state = state_dict[name]
            if isinstance(handler, CheckpointSaver):
                ckpt = handler._key_metric_checkpoint
                folder = Path(getattr(ckpt.save_handler, "dirname", handler.save_dir))
                fixed = getattr(ckpt.save_handler, "filename", None)  # e.g. "model.pt" (key_metric_filename)
                missing = [fixed or f for _, f in state["_saved"] if not (folder / (fixed or f)).is_file()]
                if missing:
                    warnings.warn(
                        f"resume: best model file(s) {[str(folder / f) for f in missing]} recorded in the checkpoint "
                        f"are gone; '{name}' forgets the earlier best score and saves the next validated model",
                        stacklevel=2,
                    )
                    continue
                ckpt.load_state_dict({"_saved": [tuple(x) for x in state["_saved"]]})
            elif isinstance(handler, EarlyStopHandler):
                handler._handler.load_state_dict(state)
                if handler._handler.counter >= handler._handler.patience:  # the run had already stopped early
                    logging.getLogger(__name__).info(f"resume: '{name}' had stopped the run; not training further")
                    handler._handler.trainer.terminate()
            elif isinstance(handler, Engine):
                handler.state.best_metric = state["best_metric"]
                handler.state.best_metric_epoch = state["best_metric_epoch"]
            else:
                handler.load_state_dict(state)


def checkpoint_progress(path: str | os.PathLike, engine_key: str = "trainer") -> tuple[int, int | None] | None:
    """``(iteration, epoch_length)`` of the engine state stored in a checkpoint, without reading its tensors.

    The file is opened with ``weights_only=True`` and ``mmap=True`` (tensor data is not read).

    Returns:
        ``None`` when the checkpoint has no ``engine_key`` entry.

    Raises:
        RuntimeError: when the file cannot be read with ``weights_only=True`` (damaged or unsafe); names the file.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise RuntimeError(f"cannot read checkpoint {path} with weights_only=True: {type(e).__name__}: {e}") from e
    state = ckpt.get(engine_key) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping) or "iteration" not in state:
        return None
    epoch_length = state.get("epoch_length")
    return int(state["iteration"]), (int(epoch_length) if epoch_length else None)


def find_last_checkpoint(
    checkpoint_dir: str | os.PathLike, engine_key: str = "trainer", epoch_boundary_only: bool = True
) -> Path | None:
    """The checkpoint in ``checkpoint_dir`` holding the most advanced trainer state, or ``None``.

    Candidates are the visible ``.pt``/``.pth``/``.ckpt`` files (temporary files of interrupted atomic writes are
    hidden ``.*.tmp`` files and never considered). The order is the stored trainer iteration (read cheaply with
    ``mmap``), then the epoch/iteration number in the file name, then the modification time. Files that cannot be
    read with ``weights_only=True`` are skipped with a warning naming them.

    Args:
        checkpoint_dir: folder written by the checkpoint saver; a missing folder gives ``None``.
        engine_key: key of the trainer state in the checkpoint (``save_dict`` key).
        epoch_boundary_only: skip checkpoints saved mid-epoch (e.g. the ``save_final`` checkpoint written when an
            exception stopped the run), because only epoch-boundary resumes reproduce an uninterrupted run exactly.

    Returns:
        the path, or ``None`` when there is no usable checkpoint.
    """
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    best: tuple[Any, ...] | None = None
    best_path: Path | None = None
    for p in folder.iterdir():
        if p.name.startswith(".") or p.suffix not in _CKPT_EXTENSIONS or not p.is_file():
            continue
        try:
            progress = checkpoint_progress(p, engine_key)
        except RuntimeError as e:
            warnings.warn(f"skipping checkpoint {p}: {e}", stacklevel=2)
            continue
        if progress is None:
            continue
        iteration, epoch_length = progress
        if epoch_boundary_only and epoch_length and iteration % epoch_length:
            continue
        m = re.search(r"(?:epoch|iteration)=(\d+)", p.name)
        key = (iteration, int(m.group(1)) if m else -1, p.stat().st_mtime_ns)
        if best is None or key > best:
            best, best_path = key, p
    return best_path


class LastCheckpointResume:
    """Resume a trainer from the newest checkpoint in a folder, at ``Events.STARTED``; start fresh when none.

    The file is chosen by :func:`find_last_checkpoint` and loaded by MONAI's ``CheckpointLoader`` (which uses
    ``torch.load(..., weights_only=True)``), restoring every object of ``load_dict`` (network, optimiser, scheduler,
    trainer state). Pair it with :class:`~monai_transfer.handlers.seeding.EpochSeed` for results identical to an
    uninterrupted run. Attach it before other ``STARTED`` handlers that depend on the restored state.

    Args:
        checkpoint_dir: the checkpoint saver's folder.
        load_dict: objects to restore, same keys as the saver's ``save_dict``.
        enabled: ``False`` makes the handler do nothing (the bundle's ``resume`` switch).
        engine_key: key of the trainer state in ``load_dict``.
        map_location: passed to ``CheckpointLoader``.
        strict: passed to ``CheckpointLoader``.

    Raises:
        ValueError: when ``load_dict`` is empty.
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike,
        load_dict: dict,
        enabled: bool = True,
        engine_key: str = "trainer",
        map_location: Any = None,
        strict: bool = True,
    ) -> None:
        if not load_dict:
            raise ValueError("load_dict must name the objects to restore (network, optimizer, ..., trainer).")
        self.checkpoint_dir = Path(checkpoint_dir)
        self.load_dict = load_dict
        self.enabled = bool(enabled)
        self.engine_key = engine_key
        self.map_location = map_location
        self.strict = strict
        self.loaded_path: Path | None = None
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Register on ``Events.STARTED``."""
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        """Load the last checkpoint into ``load_dict`` (and the engine), if enabled and one exists."""
        if not self.enabled:
            return
        path = find_last_checkpoint(self.checkpoint_dir, engine_key=self.engine_key)
        if path is None:
            self.logger.info(f"resume: no checkpoint in {self.checkpoint_dir}, starting from scratch")
            return
        load_dict = self.load_dict
        states = [k for k, v in load_dict.items() if isinstance(v, HandlerStates)]
        if states:  # a checkpoint written before HandlerStates was added still resumes, with a warning
            stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            absent = [k for k in states if k not in stored]
            if absent:
                warnings.warn(
                    f"resume: {path} holds no {absent}; the best-model saver and early stopping start afresh",
                    stacklevel=2,
                )
                load_dict = {k: v for k, v in load_dict.items() if k not in absent}
        CheckpointLoader(load_path=str(path), load_dict=load_dict, map_location=self.map_location, strict=self.strict)(
            engine
        )
        self.loaded_path = path
        self.logger.info(f"resume: restored {path} (epoch {engine.state.epoch}, iteration {engine.state.iteration})")
