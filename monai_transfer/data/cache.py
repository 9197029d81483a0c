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
"""Datasets that cache the deterministic preprocessing in RAM, on disk or not at all, and their data loaders.

:func:`build_dataset` is the one factory of the bundles' training and validation datasets (the bundles' ``cache``
and ``cache_dir`` ids, through ``monai_transfer.bundle_components.cached_dataset``):

- ``"ram"``: every item's deterministic preprocessing (the transforms before the first random one, as MONAI's
  ``CacheDataset``) is kept in memory (:class:`RAMCachedDataset`);
- ``"disk"``: it is written once to ``<cache_dir>/<preprocessing key>/<item key>.item`` and read back each epoch
  (:class:`DiskCachedDataset`); memory stays flat in the number of images. The preprocessing key is the SHA-256 of a
  description of the cached transforms (:func:`describe_transforms`: class names and settings, so a change of image
  size, intensity scaling or loader options never reuses stale items); the item key hashes the item's entries and the
  size and modification time of each file it names;
- ``"none"``: MONAI's plain ``Dataset`` (every epoch preprocesses every item again);
- ``"auto"``: preprocesses the first items, multiplies their size by the number of items and uses ``"ram"`` when
  that fits in a fraction of the available memory (``/proc/meminfo``; shared among the ``torchrun`` ranks of the
  node), else ``"disk"``. The choice and its numbers are logged.

Cached images are stored compactly where that is exact: a floating image whose values are ``q / k`` for integers
``0 <= q <= 255`` and one ``k`` (an 8-bit source scaled to [0, 1], e.g. by ``ScaleIntensityd``, before any
interpolation) is kept as ``uint8`` and restored bit for bit (checked when stored); any other array is kept as it is.
The cache keeps each image's metadata (``filename_or_obj`` and the other entries) but not its list of applied
operations (nothing in training inverts the preprocessing).

The first pass over the data (filling the cache) runs in ``num_workers`` processes with a progress bar.
:func:`build_dataloader` builds the loaders (automatic ``num_workers``, pinned memory on CUDA, optionally MONAI's
``ThreadDataLoader``).

``build_dataset(..., batch_normalise=True)`` (xray's ``train#dataset``) moves the backbone normalisation at the end of
the preprocessing (``BackboneNormalized``, then only ``EnsureTyped``) out of the per-item pipeline: the items stay
one-channel (grey) and the loader's batches are replicated to RGB and normalised once per batch in the training
process (:class:`BatchNormalize`, applied by :func:`build_dataloader`). Profiled (issue 25): in a worker, handing a
3 x 224 x 224 float32 item to the training process (collate into shared memory, unpickling, metadata) cost about
0.7 ms of CPU per image on top of about 2 ms of augmentation and normalisation; a grey item about 0.3 ms, and the
normalisation once per batch 0.11 ms per image instead of 0.34 ms per item. Most of the remaining hand-over cost
grows with the bytes (page faults of the fresh shared memory of each batch: about 0.22 ms per 200 KB image), so the
grey items also cross in float16 (``item_dtype``; the batch normalisation computes in float32). That rounds the
augmented values (range [0, 1.1]) by at most 2**-12 below 1 and 2**-11 above, a sixteenth of an 8-bit source's step
or less, about what autocast does to the network's input on a GPU; ``item_dtype=None`` keeps float32 and the
per-item values exactly. With ``track_meta=False`` the items carry no metadata at all (nothing in training reads it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset, MetaTensor, ThreadDataLoader
from monai.transforms import Compose, RandomizableTrait, Transform
from monai.utils import optional_import

from monai_transfer.data._workers import CallItems, as_is

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = [
    "CACHE_MODES",
    "CACHE_FORMAT",
    "CacheDirError",
    "default_cache_dir",
    "available_memory_bytes",
    "auto_num_workers",
    "resolve_num_workers",
    "describe_transforms",
    "preprocessing_key",
    "item_key",
    "pack_item",
    "packed_nbytes",
    "unpack_item",
    "save_packed",
    "load_packed",
    "RAMCachedDataset",
    "DiskCachedDataset",
    "choose_cache",
    "build_dataset",
    "build_dataloader",
    "BatchNormalize",
    "split_batch_normalisation",
]

logger = logging.getLogger(__name__)

#: the values of the bundles' ``cache`` id
CACHE_MODES = ("auto", "ram", "disk", "none")
#: part of every preprocessing key: a change of the stored format never reads old files
CACHE_FORMAT = "monai_transfer.cache/2"
#: ``auto`` uses RAM when the estimated cache is at most this fraction of the available memory (per node)
DEFAULT_MEMORY_FRACTION = 0.5
_PACKED = "__monai_transfer_packed__"


class CacheDirError(OSError):
    """The cache folder cannot be created or written (the message names it)."""


def default_cache_dir() -> Path:
    """``$MONAI_TRANSFER_CACHE_DIR``, else ``$XDG_CACHE_HOME/monai_transfer/datasets`` (``~/.cache/...``)."""
    env = os.environ.get("MONAI_TRANSFER_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "monai_transfer" / "datasets"


def _cgroup_room() -> int | None:
    """Bytes left under a cgroup v2 memory limit (containers, batch schedulers), or None without a limit."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def available_memory_bytes() -> int:
    """Memory available to new allocations: ``MemAvailable`` of ``/proc/meminfo`` (else ``os.sysconf`` free pages),
    capped by the room under a cgroup v2 memory limit."""
    avail = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if not avail:
        try:
            avail = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            avail = 0
    room = _cgroup_room()
    return avail if room is None else min(avail, room)


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _local_ranks() -> int:
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def auto_num_workers(cores: int | None = None, local_ranks: int | None = None, cap: int = 16) -> int:
    """The automatic ``num_workers`` of one process's data loader.

    The cores this process may use (``sched_getaffinity``) are shared among the ``torchrun`` ranks of the node
    (``LOCAL_WORLD_SIZE``). With up to 4 cores per rank every core runs a worker (the training process mostly waits
    for the accelerator or for the workers, and on 2 cores two workers are what makes loading faster than the main
    process alone); with more, one core is left to the training process; never more than ``cap``.

    Args:
        cores: usable cores; default the process's affinity.
        local_ranks: processes of this node; default ``$LOCAL_WORLD_SIZE`` (1).
        cap: the most workers.
    """
    cores = _cpu_count() if cores is None else max(1, int(cores))
    ranks = _local_ranks() if local_ranks is None else max(1, int(local_ranks))
    per_rank = max(1, cores // ranks)
    return int(min(per_rank if per_rank <= 4 else per_rank - 1, cap))


def resolve_num_workers(num_workers: int | str | None) -> int:
    """``"auto"``/``None``/``-1`` → :func:`auto_num_workers`; a non-negative integer as it is.

    Raises:
        ValueError: for anything else (named as ``num_workers``).
    """
    if num_workers is None or (isinstance(num_workers, str) and num_workers.strip().lower() == "auto"):
        return auto_num_workers()
    try:
        value = int(num_workers)
    except (TypeError, ValueError):
        raise ValueError(f"num_workers must be 'auto' or an integer >= 0, got {num_workers!r}.") from None
    if value == -1:
        return auto_num_workers()
    if value < 0:
        raise ValueError(f"num_workers must be 'auto' or an integer >= 0, got {num_workers!r}.")
    return value


# ---------------------------------------------------------------- keys


def _describe(obj: Any, depth: int = 0) -> Any:
    """A JSON-able, address-free description of a transform's settings (for the cache key)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Enum):
        return str(obj.value)
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        arr = np.ascontiguousarray(obj.detach().cpu().numpy() if isinstance(obj, torch.Tensor) else obj)
        return {"array": str(arr.dtype), "shape": list(arr.shape), "sha1": hashlib.sha1(arr.tobytes()).hexdigest()}
    if isinstance(obj, Mapping):
        return {str(k): _describe(v, depth + 1) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else obj
        return [_describe(v, depth + 1) for v in items]
    if isinstance(obj, np.random.RandomState):
        return "RandomState"
    name = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if callable(obj) and not hasattr(obj, "__dict__") or isinstance(obj, type) or depth > 6:
        return getattr(obj, "__qualname__", name)
    if hasattr(obj, "__dict__"):
        state = {k: v for k, v in vars(obj).items() if k not in ("R", "_lazy", "lazy", "tracing")}
        return {"class": name, **_describe(state, depth + 1)}
    return name


def describe_transforms(transforms: Sequence[Callable] | Compose) -> list[Any]:
    """What the transforms do, as JSON: each one's class and settings (nested transforms and readers included)."""
    if isinstance(transforms, Compose):
        transforms = transforms.transforms
    return [_describe(t) for t in transforms]


def preprocessing_key(transforms: Sequence[Callable] | Compose) -> str:
    """SHA-256 of :data:`CACHE_FORMAT` and :func:`describe_transforms`: the disk cache's folder name."""
    text = json.dumps([CACHE_FORMAT, describe_transforms(transforms)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def item_key(item: Mapping[str, Any] | Any) -> str:
    """SHA-256 of a data-list item's entries and of the size and modification time of each file it names."""
    entries = dict(item) if isinstance(item, Mapping) else {"item": item}
    stamps = {}
    for k, v in sorted(entries.items(), key=lambda kv: str(kv[0])):
        if isinstance(v, (str, os.PathLike)) and len(str(v)) < 4096:
            try:
                st = os.stat(v)
            except (OSError, ValueError):
                continue
            stamps[str(k)] = [str(Path(v).resolve()), st.st_size, st.st_mtime_ns]
    text = json.dumps([_describe(entries), stamps], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- compact storage


def _uint8_scale(x: torch.Tensor) -> float | None:
    """``k`` such that ``x == q / k`` exactly for ``uint8`` ``q`` (checked), or ``None``."""
    if not x.is_floating_point() or x.numel() == 0 or not bool(torch.isfinite(x).all()):
        return None
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 255:
        return None
    candidates = [1.0, 255.0]
    positive = x[x > 0]
    if positive.numel():
        smallest = float(positive.min())  # d / k for a small integer d (the step above the minimum of a scaled image)
        candidates += [float(round(d / smallest)) for d in range(1, 9) if 1 <= round(d / smallest) <= 255]
    for k in dict.fromkeys(candidates):
        q = torch.round(x * k)
        if float(q.max()) <= 255 and torch.equal(_from_uint8(q.to(torch.uint8), k, x.dtype), x):
            return k
    return None


def _from_uint8(q: torch.Tensor, k: float, dtype: torch.dtype) -> torch.Tensor:
    return q.to(dtype) / k if k != 1.0 else q.to(dtype)


def _plain(value: Any) -> Any:
    """A metadata value that ``torch.load(weights_only=True)`` reads back (numpy arrays become tagged tensors)."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        return {"__ndarray__": torch.as_tensor(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().as_subclass(torch.Tensor) if isinstance(value, MetaTensor) else value.cpu()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _restore(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__ndarray__"}:
            return value["__ndarray__"].numpy()
        return {k: _restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v) for v in value]
    return value


def _pack_value(value: Any) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    meta = dict(value.meta) if isinstance(value, MetaTensor) else None
    data = value.detach().cpu().as_subclass(torch.Tensor) if isinstance(value, MetaTensor) else value.detach().cpu()
    scale = _uint8_scale(data)
    stored = torch.round(data * scale).to(torch.uint8) if scale is not None else data.contiguous()
    return {_PACKED: 1, "data": stored, "scale": scale, "dtype": str(data.dtype).replace("torch.", ""),
            "meta": None if meta is None else _plain(meta)}  # fmt: skip


def _unpack_value(value: Any, meta: bool = True) -> Any:
    if not (isinstance(value, dict) and value.get(_PACKED) == 1):
        return value
    dtype = getattr(torch, value["dtype"])
    data = value["data"]
    data = _from_uint8(data, value["scale"], dtype) if value["scale"] is not None else data.clone()
    return data if value["meta"] is None or not meta else MetaTensor(data, meta=_restore(value["meta"]))


def pack_item(item: Any) -> Any:
    """The cached form of a preprocessed item: tensors as plain tensors (``uint8`` where exact) + their metadata."""
    if isinstance(item, Mapping):
        return {k: _pack_value(v) for k, v in item.items()}
    if isinstance(item, (list, tuple)):
        return [pack_item(v) for v in item]
    return _pack_value(item)


def unpack_item(packed: Any, meta: bool = True) -> Any:
    """The preprocessed item back from :func:`pack_item` (fresh tensors, the images as ``MetaTensor``; with
    ``meta=False`` as plain tensors, without rebuilding their metadata)."""
    if isinstance(packed, Mapping) and packed.get(_PACKED) != 1:
        return {k: _unpack_value(v, meta) for k, v in packed.items()}
    if isinstance(packed, list):
        return [unpack_item(v, meta) for v in packed]
    return _unpack_value(packed, meta)


def packed_nbytes(packed: Any) -> int:
    """Bytes of the tensors of a packed item (what the RAM cache holds per item, without Python overhead)."""
    if isinstance(packed, torch.Tensor):
        return packed.numel() * packed.element_size()
    if isinstance(packed, Mapping):
        return sum(packed_nbytes(v) for v in packed.values())
    if isinstance(packed, (list, tuple)):
        return sum(packed_nbytes(v) for v in packed)
    return 0


#: the first bytes of a disk cache file (:func:`save_packed`)
_MAGIC = b"MTC2"
_ALIGN = 64


def _encode(value: Any, blobs: list[Any], where: str) -> Any:
    """``value`` as JSON, its tensors and arrays appended to ``blobs`` (referred to by index)."""
    if isinstance(value, torch.Tensor):
        blobs.append(value.detach().cpu().as_subclass(torch.Tensor).contiguous())
        return {"__blob__": len(blobs) - 1}
    if isinstance(value, np.ndarray) and value.dtype != object:
        blobs.append(np.ascontiguousarray(value))
        return {"__blob__": len(blobs) - 1}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping) and value.get(_PACKED) == 1 and value.get("meta") is not None:
        meta = json.dumps(_encode(value["meta"], blobs, f"{where}.meta"))  # text: parsed only when wanted
        return _encode({**value, "meta": None}, blobs, where) | {"__meta__": meta}
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: _encode(v, blobs, f"{where}.{k}") for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"__tuple__" if isinstance(value, tuple) else "__list__": [_encode(v, blobs, where) for v in value]}
    raise TypeError(f"disk cache: cannot store {type(value).__name__} at {where} (tensors, arrays, numbers, strings, "
                    "lists and string-keyed dicts only); use --cache ram or --cache none.")  # fmt: skip


def _decode(value: Any, blob: Callable[[int], Any], meta: bool) -> Any:
    if isinstance(value, dict):
        if "__blob__" in value:
            return blob(value["__blob__"])
        if "__dict__" in value:
            out = {k: _decode(v, blob, meta) for k, v in value["__dict__"].items()}
            if meta and "__meta__" in value:  # a packed tensor's metadata
                out["meta"] = _decode(json.loads(value["__meta__"]), blob, meta)
            return out
        if "__tuple__" in value:
            return tuple(_decode(v, blob, meta) for v in value["__tuple__"])
        return [_decode(v, blob, meta) for v in value["__list__"]]
    return value


def save_packed(packed: Any, path: str | os.PathLike) -> Path:
    """Write a packed item (:func:`pack_item`) to ``path`` atomically: ``MTC2``, the header's length (8 bytes, little
    endian), a JSON header (the item's structure and each tensor's dtype, shape and offset) and the raw tensor bytes
    (64-byte aligned). Nothing is pickled; :func:`load_packed` reads it with one ``read`` and no per-tensor copies.

    Raises:
        TypeError: for a value that is not a tensor, array, number, string, list or string-keyed dict (named).
    """
    from monai_transfer.utils.io import atomic_write

    blobs: list[Any] = []
    structure = _encode(packed, blobs, "item")
    specs, offset = [], 0
    for b in blobs:
        nbytes = b.numel() * b.element_size() if isinstance(b, torch.Tensor) else b.nbytes
        kind = "tensor" if isinstance(b, torch.Tensor) else "ndarray"
        dtype = str(b.dtype).replace("torch.", "") if kind == "tensor" else b.dtype.str
        specs.append({"kind": kind, "dtype": dtype, "shape": list(b.shape), "offset": offset, "nbytes": nbytes})
        offset += -(-nbytes // _ALIGN) * _ALIGN
    header = json.dumps({"format": CACHE_FORMAT, "item": structure, "blobs": specs}).encode("utf-8")
    start = -(-(len(_MAGIC) + 8 + len(header)) // _ALIGN) * _ALIGN

    def write(f: Any) -> None:
        f.write(_MAGIC + len(header).to_bytes(8, "little") + header)
        f.write(b"\0" * (start - len(_MAGIC) - 8 - len(header)))
        for b, spec in zip(blobs, specs):
            if isinstance(b, torch.Tensor):  # 1-D first: a 0-d tensor cannot be viewed as bytes
                flat = b.reshape(-1)
                raw = (flat.to(torch.uint8) if b.dtype == torch.bool else flat.view(torch.uint8)).numpy().tobytes()
            else:
                raw = b.tobytes()
            f.write(raw)
            f.write(b"\0" * (-(-spec["nbytes"] // _ALIGN) * _ALIGN - spec["nbytes"]))

    return atomic_write(path, write)


def _blob(buf: bytearray, lo: int, count: int, spec: Mapping[str, Any]) -> Any:
    """One tensor (a view of ``buf``) or array (a copy) of a :func:`save_packed` file."""
    shape = list(spec["shape"])
    if spec["kind"] == "ndarray":
        return np.frombuffer(bytes(buf[lo : lo + count]), dtype=np.dtype(spec["dtype"])).reshape(shape).copy()
    raw = torch.frombuffer(buf, dtype=torch.uint8, count=count, offset=lo) if count else torch.empty(0, torch.uint8)
    dtype = getattr(torch, spec["dtype"])
    return raw.bool().reshape(shape) if dtype == torch.bool else raw.view(dtype).reshape(shape)


def load_packed(path: str | os.PathLike, meta: bool = True) -> Any:
    """The packed item :func:`save_packed` wrote (tensors share one buffer read from the file); ``meta=False``
    leaves the images' metadata out (``None``) without parsing it.

    Raises:
        ValueError: the file is not such a file or is truncated (the message names it).
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        buf = bytearray(size)
        if f.readinto(buf) != size or buf[: len(_MAGIC)] != _MAGIC:
            raise ValueError(f"disk cache file {path}: not a {CACHE_FORMAT} file or truncated")
    n = int.from_bytes(buf[len(_MAGIC) : len(_MAGIC) + 8], "little")
    try:
        header = json.loads(bytes(buf[len(_MAGIC) + 8 : len(_MAGIC) + 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"disk cache file {path}: unreadable header ({e})") from None
    start = -(-(len(_MAGIC) + 8 + n) // _ALIGN) * _ALIGN

    def blob(i: int) -> Any:
        spec = header["blobs"][i]
        lo, count = start + spec["offset"], spec["nbytes"]
        if lo + count > size:
            raise ValueError(f"disk cache file {path}: truncated")
        return _blob(buf, lo, count, spec)

    return _decode(header["item"], blob, meta)


# ---------------------------------------------------------------- datasets


def _as_compose(transform: Callable | Sequence[Callable] | None) -> Compose:
    if isinstance(transform, Compose):
        return transform
    if transform is None:
        return Compose([])
    return Compose(list(transform) if isinstance(transform, Sequence) else [transform])


def _first_random(compose: Compose) -> int:
    """Index of the first random (or non-MONAI) transform: the transforms before it are cached."""
    first = compose.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform))
    return len(compose.transforms) if first is None else int(first)


class _Filler:
    """One item's cached form, computed in a loader worker: ``pickle`` bytes (RAM) or the file written (disk)."""

    def __init__(self, data: Sequence[Any], transform: Compose, end: int, paths: Sequence[Path] | None = None):
        self.data, self.transform, self.end, self.paths = data, transform, end, paths

    def packed(self, index: int) -> Any:
        return pack_item(self.transform(self.data[index], end=self.end))

    def __call__(self, index: int) -> Any:
        import pickle

        packed = self.packed(index)
        if self.paths is None:
            return pickle.dumps(packed, protocol=pickle.HIGHEST_PROTOCOL)  # by value: no shared-memory handles
        save_packed(packed, self.paths[index])
        return None


def _fill(filler: _Filler, indices: Sequence[int], num_workers: int, progress: bool, desc: str) -> list[Any]:
    """Run ``filler`` over ``indices`` in ``num_workers`` processes (0: here), with a progress bar; results in order."""
    import pickle

    indices = list(indices)
    if not indices:
        return []
    if num_workers > 0 and len(indices) > 1:
        loader: Any = torch.utils.data.DataLoader(
            CallItems(filler, indices), batch_size=None, num_workers=min(num_workers, len(indices)),
            collate_fn=as_is,
        )  # fmt: skip
    else:
        loader = (filler(i) for i in indices)
    bar = tqdm(total=len(indices), desc=desc, unit="img", disable=not progress) if has_tqdm else None
    out = []
    for result in loader:
        out.append(pickle.loads(result) if isinstance(result, bytes) else result)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out


class _TailMixin:
    """The random part of the preprocessing, after the cached part (optionally without MONAI's metadata tracking)."""

    transform: Compose
    first_random: int
    track_meta: bool

    def _tail(self, item: Any) -> Any:
        if self.track_meta or not isinstance(item, dict):
            if self.first_random >= len(self.transform.transforms):
                return item
            return self.transform(item, start=self.first_random)
        from monai.data import get_track_meta, set_track_meta

        item = {k: v.as_tensor() if isinstance(v, MetaTensor) else v for k, v in item.items()}
        if self.first_random >= len(self.transform.transforms):
            return item
        from monai.transforms import EnsureType

        previous = get_track_meta()
        # EnsureTyped(track_meta=True) makes MetaTensors whatever the switch says: off for this call too
        converters = [c for t in self.transform.transforms[self.first_random :]
                      if isinstance(c := getattr(t, "converter", None), EnsureType) and c.track_meta]  # fmt: skip
        set_track_meta(False)  # MONAI's switch is process-wide: the random transforms run on plain tensors
        for c in converters:
            c.track_meta = False
        try:
            out = self.transform(item, start=self.first_random)
        finally:
            set_track_meta(previous)
            for c in converters:
                c.track_meta = True
        if isinstance(out, dict):
            out = {k: v.as_tensor() if isinstance(v, MetaTensor) else v for k, v in out.items()}
        return out


class RAMCachedDataset(_TailMixin, Dataset):
    """MONAI ``Dataset`` whose deterministic preprocessing is computed once (in ``num_workers`` processes) and kept
    in memory in compact form (:func:`pack_item`); the random transforms run on every access.

    Args:
        data: the data list.
        transform: the preprocessing (a ``Compose`` or a list); the transforms before the first random one are cached.
        num_workers: processes of the first pass (0: this process).
        progress: show a progress bar of the first pass.
        prefilled: ``{index: packed item}`` already computed (``auto``'s probe items).
        track_meta: run the random transforms on ``MetaTensor`` (MONAI's default). ``False``: the items are plain
            tensors, without metadata, from the cache to the batch: 1.3x the images per CPU second at 224 px
            (``scripts/bench/scale_loader.py``; profiled: ``RandAffined`` on a ``MetaTensor`` updates its affine and
            copies metadata at every operation, and a worker pickles each item's metadata and the training process
            collates it). Only where nothing reads the metadata: the random transforms (the xray augmentation; not
            the ct_slices slice sampler, which reads ``filename_or_obj``) and the training loop (the trainer reads
            ``image`` and ``label``).
    """

    def __init__(
        self,
        data: Sequence[Any],
        transform: Callable | Sequence[Callable] | None,
        num_workers: int = 0,
        progress: bool = True,
        prefilled: Mapping[int, Any] | None = None,
        track_meta: bool = True,
    ) -> None:
        super().__init__(data=data, transform=_as_compose(transform))
        self.track_meta = bool(track_meta)
        self.first_random = _first_random(self.transform)
        self._items: list[Any] = [None] * len(self.data)
        for i, packed in (prefilled or {}).items():
            self._items[i] = packed
        todo = [i for i, v in enumerate(self._items) if v is None]
        filler = _Filler(self.data, self.transform, self.first_random)
        for i, packed in zip(todo, _fill(filler, todo, num_workers, progress, "caching (RAM)")):
            self._items[i] = packed

    @property
    def nbytes(self) -> int:
        """Bytes of the cached tensors."""
        return sum(packed_nbytes(p) for p in self._items)

    def _transform(self, index: int) -> Any:
        return self._tail(unpack_item(self._items[index], meta=self.track_meta))


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise CacheDirError(
            f"cache_dir {folder}: cannot create or write the cache folder ({e.strerror or e}); pass --cache_dir "
            "a writable folder, or --cache ram / --cache none."
        ) from e


class DiskCachedDataset(_TailMixin, Dataset):
    """MONAI ``Dataset`` whose deterministic preprocessing is stored once per item in
    ``<cache_dir>/<preprocessing key>/<item key>.item`` (:func:`save_packed`: raw tensor bytes behind a JSON
    header, nothing pickled; written atomically in ``num_workers`` processes) and read back on every access; the
    random transforms run after it. Memory does not grow with the number of items (only their file names are held).

    Compared with MONAI's ``PersistentDataset`` (which this replaces in the bundles): the folder is keyed by a
    description of the cached transforms (:func:`preprocessing_key`), the items by their entries and their files'
    size and modification time (:func:`item_key`), exact 8-bit images are stored as ``uint8``, a file is read with
    one ``read`` and no unpickling (``torch.load`` of a zip file cost about 0.9 ms per item, issue 25), the first
    pass runs in parallel, and an unreadable file is recomputed instead of failing the run
    (``scripts/bench/scale_loader.py`` compares it with ``PersistentDataset``). Under ``torchrun`` the ranks share the
    first pass (each fills its share of a shared folder, then they wait for each other).

    Args:
        data: the data list.
        transform: the preprocessing; the transforms before the first random one are cached.
        cache_dir: the cache root (default :func:`default_cache_dir`); several runs and bundles may share it.
        num_workers: processes of the first pass.
        progress: show a progress bar of the first pass.
        track_meta: as :class:`RAMCachedDataset`.

    Raises:
        CacheDirError: when the cache folder cannot be created or written (named).
    """

    def __init__(
        self,
        data: Sequence[Any],
        transform: Callable | Sequence[Callable] | None,
        cache_dir: str | os.PathLike | None = None,
        num_workers: int = 0,
        progress: bool = True,
        track_meta: bool = True,
    ) -> None:
        super().__init__(data=data, transform=_as_compose(transform))
        self.track_meta = bool(track_meta)
        self.first_random = _first_random(self.transform)
        head = self.transform.transforms[: self.first_random]
        self.key = preprocessing_key(head)
        self.cache_dir = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
        self.folder = self.cache_dir / self.key[:32]
        _check_writable(self.folder)
        described = self.folder / "preprocessing.json"
        if not described.is_file():
            from monai_transfer.utils.io import atomic_write_json

            atomic_write_json(
                described, {"format": CACHE_FORMAT, "key": self.key, "transforms": describe_transforms(head)}
            )
        self.paths = [self.folder / f"{item_key(d)}.item" for d in self.data]
        self._fill_missing(num_workers, progress)

    def _fill_missing(self, num_workers: int, progress: bool) -> None:
        """Preprocess the items without a file; under ``torch.distributed`` each rank fills its share first."""
        import torch.distributed as dist

        filler = _Filler(self.data, self.transform, self.first_random, self.paths)
        todo = [i for i, p in enumerate(self.paths) if not p.is_file()]
        sharded = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if sharded:  # every rank builds the same datasets in the same order, so the barriers pair up
            share = todo[dist.get_rank() :: dist.get_world_size()]
            _fill(filler, share, num_workers, progress, "caching (disk)")
            dist.barrier()
            todo = [i for i in todo if not self.paths[i].is_file()]  # a folder not shared by all ranks
        if todo:
            logger.info(f"disk cache {self.folder}: preprocessing {len(todo)} of {len(self.paths)} items")
        _fill(filler, todo, num_workers, progress, "caching (disk)")

    def _load(self, index: int) -> Any:
        path = self.paths[index]
        try:
            return load_packed(path, meta=self.track_meta)
        except (OSError, ValueError, KeyError, TypeError) as e:  # a truncated or foreign file: compute it again
            logger.warning(f"disk cache: {path} could not be read ({e}); preprocessing the item again")
            filler = _Filler(self.data, self.transform, self.first_random, self.paths)
            filler(index)
            return load_packed(path, meta=self.track_meta)

    def _transform(self, index: int) -> Any:
        return self._tail(unpack_item(self._load(index), meta=self.track_meta))


#: Python objects, metadata and allocator slack per cached item, on top of its tensors: about 10 KB measured at 224 px
#: (``scripts/bench/scale_memory.py``: 60 KB of RSS per 50.5 KB ``uint8`` image), rounded up
_ITEM_OVERHEAD_BYTES = 12 * 1024


def choose_cache(
    data: Sequence[Any],
    transform: Callable | Sequence[Callable] | None,
    memory_budget: int | None = None,
    memory_fraction: float = DEFAULT_MEMORY_FRACTION,
    probe_items: int = 4,
) -> tuple[str, dict[str, Any], dict[int, Any]]:
    """``auto``'s choice: ``"ram"`` when the estimated cache fits the budget, else ``"disk"``.

    The first ``probe_items`` items are preprocessed (and returned, so a RAM cache need not compute them again); their
    mean packed size plus a per-item overhead, times ``len(data)``, is the estimate. The budget is ``memory_budget``
    bytes, default ``memory_fraction`` of the available memory divided among the node's ``torchrun`` ranks.

    Returns:
        ``(mode, numbers, {index: packed item})``; ``numbers`` holds ``items``, ``bytes_per_item``,
        ``estimate_bytes``, ``available_bytes``, ``budget_bytes``.
    """
    compose = _as_compose(transform)
    filler = _Filler(data, compose, _first_random(compose))
    probed = {i: filler.packed(i) for i in range(min(max(1, int(probe_items)), len(data)))}
    per_item = (sum(packed_nbytes(p) for p in probed.values()) / max(1, len(probed))) + _ITEM_OVERHEAD_BYTES
    available = available_memory_bytes()
    budget = int(memory_budget) if memory_budget is not None else int(memory_fraction * available / _local_ranks())
    estimate = int(per_item * len(data))
    mode = "ram" if estimate <= budget else "disk"
    numbers = {"items": len(data), "bytes_per_item": int(per_item), "estimate_bytes": estimate,
               "available_bytes": available, "budget_bytes": budget}  # fmt: skip
    logger.info(
        f"cache=auto: {len(data)} items x {per_item / 1e3:.1f} KB = {estimate / 1e6:.1f} MB estimated; budget "
        f"{budget / 1e6:.0f} MB ({'given' if memory_budget is not None else f'{memory_fraction:.0%} of available'} "
        f"{available / 1e6:.0f} MB): caching in {mode.upper()}"
    )
    return mode, numbers, probed


class BatchNormalize:
    """A per-item ``BackboneNormalized`` applied to collated batches ``(B, C, ...)`` (channel dimension 1).

    Same operations as the per-item transform (grey -> RGB replication when it has ``repeat_channels``, then
    ``(x - mean) / std`` per channel), so the values equal the per-item path's.

    Args:
        transform: the ``BackboneNormalized`` of the per-item pipeline.
    """

    def __init__(self, transform: Any) -> None:
        self.keys = tuple(transform.keys)
        self.t = transform.t

    def __call__(self, batch: Any) -> Any:
        if not isinstance(batch, Mapping):
            return batch
        out = dict(batch)
        for k in self.keys:
            if k in out:
                out[k] = self.normalise(out[k])
        return out

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """One batch tensor ``(B, C, ...)``, normalised (a plain tensor stays plain, a ``MetaTensor`` keeps its
        metadata)."""
        mean, std = self.t.stats
        meta = x if isinstance(x, MetaTensor) else None
        x = x.as_tensor() if meta is not None else x  # plain arithmetic: MONAI's track_meta switch is process-wide
        dtype = torch.promote_types(x.dtype, torch.float32) if torch.is_floating_point(x) else torch.float32
        grey_to_rgb = len(mean) > 1 and x.shape[1] == 1 and self.t.repeat_channels
        if len(mean) > 1 and x.shape[1] != len(mean) and not grey_to_rgb:
            raise ValueError(f"batch has {x.shape[1]} channels but mean/std have {len(mean)} values (mean={mean}).")
        # (x - mean[c]) / std[c] per channel, broadcast: one grey channel feeds every output channel (grey -> RGB), one
        # mean/std value every channel; (1, C, 1, ...) stats have a dimension, so a float16 x is computed in float32.
        # Two passes over the output (no per-channel strided writes): the same values as the per-item transform
        shape = (1, len(mean)) + (1,) * (x.ndim - 2)
        out = torch.sub(x, torch.as_tensor(mean, dtype=dtype, device=x.device).view(shape))
        out.div_(torch.as_tensor(std, dtype=dtype, device=x.device).view(shape))
        if meta is None:
            return out
        out = MetaTensor(out, meta=meta.meta, applied_operations=meta.applied_operations)
        out.is_batch = meta.is_batch
        return out


def split_batch_normalisation(
    transform: Callable | Sequence[Callable] | None, item_dtype: str | torch.dtype | None = None
) -> tuple[Compose, BatchNormalize | None]:
    """``(per-item transform, batch transform)``: the last ``BackboneNormalized`` moved to :class:`BatchNormalize`.

    Only when it comes after every random transform and is followed by ``EnsureTyped`` alone (which commutes with it);
    otherwise ``(transform, None)``. The given ``Compose`` is not changed. With ``item_dtype`` (e.g. ``"float16"``) the
    per-item transform ends with a ``CastToTyped`` of the normalised keys to it (:func:`build_dataset`).
    """
    from monai.transforms import CastToTyped, EnsureTyped

    from monai_transfer.transforms.intensity.dictionary import BackboneNormalized

    compose = _as_compose(transform)
    ts = list(compose.transforms)
    found = [i for i, t in enumerate(ts) if isinstance(t, BackboneNormalized)]
    i = found[-1] if found else -1
    if i < 0 or i < _first_random(compose) or not all(isinstance(t, EnsureTyped) for t in ts[i + 1 :]):
        return compose, None
    kept = ts[:i] + ts[i + 1 :]
    if item_dtype is not None:
        dtype = getattr(torch, item_dtype) if isinstance(item_dtype, str) else item_dtype
        kept.append(CastToTyped(keys=ts[i].keys, dtype=dtype, allow_missing_keys=True))
    kept_compose = Compose(kept, map_items=compose.map_items, unpack_items=compose.unpack_items,
                           log_stats=compose.log_stats, lazy=compose.lazy)  # fmt: skip
    return kept_compose, BatchNormalize(ts[i])


def build_dataset(
    data: Sequence[Any],
    transform: Callable | Sequence[Callable] | None,
    cache: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | str | None = "auto",
    progress: bool = True,
    memory_budget: int | None = None,
    probe_items: int = 4,
    track_meta: bool = True,
    batch_normalise: bool = False,
    item_dtype: str | torch.dtype | None = "float16",
) -> Dataset:
    """The dataset of a data list and its preprocessing, cached as ``cache`` says (module docstring).

    Args:
        data: the data list.
        transform: the preprocessing (``Compose`` or list); the transforms before the first random one are cached.
        cache: ``"auto"`` (default), ``"ram"``, ``"disk"`` or ``"none"``.
        cache_dir: the disk cache's root (default :func:`default_cache_dir`).
        num_workers: processes of the first pass (``"auto"``: :func:`auto_num_workers`).
        progress: progress bar of the first pass.
        memory_budget: bytes ``auto`` may use in RAM (default half the available memory, per rank).
        probe_items: items ``auto`` preprocesses to estimate the cache size.
        track_meta: ``False``: plain tensors, no metadata, from the cache to the batch (:class:`RAMCachedDataset`).
        batch_normalise: move the final ``BackboneNormalized`` to the batches (:func:`split_batch_normalisation`;
            the dataset's ``batch_transform``, applied by :func:`build_dataloader`): grey items, cheaper to hand
            from the loader's workers to the training process. Only for datasets read through
            :func:`build_dataloader`.
        item_dtype: with ``batch_normalise``, the dtype of the grey images handed to the batch normalisation
            (which computes in float32). ``"float16"`` (default) halves the bytes crossing from the loader's workers
            (module docstring; rounding: at most 2**-12 for values below 1, 2**-11 up to 2, a sixteenth of an 8-bit
            source's step); ``None`` keeps the pipeline's float32.

    Raises:
        ValueError: for an unknown ``cache`` (the valid values are listed) or ``num_workers``.
        CacheDirError: when the disk cache's folder cannot be written (named).

    Example::

        ds = build_dataset(datalist, Compose([LoadImaged("image"), RandFlipd("image", prob=0.5)]), cache="disk",
                           cache_dir="/scratch/cache")
    """
    mode = str(cache).strip().lower() if cache is not None else "auto"
    if mode not in CACHE_MODES:
        raise ValueError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}.")
    data = list(data)
    batch_transform = None
    if batch_normalise:
        transform, batch_transform = split_batch_normalisation(transform, item_dtype=item_dtype)
    ds = _dataset(data, transform, mode, cache_dir, num_workers, progress, memory_budget, probe_items, track_meta)
    ds.batch_transform = batch_transform
    return ds


def _dataset(
    data: list[Any],
    transform: Any,
    mode: str,
    cache_dir: str | os.PathLike | None,
    num_workers: int | str | None,
    progress: bool,
    memory_budget: int | None,
    probe_items: int,
    track_meta: bool,
) -> Dataset:
    workers = resolve_num_workers(num_workers)
    if mode == "none":
        return Dataset(data=data, transform=transform)
    probed: dict[int, Any] = {}
    if mode == "auto":
        mode, _, probed = choose_cache(data, transform, memory_budget=memory_budget, probe_items=probe_items)
    if mode == "ram":
        return RAMCachedDataset(
            data, transform, num_workers=workers, progress=progress, prefilled=probed, track_meta=track_meta
        )
    return DiskCachedDataset(
        data, transform, cache_dir=cache_dir, num_workers=workers, progress=progress, track_meta=track_meta
    )


def build_dataloader(
    dataset: Any,
    batch_size: int = 1,
    shuffle: bool = False,
    sampler: Any | None = None,
    num_workers: int | str | None = "auto",
    device: str | torch.device | None = None,
    drop_last: bool = False,
    loader: str = "torch",
    **kwargs: Any,
) -> torch.utils.data.DataLoader:
    """The bundles' data loaders: MONAI's ``DataLoader`` (or ``ThreadDataLoader``) with automatic ``num_workers``.

    Args:
        dataset: the dataset.
        batch_size: items per batch.
        shuffle: shuffle each epoch when no ``sampler`` is given (a sampler decides the order itself).
        sampler: optional sampler.
        num_workers: loader processes; ``"auto"`` (default): :func:`auto_num_workers`. Workers are started each epoch
            (not persistent), so that ``EpochSeed``'s per-epoch seeding reaches them and a resumed run equals an
            uninterrupted one.
        device: the training device; memory is pinned for CUDA.
        drop_last: drop the last incomplete batch.
        loader: ``"torch"`` (default) or ``"thread"``: MONAI's ``ThreadDataLoader`` (a background thread prefetches
            batches, ``num_workers`` processes under it); MONAI's fast-training pattern for CUDA with cached data
            (not measured on a GPU in this project yet; see benchmarks/README.md).
        kwargs: other ``DataLoader`` arguments.

    Raises:
        ValueError: for an unknown ``loader`` or ``num_workers``.
    """
    workers = resolve_num_workers(num_workers)
    pin = device is not None and torch.device(device).type == "cuda"
    args = dict(batch_size=batch_size, shuffle=bool(shuffle) and sampler is None, sampler=sampler,
                num_workers=workers, pin_memory=pin, drop_last=drop_last, **kwargs)  # fmt: skip
    batch_transform = getattr(dataset, "batch_transform", None)
    if loader == "torch":
        cls = DataLoader if batch_transform is None else _BatchTransformLoader
        out = cls(dataset, **args)
    elif loader == "thread":
        cls = ThreadDataLoader if batch_transform is None else _BatchTransformThreadLoader
        out = cls(dataset, buffer_size=1, **args)
    else:
        raise ValueError(f"loader must be 'torch' or 'thread', got {loader!r}.")
    if batch_transform is not None:
        out.batch_transform = batch_transform
    return out


def _transformed(batches: Any, batch_transform: Callable, pin: bool) -> Any:
    for batch in batches:
        out = batch_transform(batch)
        if pin and isinstance(out, dict):
            out = {k: v.pin_memory() if isinstance(v, torch.Tensor) and not v.is_pinned() else v
                   for k, v in out.items()}  # fmt: skip
        yield out


class _BatchTransformLoader(DataLoader):
    """MONAI's ``DataLoader`` applying the dataset's ``batch_transform`` to each batch in the training process."""

    batch_transform: Callable

    def __iter__(self) -> Any:
        return _transformed(super().__iter__(), self.batch_transform, self.pin_memory)


class _BatchTransformThreadLoader(ThreadDataLoader):
    """MONAI's ``ThreadDataLoader`` applying the dataset's ``batch_transform`` to each batch."""

    batch_transform: Callable

    def __iter__(self) -> Any:
        return _transformed(super().__iter__(), self.batch_transform, self.pin_memory)
