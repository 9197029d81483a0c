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
"""The bundle side of ``python -m monai_transfer.evaluate``: its ``inference.json`` components, weights and network.

From ``configs/inference.json`` (and ``configs/metadata.json``) the evaluation builds:

- ``network_def`` with the checkpoint loaded by :func:`monai_transfer.handlers.model_loader.load_verified_model` (the
  loader of the bundle's own ``VerifiedCheckpointLoader``); a ``ProbabilityEnsemble`` ``network_def`` with a
  combined ensemble checkpoint is served the same way;
- ``inferer`` (default ``SimpleInferer``; ``TTAInferer`` when the bundle's ``use_tta`` is true) and ``postprocessing``
  (the temperature of ``calibration.json`` and the activation; default a softmax), applied per case as the bundle's
  evaluator does;
- 2D bundles: ``preprocessing``; volume bundles: ``volume_preprocessing``, ``slicing`` and ``aggregation``, followed
  by the Platt step of the pooled probabilities that ``calibration.json`` holds for that pooling
  (:mod:`monai_transfer.metrics.volume_calibration`), when the bundle applies its temperature.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from monai_transfer.data.volumes import AGGREGATION_METHODS, aggregate_volume_probs
from monai_transfer.evaluate.cases import EvaluationUsageError, _display
from monai_transfer.utils.bundle import parsed_content
from monai_transfer.utils.task import Task, derive_task

__all__ = ["Bundle", "load_bundle", "load_network", "resolve_aggregation", "calibration_info", "parsed"]

_DEFAULT_TOPK = 3


def resolve_aggregation(spec: Any, k_default: int | None = None) -> tuple[Callable[[torch.Tensor], Any], str]:
    """Turn the bundle's ``aggregation`` into ``(fn(probs) -> (K,), description)``."""
    k = _DEFAULT_TOPK if k_default is None else int(k_default)
    if isinstance(spec, str):
        method, _, k_text = spec.partition(":")
        if k_text:
            k = int(k_text)
        method = method.strip()
        if method not in AGGREGATION_METHODS:
            raise EvaluationUsageError(f"bundle 'aggregation' must be one of {AGGREGATION_METHODS}, got {spec!r}")
        desc = f"{method}(k={k})" if method == "topk_mean" else method

        def pool(p: torch.Tensor) -> Any:
            return aggregate_volume_probs(p, method=method, k=k)

        pool.method, pool.k = method, k  # type: ignore[attr-defined]  # which volume Platt step fits it
        return pool, desc
    if isinstance(spec, dict):
        method = spec.get("method", spec.get("mode", "mean"))
        k = int(spec.get("k", spec.get("topk", k)))
        return resolve_aggregation(f"{method}:{k}")
    if callable(spec):
        return spec, getattr(spec, "__name__", type(spec).__name__)
    raise EvaluationUsageError(
        f"bundle 'aggregation' must be a method name {AGGREGATION_METHODS}, a dict or a callable, got {spec!r}"
    )


@dataclass
class Bundle:
    """The components of a bundle's ``inference.json`` that the evaluation runs."""

    root: Path
    parser: Any
    kind: str  # "volume" or "2d"
    class_names: list[str]
    version: str | None
    inferer: Callable = None  # type: ignore[assignment]
    postprocessing: Callable = None  # type: ignore[assignment]
    preprocessing: Callable | None = None
    volume_preprocessing: Callable | None = None
    slicing: Callable | None = None
    aggregate: Callable[[torch.Tensor], Any] | None = None
    aggregation_desc: str = ""
    volume_platt: Any = None  # VolumePlatt applied after ``aggregate`` (already composed into it), or None
    mode: str = "binary"  # "binary", "multiclass" or "multilabel" (sigmoid postprocessing, 0/1 label vectors)

    @property
    def task(self) -> Task:
        """The :class:`~monai_transfer.utils.task.Task` of ``mode`` and ``class_names``."""
        return Task(self.mode, self.class_names)


def parsed(parser: Any, key: str, root: Path) -> Any:
    """``parser.get_parsed_content(key)``; a failure (a bad override such as ``--num_members 0``, an invalid
    ``calibration.json``, ...) becomes an :class:`EvaluationUsageError` naming the bundle, the id, the cause and the
    bundle overrides given on the command line, instead of MONAI's instantiation traceback
    (:func:`~monai_transfer.utils.bundle.parsed_content`).
    """
    given = getattr(parser, "monai_transfer_overrides", None)
    where = f"bundle {_display(str(root))} (configs/inference.json)"
    return parsed_content(parser, key, where, EvaluationUsageError, given)


def _read_bundle_json(path: Path) -> Any:
    """The content of a bundle config file; raises a usage error naming the file (and the position of a JSON error)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EvaluationUsageError(
            f"bundle config {_display(str(path))} is not valid JSON: {e} (a truncated or hand-edited file?)"
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise EvaluationUsageError(f"bundle config {_display(str(path))}: cannot read the file ({e})") from e


def _read_parser(root: Path, overrides: dict[str, Any] | None, soft: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The ``ConfigParser`` of ``root/configs/inference.json`` (with metadata and ``overrides``) and the metadata."""
    from monai.bundle import ConfigParser

    config = root / "configs" / "inference.json"
    if not root.is_dir():
        raise EvaluationUsageError(f"--bundle {root}: no such folder")
    if not config.is_file():
        raise EvaluationUsageError(f"--bundle {root}: no configs/inference.json in this folder")
    _read_bundle_json(config)  # a truncated/invalid file: a message with the position, not MONAI's traceback
    parser = ConfigParser()
    parser.read_config(str(config))
    meta_file = root / "configs" / "metadata.json"
    meta: dict[str, Any] = {}
    if meta_file.is_file():
        meta = _read_bundle_json(meta_file)
        parser.read_meta(str(meta_file))
    parser["bundle_root"] = str(root.resolve())
    for key, value in (overrides or {}).items():
        if key != "bundle_root" and key not in parser:
            raise EvaluationUsageError(f"bundle override --{key}: {config} has no id '{key}'")
        parser[key] = value
    parser.monai_transfer_overrides = dict(overrides or {})  # named by the errors of ``parsed``
    for key, value in soft.items():  # set only where the bundle has the id
        if key in parser:
            parser[key] = value
    if "imports" in parser:
        parsed(parser, "imports", root)
    return parser, meta


def _class_names(parser: Any, meta: dict[str, Any], root: Path) -> list[str]:
    """``class_names`` of inference.json, else the ``pred`` channel_def of metadata.json."""
    if "class_names" in parser:
        names = [str(c) for c in parsed(parser, "class_names", root)]
    else:
        try:
            cdef = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
        except (KeyError, TypeError) as e:
            raise EvaluationUsageError(
                f"bundle {root}: neither 'class_names' in inference.json nor a 'pred' channel_def in metadata.json"
            ) from e
        names = [str(cdef[k]) for k in sorted(cdef, key=int)]
    if len(names) < 2:
        raise EvaluationUsageError(f"bundle {root}: needs at least 2 class names, got {names}")
    return names


def _mode(parser: Any, class_names: list[str], root: Path) -> str:
    """The bundle's ``mode`` id, else binary for 2 classes and multi-class for more
    (:func:`~monai_transfer.utils.task.derive_task`)."""
    mode = parsed(parser, "mode", root) if "mode" in parser else None
    try:
        return derive_task(mode, class_names=class_names).mode.value
    except ValueError as e:  # the message names the value and lists the valid ones
        raise EvaluationUsageError(f"bundle {root}: {e}") from e


def _component(parser: Any, key: str, root: Path) -> Callable:
    """A transform id of the config; a list becomes a ``Compose``."""
    from monai.transforms import Compose

    obj = parsed(parser, key, root)
    return Compose(obj) if isinstance(obj, (list, tuple)) else obj


def _inference_components(b: Bundle) -> None:
    """The bundle's ``inferer`` and ``postprocessing``; where it has none, ``SimpleInferer`` and the task's activation
    (softmax; sigmoid for a multi-label ``mode``)."""
    from monai.inferers import SimpleInferer
    from monai.transforms import Activationsd

    p = b.parser
    b.inferer = parsed(p, "inferer", b.root) if "inferer" in p else SimpleInferer()
    act = b.task.activation
    default = Activationsd("pred", softmax=act == "softmax", sigmoid=act == "sigmoid")
    b.postprocessing = _component(p, "postprocessing", b.root) if "postprocessing" in p else default


def load_bundle(
    bundle: str | Path, overrides: dict[str, Any] | None = None, soft: dict[str, Any] | None = None
) -> Bundle:
    """Read ``bundle/configs/inference.json`` and build the components the evaluation runs (see the module doc).

    Args:
        bundle: the bundle folder.
        overrides: ``{id: value}``; an id the config lacks is an error.
        soft: ``{id: value}`` set only where the config has the id (e.g. ``ckpt_path`` from ``--ckpt``).

    Raises:
        EvaluationUsageError: missing/invalid config, unknown override, missing ids.
    """
    root = Path(bundle)
    parser, meta = _read_parser(root, overrides, soft or {})
    b = Bundle(root, parser, "2d", _class_names(parser, meta, root), meta.get("version"))
    b.mode = _mode(parser, b.class_names, root)
    if "volume_preprocessing" in parser:
        missing = [i for i in ("slicing", "aggregation") if i not in parser]
        if missing:
            raise EvaluationUsageError(f"bundle {root}: has 'volume_preprocessing' but no {missing} in inference.json")
        b.kind = "volume"
        b.volume_preprocessing = _component(parser, "volume_preprocessing", root)
        b.slicing = _component(parser, "slicing", root)
        if hasattr(b.slicing, "set_random_state"):  # random slice strategies: same slices at every run
            b.slicing.set_random_state(seed=0)
        k = parsed(parser, "aggregation_k", root) if "aggregation_k" in parser else None
        try:
            b.aggregate, b.aggregation_desc = resolve_aggregation(parsed(parser, "aggregation", root), k)
        except (TypeError, ValueError) as e:
            raise EvaluationUsageError(f"bundle {root}: 'aggregation'/'aggregation_k': {e}") from e
    elif "preprocessing" in parser:
        b.preprocessing = _component(parser, "preprocessing", root)
    else:
        raise EvaluationUsageError(
            f"bundle {root}: inference.json defines neither 'preprocessing' (2D) nor 'volume_preprocessing' (volumes)"
        )
    if "network_def" not in parser:
        raise EvaluationUsageError(f"bundle {root}: inference.json has no 'network_def'")
    _inference_components(b)
    if b.kind == "volume":
        _attach_volume_platt(b)
    return b


def _temperature_transforms(b: Bundle) -> list[Any]:
    from monai_transfer.transforms import ApplyTemperatured

    return [t for t in getattr(b.postprocessing, "transforms", [b.postprocessing]) if isinstance(t, ApplyTemperatured)]


def _attach_volume_platt(b: Bundle) -> None:
    """Compose the ``calibration.json``'s Platt step for the bundle's pooling into ``b.aggregate`` (binary bundles
    whose postprocessing applies that file's temperature; none for ``--calibration none``).

    Raises:
        EvaluationUsageError: an invalid ``volume_platt`` entry (the message names the file).
    """
    from monai_transfer.metrics.volume_calibration import load_volume_platt

    method = getattr(b.aggregate, "method", None)
    path = parsed(b.parser, "calibration_path", b.root) if "calibration_path" in b.parser else None
    if method is None or path is None or not b.task.is_binary or not _temperature_transforms(b):
        return
    try:
        platt = load_volume_platt(str(path), method, b.aggregate.k, where=f"bundle {_display(str(b.root))}")  # type: ignore[union-attr]
    except ValueError as e:
        raise EvaluationUsageError(str(e)) from e
    if platt is not None:
        pool = b.aggregate
        b.aggregate, b.volume_platt = (lambda p: platt(pool(p))), platt  # type: ignore[misc]


def _expected_spec(b: Bundle) -> dict[str, Any]:
    """What the weights record beside the checkpoint must agree with (class names, image size, ...)."""
    if "model_spec" in b.parser:
        return dict(parsed(b.parser, "model_spec", b.root))
    expected: dict[str, Any] = {"class_names": list(b.class_names), "num_classes": len(b.class_names)}
    for key in ("backbone", "image_size"):
        if key in b.parser:
            expected[key] = parsed(b.parser, key, b.root)
    return expected


def _preprocessing(b: Bundle) -> Callable:
    """``{"image": path}`` -> network input(s): ``preprocessing``, or volume loading then slicing."""
    if b.kind != "volume":
        return b.preprocessing  # type: ignore[return-value]
    return lambda d: b.slicing(b.volume_preprocessing(d))  # type: ignore[misc]


def _check_finite_weights(net: torch.nn.Module, ckpt: Path) -> None:
    bad = []
    for key, value in net.state_dict().items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            n_nan = int(torch.isnan(value).sum())
            bad.append(f"{key} ({n_nan} NaN, {int((~torch.isfinite(value)).sum()) - n_nan} inf)")
    if bad:
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise EvaluationUsageError(
            f"checkpoint {ckpt} holds non-finite weights in {len(bad)} tensor(s): {shown}; training diverged, "
            "evaluate an earlier checkpoint"
        )


def load_network(b: Bundle, ckpt: Path, device: torch.device) -> torch.nn.Module:
    """``network_def`` with ``ckpt`` loaded by the bundle's verified loader, in eval mode on ``device``.

    Raises:
        EvaluationUsageError: not a module, a weights record that disagrees with the bundle, weights that do not fit,
            or non-finite weights.
    """
    from monai_transfer.handlers.model_loader import load_verified_model
    from monai_transfer.networks.checkpoint_record import CheckpointConfigMismatchError

    net = parsed(b.parser, "network_def", b.root)
    if not isinstance(net, torch.nn.Module):
        raise EvaluationUsageError(f"bundle {b.root}: 'network_def' is not a torch module ({type(net).__name__})")
    try:
        load_verified_model(
            net, ckpt, _expected_spec(b), "cpu", strict=True, source=f"bundle {b.root}", preprocessing=_preprocessing(b)
        )
    except (CheckpointConfigMismatchError, ValueError) as e:
        raise EvaluationUsageError(str(e)) from e
    except (OSError, RuntimeError) as e:
        raise EvaluationUsageError(f"checkpoint {ckpt} does not fit the bundle's network_def: {e}") from e
    _check_finite_weights(net, ckpt)
    return net.to(device).eval()


def calibration_info(b: Bundle) -> dict[str, Any]:
    """The temperature the bundle's postprocessing applies, its file and, for volume bundles, the Platt step of the
    pooled probabilities (``volume_platt``; for the report).

    The file is also read here with :func:`~monai_transfer.metrics.calibration.load_calibration` and the bundle's task,
    so a calibration fitted for another task (e.g. multi-label on a binary bundle) is refused even where the bundle's
    ``ApplyTemperatured`` does not pass its ``mode``.

    Raises:
        EvaluationUsageError: an invalid calibration file, or one fitted for another task; the message names it.
    """
    from monai_transfer.metrics.calibration import load_calibration

    path = parsed(b.parser, "calibration_path", b.root) if "calibration_path" in b.parser else None
    ts = _temperature_transforms(b)
    temperature = ts[0].t.temperature if ts else None
    applied = bool(ts) and path is not None and Path(str(path)).is_file()
    if applied:
        try:
            load_calibration(str(path), b.mode)
        except ValueError as e:
            raise EvaluationUsageError(str(e)) from e
    out = {"file": None if path is None else _display(str(path)), "temperature": temperature, "applied": applied}
    if b.kind == "volume":
        out["volume_platt"] = None if b.volume_platt is None else b.volume_platt.to_dict()
    return out
