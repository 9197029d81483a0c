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
"""What the shipped bundles' configs instantiate so that each of them says a thing once.

- :func:`run_settings` (``run_values``): this run's value of every setting of the bundle, derived from the config
  itself (the top-level ids its ``train.json`` sets to a plain value), never an id list kept by hand. The run folder
  (``export_run_bundle``), the report's ``meta.config`` and the cross-validation folds all take this one dict.
- :func:`cross_validate` (``train_cv.json``): ``run_cross_validation`` with its options read from the config's
  ``cv_*`` ids and every setting of the run forwarded to the folds.
- :func:`start_run` (``initialize``) and :func:`train_and_report` (``train#run``): the start and the training run that
  ``train.json`` and ``multi_gpu_train.json`` of both bundles share: output folder check and seeding; early stopping,
  resume from the last epoch checkpoint, epoch checkpoints, training, then the report of the best model (on the main
  rank only under ``torchrun``).
- :func:`local_rank_device`: ``multi_gpu_train.json``'s ``device``.
- :func:`cached_dataset`: the training and validation datasets of both bundles
  (``monai_transfer.data.cache.build_dataset`` with the config's ``cache``, ``cache_dir`` and ``num_workers``).

MONAI hands a component only its keyword arguments, never the parser. The helpers that read the config
(:func:`run_settings`, :func:`cross_validate`) take the parser that is resolving them from the call stack
(:func:`current_parser`), or an explicit ``parser=``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monai.bundle import ConfigParser

__all__ = [
    "RESERVED_IDS",
    "INVOCATION_IDS",
    "current_parser",
    "setting_ids",
    "run_settings",
    "cross_validate",
    "start_run",
    "train_and_report",
    "local_rank_device",
    "cached_dataset",
]

#: top-level ids of a MONAI bundle config that are never settings: MONAI's metadata, the bundle's location and the
#: workflow steps.
RESERVED_IDS = ("_meta_", "bundle_root", "imports", "initialize", "run", "finalize")
#: the bundles' settings that switch one invocation rather than describe the run: a run folder's configs do not keep
#: ``--resume true`` (re-running them would resume from the finished run) nor how many samples were exported.
INVOCATION_IDS = ("resume", "export_samples")


def current_parser() -> ConfigParser:
    """The ``monai.bundle.ConfigParser`` resolving the component that calls this function.

    MONAI instantiates a ``_target_`` component from inside ``ConfigParser.get_parsed_content``; the innermost such
    call on the stack is the parser of the component being built (a cross-validation fold's parser, not the outer
    ``train_cv.json`` one, when both are on the stack).

    Raises:
        RuntimeError: when no ``ConfigParser`` is resolving a config on this thread (the helper was called from
            plain Python: pass ``parser=``).
    """
    from monai.bundle import ConfigParser

    frame = sys._getframe(1)
    while frame is not None:
        obj = frame.f_locals.get("self")
        if isinstance(obj, ConfigParser):
            return obj
        frame = frame.f_back
    raise RuntimeError(
        "no monai.bundle.ConfigParser is resolving a config here: call this from a bundle config component, or pass "
        "parser=<the ConfigParser>"
    )


def _is_plain(value: Any) -> bool:
    """A JSON value that is a setting: a scalar or a list of them, not an expression, reference, macro or component."""
    if isinstance(value, str):
        return not value.startswith(("$", "@", "%"))
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float))


def setting_ids(config: Mapping[str, Any]) -> list[str]:
    """The top-level ids that ``config`` sets to a plain value (``"epochs": 6``, ``"class_names": [...]``), in order.

    Expressions (``$``), references (``@``), macros (``%``), components and sections (dicts) and MONAI's reserved ids
    (:data:`RESERVED_IDS`) are not settings.
    """
    return [k for k, v in config.items() if k not in RESERVED_IDS and _is_plain(v)]


def _template_config(parser: ConfigParser, config_file: str | os.PathLike | None) -> tuple[Path, dict[str, Any]]:
    from monai.bundle import ConfigParser

    if config_file is None:
        config_file = Path(str(parser.get_parsed_content("bundle_root"))) / "configs" / "train.json"
    path = Path(config_file)
    if not path.is_file():
        raise FileNotFoundError(
            f"run settings: the bundle's training config {path} does not exist (it names the bundle's settings); "
            "check bundle_root or pass config_file="
        )
    return path, ConfigParser.load_config_file(str(path))


def run_settings(
    derived: Iterable[str] = (),
    skip: Iterable[str] = INVOCATION_IDS,
    extra: Mapping[str, Any] | None = None,
    config_file: str | os.PathLike | None = None,
    parser: ConfigParser | None = None,
) -> dict[str, Any]:
    """This run's value of every setting of the bundle (the ``run_values`` of the bundles' ``train.json``).

    The settings are the top-level ids that the bundle's training config sets to a plain value
    (:func:`setting_ids` of ``<bundle_root>/configs/train.json``), so a new setting needs no other list. The values
    are the parser's: command-line overrides included, in the config's order. The template file, not the parser,
    says which ids are settings: an override such as ``--device cpu`` or ``--output_dir DIR`` turns an expression
    into a plain value without making it a setting.

    Args:
        derived: ids computed by an expression whose evaluated value the run fixes (e.g. ``mode``, decided from the
            training labels, or ``dataset_dir``, which would otherwise follow ``bundle_root`` into the run folder).
        skip: settings that are switches of one invocation, not of the run; default :data:`INVOCATION_IDS`.
        extra: further values under names of their own (e.g. the names ``inference.json`` uses for a training
            setting: ``{"num_slices": "@val_slices"}``).
        config_file: the training config that names the settings; default ``<bundle_root>/configs/train.json``.
        parser: the config's parser; default the one resolving this component (:func:`current_parser`).

    Returns:
        ``{id: value}``.

    Raises:
        FileNotFoundError: when the training config does not exist.
        KeyError: when a setting or ``derived`` id is not in the parsed config (named with the file).
    """
    parser = current_parser() if parser is None else parser
    path, template = _template_config(parser, config_file)
    derived, skip, settings = list(derived), set(skip), set(setting_ids(template))
    ids = [k for k in template if k in settings or k in derived]
    ids += [k for k in derived if k not in ids]
    missing = [k for k in ids if k not in parser]
    if missing:
        raise KeyError(f"run settings: {missing} (settings or derived ids of {path}) are not in the parsed config")
    values = {k: parser.get_parsed_content(k) for k in ids if k not in skip}
    values.update(extra or {})
    return values


def cross_validate(
    settings: Mapping[str, Any],
    device: Any = None,
    output_dir: str | os.PathLike | None = None,
    prefix: str = "cv_",
    parser: ConfigParser | None = None,
) -> dict[str, Any]:
    """``train_cv.json``'s run: :func:`monai_transfer.cv.run.run_cross_validation` from the config's own ids.

    Its arguments are the config's ids named ``<prefix><argument>`` (``cv_folds`` -> ``folds``, ``cv_config_file`` ->
    ``config_file``, ...; components are not read), and every setting of the run is forwarded to the folds and the
    final fit, except those the cross-validation sets itself (``cv_threshold_method`` wins over the single run's
    ``threshold_method``, ``cv_calibrate`` over ``calibrate``).

    Args:
        settings: the run's settings (``@run_values``, :func:`run_settings`).
        device: forwarded as the ``device`` override (``@device``).
        output_dir: the run folder.
        prefix: prefix of the cross-validation ids.
        parser: the config's parser; default the one resolving this component.

    Returns:
        the ``cv.json`` content.

    Raises:
        KeyError: when the config has no ``<prefix>config_file`` id.
    """
    from monai_transfer.cv.run import run_cross_validation

    parser = current_parser() if parser is None else parser
    root = parser.get()
    options = {
        k[len(prefix) :]: parser.get_parsed_content(k)
        for k, v in root.items()
        if k.startswith(prefix) and not isinstance(v, dict)
    }
    if "config_file" not in options:
        raise KeyError(f"cross-validation: the config has no '{prefix}config_file' id (the train.json the folds run)")
    config_file = options.pop("config_file")
    overrides = {k: v for k, v in settings.items() if k not in options}
    if device is not None:
        overrides["device"] = device
    return run_cross_validation(config_file, output_dir=output_dir, **options, **overrides)


def start_run(output_dir: str | os.PathLike, seed: int, device: Any = None) -> int:
    """The first step of every training config: check ``output_dir``, seed everything, set the CUDA speed-ups.

    :func:`monai_transfer.utils.io.check_output_dir`, then
    :func:`monai_transfer.engines.utils.set_run_determinism`, then
    :func:`monai_transfer.engines.utils.configure_cuda_speedups` (nothing on CPU).

    Returns:
        the seed.
    """
    from monai_transfer.engines.utils import configure_cuda_speedups, set_run_determinism
    from monai_transfer.utils.io import check_output_dir

    check_output_dir(output_dir)
    seed = set_run_determinism(seed)
    if device is not None:
        configure_cuda_speedups(device)
    return seed


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _attach_last_checkpoint(
    trainer: Any, ckpt_dir: str | os.PathLike, lr_scheduler: Any, handler_states: Any, resume: bool, main_rank: bool
) -> None:
    """Resume from (``resume``) and save every epoch to ``<ckpt_dir>/last`` the trainer's checkpoint
    ``{network, optimizer, lr_scheduler, trainer, handler_states}``; the saver is attached on the main rank."""
    from monai_transfer.handlers.checkpoint import AtomicCheckpointSaver, LastCheckpointResume

    checkpoint = {"network": trainer.network, "optimizer": trainer.optimizer}
    checkpoint.update(lr_scheduler=lr_scheduler, trainer=trainer, handler_states=handler_states)
    checkpoint = {k: v for k, v in checkpoint.items() if v is not None}
    last = os.path.join(str(ckpt_dir), "last")
    LastCheckpointResume(last, checkpoint, enabled=bool(resume)).attach(trainer)
    # built on every rank, attached on the main rank only: ignite's Checkpoint asks ``idist`` for the rank, which under
    # torchrun creates a process group, a collective call that every rank must make
    saver = AtomicCheckpointSaver(save_dir=last, save_dict=checkpoint, save_interval=1, n_saved=1, epoch_level=True)
    if main_rank:
        saver.attach(trainer)


def train_and_report(
    trainer: Any,
    evaluator: Any,
    report_writer: Any,
    ckpt_dir: str | os.PathLike,
    lr_scheduler: Any = None,
    handler_states: Any = None,
    resume: bool = False,
    early_stop: Any = None,
    early_stop_patience: int = 0,
    report_evaluator: Any = None,
    best_model: str = "model.pt",
) -> None:
    """Train, then write the report of the best model: the ``run`` of the bundles' ``train.json`` (``train#run``).

    In order: ``early_stop`` is wired to the trainer and attached to ``evaluator`` when ``early_stop_patience > 0``;
    a :class:`~monai_transfer.handlers.checkpoint.LastCheckpointResume` (``resume``) and, on the main rank, an
    :class:`~monai_transfer.handlers.checkpoint.AtomicCheckpointSaver` of every epoch (one kept) share the checkpoint
    ``{network, optimizer, lr_scheduler, trainer, handler_states}`` in ``<ckpt_dir>/last``; the trainer runs (then all
    ranks meet under ``torchrun``); ``early_stop`` leaves the evaluator; on the main rank the best model
    (``<ckpt_dir>/<best_model>``, written by the best-model saver) is loaded and ``report_writer`` writes the report
    of one ``report_evaluator`` pass (default ``evaluator``; ``multi_gpu_train.json`` passes its unsharded rank-0
    evaluator).

    Args:
        trainer: the MONAI trainer (its ``network`` and ``optimizer`` go into the checkpoint).
        evaluator: the validation evaluator.
        report_writer: the handler that writes the report (``ClassificationReportWriter``).
        ckpt_dir: the models folder.
        lr_scheduler: checkpointed with the trainer.
        handler_states: the :class:`~monai_transfer.handlers.checkpoint.HandlerStates` checkpointed with it.
        resume: continue from the newest checkpoint in ``<ckpt_dir>/last``.
        early_stop: MONAI ``EarlyStopHandler`` (kept in ``handler_states`` even when off).
        early_stop_patience: 0 leaves early stopping off.
        report_evaluator: the evaluator of the report pass; default ``evaluator``.
        best_model: the best model's file name in ``ckpt_dir``.
    """
    import torch.distributed as dist
    from ignite.engine import Events

    from monai_transfer.engines.workflow import detach_handler, load_best_model, run_final_evaluation

    distributed = _distributed()
    main_rank = not distributed or dist.get_rank() == 0
    stopping = early_stop is not None and int(early_stop_patience) > 0
    if stopping:
        early_stop.set_trainer(trainer)
        early_stop.attach(evaluator)
    _attach_last_checkpoint(trainer, ckpt_dir, lr_scheduler, handler_states, resume, main_rank)
    trainer.run()
    if distributed:
        dist.barrier()
    if stopping:
        detach_handler(evaluator, early_stop, Events.EPOCH_COMPLETED)
    if not main_rank:
        return
    load_best_model(trainer.network, os.path.join(str(ckpt_dir), best_model))
    report = evaluator if report_evaluator is None else report_evaluator
    report_writer.attach(report)
    run_final_evaluation(report)


def local_rank_device() -> Any:
    """``torch.device("cuda:<LOCAL_RANK>")`` under ``torchrun`` on GPUs, else ``"cpu"`` (``multi_gpu_train.json``)."""
    import torch

    if torch.cuda.is_available():
        return torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    return "cpu"


def cached_dataset(
    data: Any,
    transform: Any,
    cache: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | str | None = None,
    progress: bool | None = None,
    track_meta: bool = True,
    batch_normalise: bool = False,
    parser: ConfigParser | None = None,
) -> Any:
    """The bundles' ``train#dataset`` and ``validate#dataset``: :func:`monai_transfer.data.cache.build_dataset`.

    ``cache``, ``cache_dir`` and ``num_workers`` default to the config's ids of those names (``"auto"``, ``None``
    and ``"auto"`` when the config has none), so the two datasets of a config say only their data and transform and
    a new cache setting is one top-level id. The progress bar of the first pass shows on the main rank only.
    ``track_meta=False`` runs the random transforms without metadata tracking (faster; only where no random
    transform reads metadata: xray's ``train#dataset``). ``batch_normalise=True`` keeps the items grey and normalises
    each batch in the training process (``build_dataset``'s ``batch_normalise``; the dataset must be read through
    ``build_dataloader``: xray's ``train#dataset``).

    Example::

        "dataset": {"_target_": "monai_transfer.bundle_components.cached_dataset",
                    "data": "$@datalists['train']", "transform": "@train#preprocessing"}
    """
    from monai_transfer.data.cache import build_dataset

    parser = current_parser() if parser is None else parser
    root = parser.get()

    def setting(name: str, given: Any, default: Any) -> Any:
        if given is not None:
            return given
        return parser.get_parsed_content(name) if name in root else default

    if progress is None:
        progress = int(os.environ.get("RANK", "0")) == 0
    return build_dataset(
        data,
        transform,
        cache=setting("cache", cache, "auto"),
        cache_dir=setting("cache_dir", cache_dir, None),
        num_workers=setting("num_workers", num_workers, "auto"),
        progress=progress,
        track_meta=track_meta,
        batch_normalise=batch_normalise,
    )
