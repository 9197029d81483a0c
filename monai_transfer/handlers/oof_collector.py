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
"""The out-of-fold predictions of every epoch of a cross-validation fold (:mod:`monai_transfer.cv`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from monai_transfer.handlers.report_writer import ids_from_output
from monai_transfer.metrics.cumulative import PredictionBuffer

__all__ = ["OOFCollector"]


class OOFCollector:
    """Record the evaluator's probabilities and labels after every trainer epoch (per-epoch fold validation), buffered
    in a :class:`~monai_transfer.metrics.PredictionBuffer` (this process only: cross-validation runs on one).

    Only evaluations run while the trainer is running are recorded (not the report run after training).

    Attributes:
        epochs: ``{trainer_epoch: (probs (N, K), labels (N,), ids)}``; an id is ``None`` when the case carries none.
    """

    def __init__(self) -> None:
        self.epochs: dict[int, tuple[np.ndarray, np.ndarray, list[str | None]]] = {}
        self._active = False
        self._trainer: Any = None
        self._buffer = PredictionBuffer(with_labels=True)

    def attach(self, trainer: Any, evaluator: Any) -> None:
        """Hook into ``trainer`` (start/stop) and ``evaluator`` (collect per epoch)."""
        from ignite.engine import Events

        self._trainer = trainer

        def _start(_: Any) -> None:
            self._active = True

        def _stop(_: Any) -> None:
            self._active = False

        def _collect(engine: Any) -> None:
            out = engine.state.output
            if self._active and out:
                ids = ids_from_output(out, getattr(engine.state, "batch", None))
                self._buffer.add([o["pred"] for o in out], [o["label"] for o in out], ids)

        def _done(_: Any) -> None:
            if self._active and len(self._buffer):
                probs, labels, ids = self._buffer.get_data(gather=False, name_missing=False)
                y = labels.numpy()
                y = y.argmax(1) if y.shape[1] > 1 else y[:, 0]
                self.epochs[int(self._trainer.state.epoch)] = (probs.double().numpy(), y.astype(np.int64), ids)

        trainer.add_event_handler(Events.STARTED, _start)
        trainer.add_event_handler(Events.COMPLETED, _stop)
        evaluator.add_event_handler(Events.EPOCH_STARTED, lambda _: self._buffer.reset())
        evaluator.add_event_handler(Events.ITERATION_COMPLETED, _collect)
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, _done)
