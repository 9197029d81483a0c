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
"""Helpers that bundle configs call around MONAI's engines: load the best model, describe a run for reports."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from monai_transfer.utils.io import load_state_dict_file

__all__ = ["load_best_model", "detach_handler", "run_final_evaluation", "run_description", "describe_datalists"]


def load_best_model(network: torch.nn.Module, path: str | os.PathLike, strict: bool = True) -> torch.nn.Module:
    """Load ``path`` (a state dict saved by the key-metric checkpoint saver) into ``network``, safely.

    Uses :func:`monai_transfer.utils.io.load_state_dict_file` (``weights_only=True`` or safetensors) and unwraps a
    DistributedDataParallel ``module``.

    Raises:
        FileNotFoundError: no model was saved (e.g. validation never ran); the message names the file.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"best model {path} not found: validation must run at least once (check val_interval and epochs)."
        )
    net = network.module if hasattr(network, "module") else network
    net.load_state_dict(load_state_dict_file(path), strict=strict)
    return network


def describe_datalists(datalists: Mapping[str, list[Mapping[str, Any]]]) -> dict[str, Any]:
    """Counts per split and class, for reports (multi-label: positives per label, in class order).

    When ``datalists`` comes from :func:`~monai_transfer.data.bundle_datalists`, the summary of its checks (DICOM
    patient ids, near-duplicates across splits; see :mod:`monai_transfer.audit`) is added under ``"audit"``.
    """
    out: dict[str, Any] = {}
    for split, items in datalists.items():
        if items and all(isinstance(x.get("label"), (list, tuple)) for x in items):  # multi-hot: not per combination
            pos = [sum(int(v == 1) for v in col) for col in zip(*(x["label"] for x in items))]
            out[split] = {"n": len(items), "positives_per_label": pos}
            continue
        counts: dict[str, int] = {}
        for x in items:
            key = str(x.get("class_name", x.get("label")))
            counts[key] = counts.get(key, 0) + 1
        out[split] = {"n": len(items), "per_class": dict(sorted(counts.items()))}
    audit = getattr(datalists, "audit", None)
    if audit:
        out["audit"] = dict(audit)
    return out


def detach_handler(engine: Any, handler: Any, event_name: Any = None) -> bool:
    """Remove ``handler`` from ``engine``'s ``event_name`` (default ``EPOCH_COMPLETED``) when it is attached there.

    E.g. the early-stopping handler leaves the evaluator before its final report run. A handler that is not attached
    is left alone.

    Args:
        engine: an Ignite engine (MONAI trainer or evaluator).
        handler: the callable attached with ``engine.add_event_handler`` (e.g. ``EarlyStopHandler``).
        event_name: the event; ``None`` means ``Events.EPOCH_COMPLETED``.

    Returns:
        whether the handler was attached (and so removed).

    Example::

        {"_target_": "monai_transfer.engines.workflow.detach_handler", "engine": "@validate#evaluator",
         "handler": "@validate#early_stop"}
    """
    from ignite.engine import Events

    event_name = Events.EPOCH_COMPLETED if event_name is None else event_name
    if not engine.has_event_handler(handler, event_name):
        return False
    engine.remove_event_handler(handler, event_name)
    return True


def _tensorboard_stats_handlers(engine: Any) -> list[Any]:
    """The MONAI ``TensorBoardStatsHandler`` instances attached to ``engine``'s ``EPOCH_COMPLETED``."""
    from ignite.engine import Events
    from monai.handlers import TensorBoardStatsHandler

    found = []
    for entry in getattr(engine, "_event_handlers", {}).get(Events.EPOCH_COMPLETED, []):
        func = entry[0]
        owner = getattr(func, "__self__", None) or getattr(getattr(func, "__wrapped__", None), "__self__", None)
        if isinstance(owner, TensorBoardStatsHandler) and owner not in found:
            found.append(owner)
    return found


def run_final_evaluation(evaluator: Any, tag_prefix: str = "best_model/") -> Any:
    """Run ``evaluator`` once more after training (the report of the best model), keeping TensorBoard's curves intact.

    A plain ``evaluator.run()`` starts at global epoch 1, so MONAI's ``TensorBoardStatsHandler`` would write every
    ``val_*`` scalar at step 1 after the last epoch's, and the validation curves would jump back. Here its scalars
    go under ``tag_prefix`` (``best_model/val_auc``, ...) at the epoch the best model comes from
    (``evaluator.state.best_metric_epoch``; the last validated epoch when there is none), as one point per tag beside
    the curves. Other handlers (report writer, console stats) run as usual.

    Args:
        evaluator: the bundle's validation evaluator (``@validate#evaluator``), after training.
        tag_prefix: prefix of the TensorBoard tags of this run.

    Returns:
        the evaluator's state after the run.

    Example::

        "$monai_transfer.engines.workflow.run_final_evaluation(@validate#evaluator)"
    """
    from monai.utils import is_scalar

    step = int(getattr(evaluator.state, "best_metric_epoch", -1) or -1)
    if step < 1:
        step = max(1, int(getattr(evaluator.state, "epoch", 1) or 1))

    def write_best(engine: Any, writer: Any) -> None:
        for name, value in engine.state.metrics.items():
            if is_scalar(value):
                writer.add_scalar(f"{tag_prefix}{name}", float(torch.as_tensor(value).item()), step)
        writer.flush()

    handlers = _tensorboard_stats_handlers(evaluator)
    saved = [h.epoch_event_writer for h in handlers]
    for h in handlers:
        h.epoch_event_writer = write_best
    try:
        evaluator.run()
    finally:
        for h, w in zip(handlers, saved):
            h.epoch_event_writer = w
    return evaluator.state


def run_description(
    network: torch.nn.Module | None = None,
    dataset_dir: str | os.PathLike | None = None,
    datalists: Mapping[str, list[Mapping[str, Any]]] | None = None,
    split: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A JSON-friendly description of a run for ``metrics.json``: weight source/hash/licence, data, split, versions.

    Args:
        network: the model; its ``weights_info`` and ``backbone_cfg`` are recorded when present.
        dataset_dir: data source setting; default ``config["dataset_dir"]`` when ``config`` has one.
        datalists: the split lists; counts per class are recorded.
        split: which split the report is about.
        config: the settings of the run (the bundles pass ``run_values``: backbone, epochs, ...).
    """
    import monai

    net = getattr(network, "module", network)
    if dataset_dir is None and config is not None:
        dataset_dir = config.get("dataset_dir")
    desc: dict[str, Any] = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "split": split,
        "dataset_dir": str(dataset_dir) if dataset_dir is not None else None,
        "data": describe_datalists(datalists) if datalists is not None else None,
        "config": dict(config) if config is not None else None,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "monai": monai.__version__,
            "monai_transfer": __import__("monai_transfer").__version__,
        },
    }
    if net is not None:
        info = getattr(net, "weights_info", None)
        if info is not None:
            desc["weights"] = dict(info)
        cfg = getattr(net, "backbone_cfg", None)
        if cfg is not None and hasattr(cfg, "to_dict"):
            desc["backbone"] = cfg.to_dict()
    return desc
