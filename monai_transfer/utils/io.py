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
"""Safe and atomic file I/O.

- Every checkpoint or weight file is read with ``torch.load(..., weights_only=True)`` or safetensors, never with
  unrestricted pickle: a checkpoint that needs arbitrary code to load is refused with an error naming the file.
- Files that must never be left truncated (checkpoints, ``model.pt``, reports) are written to a temporary file in
  the same folder and moved into place with ``os.replace``, which is atomic on POSIX and Windows.
- A full disk while writing one of those files raises :class:`DiskFullError` naming the file and the free space,
  whatever layer hit it (``torch.save`` itself reports only "unexpected pos ..." from its zip writer).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "UnsafeCheckpointError",
    "DiskFullError",
    "safe_torch_load",
    "load_state_dict_file",
    "sha256_file",
    "verify_sha256",
    "atomic_write",
    "atomic_torch_save",
    "atomic_write_text",
    "atomic_write_json",
    "read_json_file",
    "to_jsonable",
    "check_output_dir",
]


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint could not be read without executing arbitrary pickled code."""


class DiskFullError(OSError):
    """No space left on the device (``ENOSPC``, or ``EDQUOT`` over quota) while writing a file; names the file."""


_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


def _disk_full_cause(exc: BaseException) -> OSError | None:
    """The ``ENOSPC``/``EDQUOT`` ``OSError`` in ``exc``'s cause/context chain, if any."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno in _DISK_FULL_ERRNOS:
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _disk_full_error(path: Path, cause: OSError) -> DiskFullError:
    try:
        free = f"{_free_mb(path.parent):.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return DiskFullError(
        cause.errno,
        f"No space left on device (disk full) while writing {path} ({free} on its file system; "
        f"{cause.strerror or cause}). The previous version of the file, if any, is unchanged; free some space and "
        "run again (a training run continues from its last checkpoint with --resume true).",
    )


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a torch file with ``weights_only=True``.

    Args:
        path: ``.pt``/``.pth``/``.ckpt`` file.
        map_location: passed to ``torch.load``; default ``"cpu"``.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        UnsafeCheckpointError: when the file holds objects that only full unpickling could build (possibly malicious).
        RuntimeError: when the file is truncated or not a torch file; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... depending on the damage
        msg = str(e)
        if "weights_only" in msg or "Unsupported global" in msg or "WeightsUnpickler" in msg:
            raise UnsafeCheckpointError(
                f"refusing to load {path}: it contains pickled objects that are not plain tensors/containers "
                f"(weights_only=True failed: {msg.splitlines()[0] if msg else type(e).__name__}). "
                "Only load checkpoints you trust; re-save it as a plain state dict or safetensors."
            ) from e
        raise RuntimeError(f"could not read checkpoint {path}: {type(e).__name__}: {msg}") from e


def load_state_dict_file(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only``), unwrapping common wrappers.

    Checkpoints that nest the weights under ``"state_dict"``, ``"model"``, ``"network"`` or ``"model_state_dict"``
    are unwrapped; a ``"module."`` prefix left by DataParallel/DDP is stripped.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
        from safetensors.torch import load_file

        try:
            sd: Any = load_file(str(path), device=str(map_location))
        except Exception as e:
            raise RuntimeError(f"could not read safetensors file {path}: {e}") from e
    else:
        sd = safe_torch_load(path, map_location=map_location)
    if isinstance(sd, dict):
        for key in ("state_dict", "model", "network", "model_state_dict"):
            if key in sd and isinstance(sd[key], dict):
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise RuntimeError(f"{path} does not contain a state dict (a mapping of names to tensors)")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str | None) -> str:
    """Return the file's SHA-256; raise ``ValueError`` naming the file when ``expected`` is given and differs.

    ``expected`` may be the full digest or a prefix of at least 8 hex characters (like torch hub's file names).
    """
    digest = sha256_file(path)
    if expected is not None:
        exp = expected.lower().strip()
        if len(exp) < 8 or not digest.startswith(exp):
            raise ValueError(f"SHA-256 mismatch for {path}: expected {expected}, got {digest}")
    return digest


def atomic_write(path: str | os.PathLike, write_fn: Callable[[IO[bytes]], None]) -> Path:
    """Write a file atomically: ``write_fn(fileobj)`` writes to a temporary file, which then replaces ``path``.

    The temporary file (``.<name>.<random>.tmp``, hidden, in the same folder) is flushed and ``fsync``-ed, given the
    permissions a plain ``open()`` would give (``0o666`` minus the umask, not ``mkstemp``'s ``0o600``) and moved over
    ``path`` with ``os.replace``; the folder is then ``fsync``-ed where the OS allows it. If ``write_fn`` raises (or
    the process is interrupted by an exception), the temporary file is removed and ``path`` keeps its old content.
    When the disk is full (an ``ENOSPC``/``EDQUOT`` ``OSError`` anywhere in the exception chain, e.g. behind the
    ``RuntimeError`` of ``torch.save``'s zip writer) a :class:`DiskFullError` naming ``path`` is raised instead.
    A process killed outright (SIGKILL) can leave a hidden ``.tmp`` file behind, never a truncated ``path``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        DiskFullError: no space left while writing, flushing or syncing the file; the message names ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        full = None if isinstance(e, DiskFullError) else _disk_full_cause(e)
        if full is not None:
            raise _disk_full_error(path, full) from e
        raise
    _fsync_dir(path.parent)
    return path


def _current_umask() -> int:
    try:  # Linux >= 4.7: read it without changing it (os.umask has no getter and is process-wide)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Persist a rename on POSIX file systems (best effort; not supported on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write text atomically."""
    return atomic_write(path, lambda f: f.write(text.encode(encoding)))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write JSON atomically (NaN written as null so the file stays valid JSON)."""
    return atomic_write_text(path, json.dumps(_json_safe(obj), indent=indent, allow_nan=False) + "\n")


def read_json_file(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """The parsed content of a small UTF-8 JSON file (thresholds, calibration, records).

    Args:
        path: the file.
        what: how to name the file in errors, e.g. ``"threshold file"``.

    Raises:
        FileNotFoundError: ``path`` is not a file (``"<what> not found: <path>"``).
        ValueError: the content is not valid UTF-8 JSON (``"<what> <path> is not valid JSON: ..."``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e}") from e


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: mappings and sequences recursively, 0-d tensors/arrays as numbers, paths as
    strings, anything else as its ``str`` (NaN stays NaN; :func:`atomic_write_json` writes it as null)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _json_safe(obj: Any) -> Any:
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _json_safe(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def check_output_dir(path: str | os.PathLike, min_free_mb: float = 50.0) -> Path:
    """Create ``path`` if needed and prove it is writable with enough free space, before any training starts.

    Raises:
        PermissionError: the folder cannot be created or written.
        OSError: less than ``min_free_mb`` MiB free on its file system.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PermissionError(f"output folder {path} is not writable: it exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PermissionError(f"output folder {path} is not writable: {e.strerror or e}") from e
    free_mb = _free_mb(path)
    if free_mb < min_free_mb:
        raise OSError(f"output folder {path} has only {free_mb:.1f} MiB free; at least {min_free_mb:.0f} MiB needed")
    return path


def _free_mb(path: Path) -> float:
    import shutil

    return shutil.disk_usage(path).free / (1 << 20)
