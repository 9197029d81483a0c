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
"""Near-duplicate images: a perceptual DCT hash and a rank thumbnail of every image, pairs in two stages, clusters.

Public and hospital sets hold the same image re-exported, resized, re-encoded, cropped, or processed (another window,
more contrast, blurred or sharpened); a random split puts the copies on both sides and inflates validation numbers.
The recipe here:

1. every image is loaded by :class:`~monai_transfer.transforms.LoadMedicalImage` (so DICOM rescale, VOI window and
   MONOCHROME1 are applied as in training), averaged over channels and resized to 32x32 (area averaging; bilinear
   for smaller images);
2. its 2D DCT-II is taken and the 8x8 lowest frequencies are compared to their median: 64 bits (the usual pHash).
   A volume (NIfTI, DICOM series, multi-frame DICOM) gets the first 64 bits of the SHA-256 of its voxel values
   instead, and only identical values pair: copies renamed, re-compressed or re-encoded with the same voxels. (A
   4x4x4 3D-DCT hash linked nearly all AdrenalMNIST3D shape masks of the ``ct_slices`` data, so volumes are not
   matched by similarity.)
3. candidate pairs are those whose hashes differ in at most ``max_distance`` bits (default
   :data:`DEFAULT_MAX_DISTANCE`), found by a blocked brute-force XOR + popcount over the full pairwise matrix:
   ``O(N^2)`` 64-bit operations and ``O(N * block)`` memory (N = 10,000 is 50 million pairs, about a second);
4. a candidate pair is kept when the cosine similarity of the two images' 63 AC coefficients (the signature, i.e.
   the correlation of their low-passed thumbnails) is at least ``min_similarity`` (default
   :data:`DEFAULT_MIN_SIMILARITY`). Radiographs all look alike at 8x8 frequencies: on the 5,214 PneumoniaMNIST
   train+val images (upsampled to 256x256), 127,389 of 13.6 million pairs are within 12 bits, but only 34 also
   reach 0.97 (8 of them are known pixel-identical copies), while a 2 % crop keeps a similarity above 0.975;
5. **second stage, processed copies** (:func:`processed_copy_pairs`, :mod:`monai_transfer.data._similarity`): a
   gamma, contrast or window change, histogram equalisation, blur or sharpening moves the 64-bit hash and the AC
   signature, so each 2D image also keeps a 32x32 rank thumbnail (the same thumbnail, each pixel replaced by its rank:
   unchanged by any increasing intensity map). Each image's :data:`DEFAULT_NEIGHBOURS` most similar partners (8x8 rank
   descriptors of the partner as is, flipped and zoomed by 92.5 % at nine offsets: ``O(N^2)`` dot products in BLAS
   blocks) are candidates; a candidate pair is linked when its 32x32 rank thumbnails (or one flipped) correlate at
   :data:`DEFAULT_RANK_SIMILARITY` or more, or, aligned by the best of 57 small scale/rotation/shift warps, at
   :data:`DEFAULT_ALIGNED_SIMILARITY` or more (rotation by a few degrees, crops up to 10 %). The thresholds were
   chosen on the tuning half of ``scripts/bench/dedup_variants.py`` (real radiographs, eleven variant families,
   neighbouring slices as hard negatives), not on a data set;
6. **final verification** (:func:`verify_structure`, :func:`~monai_transfer.data._similarity.fine_residual`): at
   32x32 neighbouring slices of one volume (binary masks with a Dice overlap of 0.83-0.97) look like copies, and stage
   1 already links most of them. So every stage-1 and stage-2 pair (identical bytes or voxels excepted) is checked on
   64x64 rank thumbnails, also cached: a processed copy's ranks are an increasing function of its original's (up to
   blur and noise, averaged out by a 1-pixel blur of the residual) after the best small affine warp; a slice whose
   shape changed leaves a coherent residual. Pairs above :data:`DEFAULT_MAX_RESIDUAL` (chosen on the same tuning
   half) are dropped;
7. clusters are the connected components of the kept pairs (union-find), so a chain A~B~C is one cluster. Files with
   identical bytes (SHA-256) are always linked, even when they cannot be decoded. Every pair records the stage that
   linked it (:data:`STAGES`) and its similarity in that stage.

A backbone embedding was tried as the strict check and not kept: with the packaged EfficientNet-Lite0 at 224x224,
near-duplicates of 60 PneumoniaMNIST radiographs had an embedding cosine as low as 0.62 while unrelated pairs
reached 0.92 (the AC signature separates them: >= 0.975 against <= 0.97), at 0.3 s per image on a CPU.

Hashes, signatures and both rank thumbnails (about 7 kB per image) are cached by the SHA-256 of the file bytes in
``<cache_dir>/image_hashes_<method>.json``, with a ``(path, size, mtime, ctime, inode)`` index so that a second run
reads neither the pixels nor the bytes of an unchanged file (a file rewritten with its old size and mtime, ``cp -p``,
has a new ctime: it is digested again).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISDIR
from typing import Any

import numpy as np
import torch

from monai_transfer.data._groups import connected_components
from monai_transfer.data._similarity import (
    FINE_SIZE,
    STAGE_ALIGNED,
    STAGE_DIRECT,
    STAGE_FLIPPED,
    THUMB_SIZE,
    fine_residual,
    rank_candidates,
    rank_thumbnail,
    verify_pairs,
)
from monai_transfer.data._workers import CallItems, as_is

__all__ = [
    "DUPLICATE_MODES",
    "DEFAULT_MAX_DISTANCE",
    "DEFAULT_MIN_SIMILARITY",
    "DEFAULT_RANK_SIMILARITY",
    "DEFAULT_ALIGNED_SIMILARITY",
    "DEFAULT_NEIGHBOURS",
    "DEFAULT_MAX_RESIDUAL",
    "STAGES",
    "dct_features",
    "image_key",
    "HASH_METHOD",
    "default_cache_dir",
    "dct_hash",
    "hamming_distance",
    "HashResult",
    "hash_files",
    "near_duplicate_pairs",
    "processed_copy_pairs",
    "cluster_pairs",
    "DuplicateResult",
    "find_duplicates",
    "verify_structure",
]

logger = logging.getLogger(__name__)

#: values of the ``duplicates`` option of :func:`~monai_transfer.data.bundle_datalists` and the bundles
DUPLICATE_MODES = ("group", "warn", "fail", "off")
#: Hamming distance (of 64 bits) under which two images count as near-duplicates
DEFAULT_MAX_DISTANCE = 12
#: cosine similarity of the 63 AC DCT coefficients that a candidate pair must also reach
DEFAULT_MIN_SIMILARITY = 0.97
#: correlation of two 16x16 rank thumbnails (or of one with the other's flip) that links a second-stage candidate pair
#: as it is (processed copies: gamma, contrast, window, histogram equalisation, blur, sharpening, JPEG, noise, flip);
#: chosen on the variant benchmark (``scripts/bench/dedup_variants.py``), tuning half
DEFAULT_RANK_SIMILARITY = 0.995
#: best correlation over small scale/rotation/shift warps that links a candidate pair not linked as it is (a copy
#: rotated by a few degrees or cropped by up to 10 %); chosen on the same benchmark
DEFAULT_ALIGNED_SIMILARITY = 0.975
#: partners per image that the second stage's candidate search keeps (clusters larger than this are still joined
#: through their members' partners)
DEFAULT_NEIGHBOURS = 8
#: final verification: the largest share of one image's 64x64 rank variance that is not an increasing function of
#: the other's (after the best small affine warp) for which a hash or rank pair stays linked
#: (:func:`~monai_transfer.data._similarity.fine_residual`); neighbouring slices of a volume change shape and stay
#: above it. Chosen on the tuning half of ``scripts/bench/dedup_variants.py``
DEFAULT_MAX_RESIDUAL = 0.006
#: how a pair was linked, most certain first: identical bytes, identical voxels of a volume, the DCT hash and AC
#: signature (stage 1), the rank thumbnails as they are, one flipped, or aligned (stage 2)
STAGES = ("bytes", "voxels", "hash", STAGE_DIRECT, STAGE_FLIPPED, STAGE_ALIGNED)
#: name and version of the hash (part of the cache file name; change it when the recipe changes)
HASH_METHOD = "dct64v3"

_DCT_CACHE: dict[int, np.ndarray] = {}
_SIG_DIM = 63
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


#: warnings of the loader that say nothing about the hash (a constant image still has one); hidden during a hashing
#: pass only, by a filter that the calling thread sets and removes (never ``catch_warnings`` in the worker threads).
_HASHING_QUIET = r".*image is constant"


def default_cache_dir() -> Path:
    """``$MONAI_TRANSFER_CACHE`` when set, else ``~/.cache/monai_transfer``."""
    env = os.environ.get("MONAI_TRANSFER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "monai_transfer"


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``D`` (``D @ x`` is the DCT of the column ``x``)."""
    if n not in _DCT_CACHE:
        k = np.arange(n)[:, None]
        i = np.arange(n)[None, :]
        d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
        d[0] /= np.sqrt(2.0)
        _DCT_CACHE[n] = d
    return _DCT_CACHE[n]


def dct_features(image: np.ndarray | torch.Tensor, channel_first: bool = True) -> np.ndarray:
    """The 64 lowest DCT-II frequencies (8x8) of a 2D image resized to 32x32 (area averaging when shrinking).

    Args:
        image: ``(C, H, W)`` when ``channel_first`` (as :class:`LoadMedicalImage` returns), else ``(H, W)``; a
            single frame or slice (a size-1 third axis) counts as 2D. Channels are averaged after the resize;
            NaN/inf count as 0.
        channel_first: whether axis 0 is the channel axis; default True.

    Returns:
        ``(64,)`` float64 coefficients, the DC term first.

    Raises:
        ValueError: an image that is not 2D; the message gives the shape.
    """
    small = _thumbnail(image, channel_first)[0]
    d = _dct_matrix(32)
    return (d @ small @ d.T)[:8, :8].reshape(-1)


def _thumbnail(image: np.ndarray | torch.Tensor, channel_first: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The ``(32, 32)`` float64 thumbnail the hash and the rank thumbnail are taken from (see :func:`dct_features`)
    and the ``(64, 64)`` one of the final verification (made the same way)."""
    t = _channels(image, channel_first)
    if t.ndim != 3:
        raise ValueError(f"a DCT hash needs a 2D image, got spatial shape {tuple(t.shape[1:])}.")
    return _resized(t, THUMB_SIZE), _resized(t, FINE_SIZE)


def _resized(t: torch.Tensor, size: int) -> np.ndarray:
    """``(size, size)`` float64 channel mean of ``(C, H, W)``: area averaging, bilinear for smaller images."""
    if min(t.shape[1:]) >= size:  # area averaging: anti-aliased and fast (a bilinear antialias of 2048² is not)
        small = torch.nn.functional.adaptive_avg_pool2d(t, (size, size))
    else:
        small = torch.nn.functional.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    return torch.nan_to_num(small.double().mean(dim=0), nan=0.0, posinf=0.0, neginf=0.0).numpy()  # after pooling


def _channels(image: np.ndarray | torch.Tensor, channel_first: bool) -> torch.Tensor:
    """Float tensor ``(C, *spatial)`` (a channel axis added when ``channel_first`` is False), a size-1 third spatial
    axis (one frame or slice) squeezed."""
    t = image.detach() if isinstance(image, torch.Tensor) else torch.as_tensor(np.asarray(image))
    t = t.as_subclass(torch.Tensor).float()
    if not channel_first:
        t = t[None]
    if t.ndim == 4 and min(t.shape[1:]) == 1:
        t = t.squeeze(1 + int(np.argmin(t.shape[1:])))
    return t


def image_key(
    image: np.ndarray | torch.Tensor, channel_first: bool = True
) -> tuple[int, np.ndarray, np.ndarray, int, np.ndarray]:
    """``(hash, signature, rank_thumbnail, spatial_ndim, fine_rank_thumbnail)`` of a loaded image.

    2D: the 64-bit DCT hash, the 63 unit-norm AC coefficients, the ``(32, 32)`` uint8 rank thumbnail of the
    second stage (:func:`~monai_transfer.data._similarity.rank_thumbnail`) and the ``(64, 64)`` one of the final
    verification. Volumes (3D or more): the first 64 bits of the SHA-256 of the float32 voxel values, a zero signature
    and zero thumbnails (only identical voxels pair).
    """
    t = _channels(image, channel_first)
    if t.ndim == 3:
        small, fine = _thumbnail(t)
        d = _dct_matrix(32)
        value, sig = _hash_and_signature((d @ small @ d.T)[:8, :8].reshape(-1))
        return value, sig, rank_thumbnail(small), 2, rank_thumbnail(fine)
    if t.ndim < 3:
        raise ValueError(f"expected a 2D image or a volume, got spatial shape {tuple(t.shape[1:])}.")
    digest = hashlib.sha256(np.ascontiguousarray(t.numpy(), dtype="<f4").tobytes())
    digest.update(str(tuple(t.shape)).encode())
    thumb, fine = np.zeros((THUMB_SIZE, THUMB_SIZE), dtype=np.uint8), np.zeros((FINE_SIZE, FINE_SIZE), dtype=np.uint8)
    value = int.from_bytes(digest.digest()[:8], "big")
    return value, np.zeros(_SIG_DIM, dtype=np.float32), thumb, int(t.ndim - 1), fine


def _hash_and_signature(features: np.ndarray) -> tuple[int, np.ndarray]:
    """64-bit hash (coefficients above their median) and the unit-norm AC coefficients (63 float32, rounded to float16
    values: the precision the hash cache stores, so a first run, a cached run and a run without a cache pair alike)."""
    f = np.asarray(features, dtype=np.float64).reshape(-1)
    bits = (f > np.median(f)).astype(np.uint8)
    value = int(np.packbits(bits).view(">u8")[0])
    ac = f[1:]
    norm = float(np.linalg.norm(ac))
    sig = ac / norm if norm > 1e-12 * max(1.0, abs(float(f[0]))) else np.zeros_like(ac)
    return value, sig.astype(np.float16).astype(np.float32)


def dct_hash(image: np.ndarray | torch.Tensor, channel_first: bool = True) -> int:
    """64-bit perceptual hash (pHash) of a 2D image: its :func:`dct_features` above their median.

    Args:
        image, channel_first: see :func:`dct_features`.

    Returns:
        the hash as a Python int in ``[0, 2**64)``.

    Example::

        a = dct_hash(LoadMedicalImage()("a.png"))
        b = dct_hash(LoadMedicalImage()("a_resized.jpg"))
        int(hamming_distance(a, b))  # small for near-duplicates (0-4), about 20-40 for unrelated images
    """
    return _hash_and_signature(dct_features(image, channel_first))[0]


def hamming_distance(a: int | np.ndarray, b: int | np.ndarray) -> np.ndarray:
    """Number of differing bits between 64-bit hashes (broadcasts over arrays)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return _popcount64(x).astype(np.int64)


def _popcount64(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64, as uint8."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return _popcount_lut(x)


def _popcount_lut(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 by a byte lookup table (numpy < 2.0, e.g. the MONAI Label environment)."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return _POPCOUNT8[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1, dtype=np.uint8)


def _sha256_of(path: Path) -> str:
    """SHA-256 of a file's bytes; of a folder (a DICOM series): of its sorted file names and their digests."""
    from monai_transfer.utils.io import sha256_file

    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
            h.update(f.name.encode() + b"\0" + sha256_file(f).encode())
        return "dir:" + h.hexdigest()
    return sha256_file(path)


@dataclass
class HashResult:
    """Perceptual hashes of a list of files.

    Attributes:
        paths: the files, as given.
        hashes: ``(N,)`` uint64 64-bit DCT hashes; meaningless where ``ok`` is False.
        signatures: ``(N, 63)`` float32 unit-norm AC DCT coefficients (the strict check of candidate pairs).
        thumbnails: ``(N, 32, 32)`` uint8 rank thumbnails (the second stage, processed copies); zero for volumes.
        fine: ``(N, 64, 64)`` uint8 rank thumbnails of the final verification; zero for volumes.
        ndim: ``(N,)`` spatial dimensions of each decoded image (2, or 3 for volumes; 0 when not decoded).
        ok: ``(N,)`` bool, the file was decoded and hashed.
        sha256: content digest per file (None when the file could not be read at all).
        errors: index -> message for files that could not be hashed (unreadable, not an image, ...).
        n_cached: hashes taken from the cache.
        seconds: wall time of the pass.
    """

    paths: list[str]
    hashes: np.ndarray
    signatures: np.ndarray
    thumbnails: np.ndarray
    ndim: np.ndarray
    ok: np.ndarray
    sha256: list[str | None]
    fine: np.ndarray = field(default_factory=lambda: np.zeros((0, FINE_SIZE, FINE_SIZE), dtype=np.uint8))
    errors: dict[int, str] = field(default_factory=dict)
    n_cached: int = 0
    seconds: float = 0.0


class _HashCache:
    """JSON cache: content digest -> hash and signature, plus ``abs path -> [size, mtime_ns, ctime_ns, inode,
    digest]``.

    The path index lets a second run skip reading the bytes; the content digest is the truth. A file whose content
    changed is digested again even when its size and mtime were kept (``cp -p``, ``rsync -t``): writing it changes
    its ctime (which no tool can set back) or, replaced by a new file, its inode. A cache file of another shape or
    version (valid JSON included, e.g. ``[]``) is ignored with a warning and rewritten, like a truncated one.
    """

    def __init__(self, cache_dir: Path | None):
        self.path = None if cache_dir is None else Path(cache_dir) / f"image_hashes_{HASH_METHOD}.json"
        self.stat: dict[str, list[Any]] = {}
        self.entries: dict[str, str] = {}
        self.dirty = False
        self.lock = threading.Lock()
        if self.path is not None and self.path.is_file():
            try:
                self.stat, self.entries = _read_cache(self.path)
            except (OSError, ValueError) as e:
                logger.warning("ignoring unreadable hash cache %s (%s); it will be rewritten", self.path, e)

    @staticmethod
    def file_key(path: Path) -> tuple[str, list[int]] | None:
        """``(resolved path, [size, mtime_ns, ctime_ns, inode])`` of a file (one ``stat``, one ``resolve``); None for
        a folder (series folders are re-digested each time: rare in 2D sets)."""
        st = path.stat()
        if S_ISDIR(st.st_mode):
            return None
        return str(path.resolve()), [int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns), int(st.st_ino)]

    def known_digest(self, path: Path, key: tuple[str, list[int]] | None = None) -> str | None:
        """The digest recorded for this file when its size, times and inode are unchanged (no byte is read);
        ``key`` is its :meth:`file_key` when already known."""
        key = self.file_key(path) if key is None else key
        if key is None:
            return None
        with self.lock:
            known = self.stat.get(key[0])
        return str(known[4]) if known is not None and list(known[:4]) == key[1] else None

    def digest(self, path: Path) -> tuple[str, tuple[str, list[int]] | None]:
        """The content digest of ``path`` (from the path index when unchanged) and the index entry that
        :meth:`record` adds (None when it is known already, or for a folder). Recording is left to the caller: the
        digest may come from a worker process, whose copy of the index is lost."""
        key = self.file_key(path)
        if key is None:
            return _sha256_of(path), None
        known = self.known_digest(path, key)
        if known is not None:
            return known, None
        return _sha256_of(path), key

    def record(self, key: tuple[str, list[int]], digest: str) -> None:
        """Add ``path -> [size, mtime_ns, ctime_ns, inode, digest]`` to the path index (``key`` from :meth:`digest`)."""
        with self.lock:
            self.stat[key[0]] = [*key[1], digest]
            self.dirty = True

    def get(self, digest: str) -> tuple[int, np.ndarray, np.ndarray, int, np.ndarray] | None:
        with self.lock:
            v = self.entries.get(digest)
        if v is None:
            return None
        try:
            h, nd, sig, thumb, fine = v.split(":", 4)
            arr = np.frombuffer(base64.b64decode(sig), dtype="<f2").astype(np.float32)
            small = np.frombuffer(base64.b64decode(thumb), dtype=np.uint8)
            big = np.frombuffer(base64.b64decode(fine), dtype=np.uint8)
        except ValueError:
            return None
        if arr.shape != (_SIG_DIM,) or small.size != THUMB_SIZE**2 or big.size != FINE_SIZE**2:
            return None
        return int(h, 16), arr, small.reshape(THUMB_SIZE, THUMB_SIZE), int(nd), big.reshape(FINE_SIZE, FINE_SIZE)

    def put(
        self, digest: str, value: int, signature: np.ndarray, thumb: np.ndarray, ndim: int, fine: np.ndarray
    ) -> None:
        enc = base64.b64encode(np.asarray(signature, dtype="<f2").tobytes()).decode("ascii")
        small, big = (
            base64.b64encode(np.ascontiguousarray(x, dtype=np.uint8).tobytes()).decode() for x in (thumb, fine)
        )
        with self.lock:
            self.entries[digest] = f"{value:016x}:{int(ndim)}:{enc}:{small}:{big}"
            self.dirty = True

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        from monai_transfer.utils.io import atomic_write_text

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            cache = {"format": _CACHE_FORMAT, "method": HASH_METHOD, "stat": self.stat, "hashes": self.entries}
            text = json.dumps(cache, separators=(",", ":"))
            atomic_write_text(self.path, text)
        except OSError as e:
            logger.warning("could not write the hash cache %s (%s); hashes will be recomputed next time", self.path, e)


#: layout of the cache file (``stat`` entries ``[size, mtime_ns, ctime_ns, inode, digest]``, ``hashes`` entries
#: ``hash:ndim:signature:rank_thumbnail:fine_rank_thumbnail``); other layouts are rebuilt. 3: the rank thumbnail was
#: added; 4: the 64x64 fine rank thumbnail of the final verification.
_CACHE_FORMAT = 4


def _read_cache(path: Path) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """The ``stat`` index and ``hashes`` of a cache file written by this version.

    Raises:
        ValueError: not JSON, or JSON of another shape, format or hash method (the message says which).
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"a JSON {type(data).__name__}, not the cache's object")
    if data.get("format") != _CACHE_FORMAT or data.get("method") != HASH_METHOD:
        raise ValueError(
            f"written by another version (format {data.get('format')!r}, method {data.get('method')!r}; this one "
            f"writes format {_CACHE_FORMAT}, method {HASH_METHOD!r})"
        )
    stat, hashes = data.get("stat"), data.get("hashes")
    if not isinstance(stat, dict) or not isinstance(hashes, dict):
        raise ValueError("'stat' and 'hashes' must be JSON objects")
    stat = {
        k: v
        for k, v in stat.items()
        if isinstance(v, list) and len(v) == 5 and all(isinstance(x, int) for x in v[:4]) and isinstance(v[4], str)
    }
    return stat, {k: v for k, v in hashes.items() if isinstance(v, str)}


def hash_files(
    paths: Sequence[str | os.PathLike],
    cache_dir: str | os.PathLike | None = "default",
    loader: Callable[[Any], Any] | None = None,
    num_workers: int | None = None,
    progress: bool = False,
) -> HashResult:
    """DCT hashes, signatures and rank thumbnails of image files (see the module docstring), cached by file content.

    A file that cannot be read or decoded is not an error here: it is recorded in ``errors`` (and ``ok`` is False)
    so that an audit can list every unreadable file at once.

    Args:
        paths: image files or DICOM series folders.
        cache_dir: folder of the hash cache; ``"default"`` is :func:`default_cache_dir`, None disables caching.
        loader: callable path -> channel-first image; default ``LoadMedicalImage(nan_policy="ignore")``.
        num_workers: parallel workers, default ``min(4, os.cpu_count())``; 0 runs inline. With
            :data:`PROCESS_MIN_FILES` files or :data:`PROCESS_MIN_BYTES` to hash (on Linux) they are worker
            processes (the hash and rank thumbnails hold the GIL), else threads; ``loader`` runs in them as it is
            (inherited, never pickled).
        progress: show a tqdm progress bar for the files not found in the cache.

    Returns:
        a :class:`HashResult`.
    """
    t0 = time.perf_counter()
    if loader is None:
        from monai_transfer.transforms.io.array import LoadMedicalImage

        loader = LoadMedicalImage(nan_policy="ignore")
    cache = _HashCache(None if cache_dir is None else (default_cache_dir() if cache_dir == "default" else cache_dir))
    n = len(paths)
    res = HashResult(
        paths=[str(p) for p in paths],
        hashes=np.zeros(n, dtype=np.uint64),
        signatures=np.zeros((n, _SIG_DIM), dtype=np.float32),
        thumbnails=np.zeros((n, THUMB_SIZE, THUMB_SIZE), dtype=np.uint8),
        fine=np.zeros((n, FINE_SIZE, FINE_SIZE), dtype=np.uint8),
        ndim=np.zeros(n, dtype=np.int64),
        ok=np.zeros(n, dtype=bool),
        sha256=[None] * n,
    )
    todo = _from_cache(res, cache)
    workers = min(4, os.cpu_count() or 1) if num_workers is None else int(num_workers)
    _hash_uncached(res, list(paths), todo, cache, (loader, workers, progress))
    cache.save()
    res.errors = dict(sorted(res.errors.items()))
    res.seconds = time.perf_counter() - t0
    return res


def _store(res: HashResult, i: int, value: tuple[int, np.ndarray, np.ndarray, int, np.ndarray]) -> None:
    res.hashes[i], res.signatures[i], res.thumbnails[i], res.ndim[i], res.fine[i] = np.uint64(value[0]), *value[1:]
    res.ok[i] = True


def _from_cache(res: HashResult, cache: _HashCache) -> list[int]:
    """Fill ``res`` from the cache for the files whose size, times and inode are recorded (no byte read); returns the
    indices left to the worker threads (files that cannot be found go to ``res.errors``)."""
    if not cache.stat:  # an empty cache: every file is digested (and stat'ed) by the worker threads
        return list(range(len(res.paths)))
    todo = []
    for i, p in enumerate(res.paths):
        try:
            res.sha256[i] = cache.known_digest(Path(p))
        except OSError as e:
            res.errors[i] = f"cannot read '{p}': {e}"
            continue
        cached = None if res.sha256[i] is None else cache.get(str(res.sha256[i]))
        if cached is not None:
            _store(res, i, cached)
            res.n_cached += 1
        else:
            todo.append(i)
    return todo


def _progress_bar(total: int, progress: bool) -> Any:
    if not (progress and total):
        return None
    from monai.utils import optional_import

    tqdm, has_tqdm = optional_import("tqdm", name="tqdm")
    return tqdm(total=total, desc="hashing images (near-duplicate check)", unit="img") if has_tqdm else None


def _hash_uncached(
    res: HashResult, paths: list[Any], todo: list[int], cache: _HashCache, how: tuple[Callable[[Any], Any], int, bool]
) -> None:
    """Load (``paths`` as given) and hash the files ``todo`` into ``res`` and the cache; ``how`` is ``(loader,
    workers, progress)``: worker processes where they repay their start (:func:`_worth_processes`), else threads."""
    loader, workers, progress = how

    def work(i: int) -> tuple[int, str | None, Any, tuple[int, np.ndarray, np.ndarray, int] | None, str | bool]:
        """``(i, digest, index entry, value, how)``: ``how`` is True when the value came from the cache, else the
        error or ""."""
        # no warnings.catch_warnings() here: it is not thread-safe and left an "ignore" filter behind
        try:  # the bytes are digested here, in the workers, and the content looked up again
            digest, entry = (res.sha256[i], None) if res.sha256[i] else cache.digest(Path(paths[i]))
        except OSError as e:  # also a file that cannot be found (not checked before with an empty cache)
            return i, None, None, None, f"cannot read '{paths[i]}': {e}"
        cached = cache.get(digest)
        if cached is not None:
            return i, digest, entry, cached, True
        try:
            return i, digest, entry, image_key(loader(paths[i])), ""
        except Exception as e:  # any decoder failure is recorded, naming the file
            msg = str(e) if str(paths[i]) in str(e) else f"cannot load '{paths[i]}': {type(e).__name__}: {e}"
            return i, digest, entry, None, msg

    bar = _progress_bar(len(todo), progress)
    with warnings.catch_warnings():  # set and restored by the calling thread alone (never in the worker threads)
        warnings.filterwarnings("ignore", message=_HASHING_QUIET, category=UserWarning)  # the hash is still valid
        with _worker_results(work, todo, workers, _worth_processes([paths[i] for i in todo])) as results:
            for i, digest, entry, value, how_ in results:
                res.sha256[i] = digest
                if entry is not None:
                    cache.record(entry, str(digest))
                if value is None:
                    res.errors[i] = str(how_)
                else:
                    _store(res, i, value)
                    if how_ is True:
                        res.n_cached += 1
                    else:
                        cache.put(str(digest), *value)
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()


#: uncached files from which the hash pass runs in ``num_workers`` worker processes (a ``torch`` ``DataLoader``,
#: started by ``fork`` where the platform has it) instead of threads: decoding releases the GIL but the hash and the
#: rank thumbnails (many small numpy/torch calls) do not, so threads did not run them in parallel (2 cores: 1.0 s of
#: hashing per 1,400 small PNGs with one thread or two). Starting the processes costs about 0.07 s, which 256 small
#: files or :data:`PROCESS_MIN_BYTES` of files (a few large DICOM films, about 30 ms each) repay.
PROCESS_MIN_FILES = 256
#: bytes of uncached files from which the hash pass runs in worker processes, however few the files
PROCESS_MIN_BYTES = 32 * 2**20
_CHUNK = 16


def _worth_processes(paths: Sequence[Any]) -> bool:
    """Whether hashing ``paths`` in worker processes repays their start (:data:`PROCESS_MIN_FILES`,
    :data:`PROCESS_MIN_BYTES`; a DICOM series folder counts its files' bytes)."""
    if len(paths) >= PROCESS_MIN_FILES:
        return True
    total = 0
    for p in paths:
        try:
            q = Path(p)
            total += sum(f.stat().st_size for f in q.iterdir()) if q.is_dir() else q.stat().st_size
        except OSError:  # reported by the pass itself
            continue
        if total >= PROCESS_MIN_BYTES:
            return True
    return False


@contextlib.contextmanager
def _worker_results(fn: Callable[[Any], Any], items: Sequence[Any], workers: int, processes: bool) -> Any:
    """An iterator of ``fn(item)`` in the order of ``items``: ``workers`` processes when ``processes`` and ``fork`` is
    available (Linux; the ``fn`` closure is inherited, not pickled) and the caller is not a daemonic process, else
    ``workers`` threads, else inline (``workers`` 0)."""
    import multiprocessing

    if workers > 0 and processes and len(items) > 1 and sys.platform.startswith("linux"):
        # a daemonic process (e.g. a DataLoader worker itself) may not start children: threads there
        if "fork" in multiprocessing.get_all_start_methods() and not multiprocessing.current_process().daemon:
            loader = torch.utils.data.DataLoader(
                CallItems(fn, items), batch_size=max(1, min(_CHUNK, len(items) // (4 * workers))), num_workers=workers,
                collate_fn=as_is,
                multiprocessing_context="fork", prefetch_factor=4,
            )  # fmt: skip
            yield itertools.chain.from_iterable(loader)  # chunks: one inter-process message per chunk of files
            return
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 0 and len(items) > 1 else None
    try:
        yield pool.map(fn, items) if pool is not None else map(fn, items)
    finally:
        if pool is not None:
            pool.shutdown()


def near_duplicate_pairs(
    hashes: np.ndarray,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    valid: np.ndarray | None = None,
    signatures: np.ndarray | None = None,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
    block: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs ``i < j`` whose hashes differ in at most ``max_distance`` bits (and, with ``signatures``, whose
    signatures have a cosine similarity of at least ``min_similarity``).

    Blocked brute force over the full pairwise matrix: ``O(N^2)`` XOR + popcount operations (N = 10,000 is 50 million
    pairs, about a second), ``O(block * N)`` memory with ``block * N`` capped at 2^24; the cosine is computed for the
    candidate pairs only.

    Args:
        hashes: ``(N,)`` uint64 hashes.
        max_distance: largest Hamming distance counted, ``0..64``.
        valid: optional ``(N,)`` bool mask; invalid entries are never paired.
        signatures: optional ``(N, D)`` unit-norm vectors for the strict check.
        min_similarity: cosine threshold of the strict check.
        block: rows per block.

    Returns:
        ``(pairs, similarity)``: ``(P, 3)`` int64 ``(i, j, distance)`` sorted by ``(i, j)`` and ``(P,)`` float cosine
        similarities (1.0 without ``signatures``).

    Raises:
        ValueError: ``max_distance`` outside ``0..64``.
    """
    if not 0 <= int(max_distance) <= 64:
        raise ValueError(f"max_distance must be in 0..64, got {max_distance}.")
    h = np.asarray(hashes, dtype=np.uint64).reshape(-1)
    idx = np.arange(len(h)) if valid is None else np.flatnonzero(np.asarray(valid, dtype=bool))
    hv = h[idx]
    out = []
    block = max(1, min(int(block), (1 << 24) // max(1, len(hv))))  # at most ~16M pairs (200 MB) per block
    for start in range(0, len(hv), block):
        rows = hv[start : start + block]
        d = _popcount64(np.bitwise_xor(rows[:, None], hv[None, start:]))  # columns >= start: the upper triangle
        r, c = np.nonzero(d <= max_distance)
        keep = c > r
        r, c = r[keep], c[keep]
        out.append(np.stack([idx[r + start], idx[c + start], d[r, c]], axis=1))
    pairs = np.concatenate(out).astype(np.int64) if out else np.zeros((0, 3), dtype=np.int64)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    if signatures is None:
        return pairs, np.ones(len(pairs))
    sig = np.asarray(signatures, dtype=np.float64)
    sim = np.einsum("pd,pd->p", sig[pairs[:, 0]], sig[pairs[:, 1]]) if len(pairs) else np.zeros(0)
    keep = sim >= float(min_similarity)
    return pairs[keep], sim[keep]


def processed_copy_pairs(
    hashing: HashResult,
    rank_similarity: float = DEFAULT_RANK_SIMILARITY,
    aligned_similarity: float = DEFAULT_ALIGNED_SIMILARITY,
    neighbours: int = DEFAULT_NEIGHBOURS,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Second stage: pairs of 2D images whose rank thumbnails match (see :mod:`monai_transfer.data._similarity`).

    Args:
        hashing: the :class:`HashResult` (only its thumbnails are used: no image is read).
        rank_similarity: correlation that links a candidate pair as it is (or flipped).
        aligned_similarity: correlation after the best small warp that links the others.
        neighbours: partners per image considered.

    Returns:
        ``(pairs, similarity, stages)``: ``(P, 3)`` ``(i, j, Hamming distance)`` sorted by ``(i, j)``, the linking
        correlation and the stage of each pair.
    """
    valid = hashing.ok & (hashing.ndim == 2)
    cand = rank_candidates(hashing.thumbnails, valid, neighbours=neighbours)
    keep, sim, stages = verify_pairs(hashing.thumbnails, cand, rank_similarity, aligned_similarity)
    cand = cand[keep]
    dist = hamming_distance(hashing.hashes[cand[:, 0]], hashing.hashes[cand[:, 1]]) if len(cand) else np.zeros(0)
    pairs = np.concatenate([cand, np.asarray(dist, dtype=np.int64).reshape(-1, 1)], axis=1)
    return pairs, sim[keep], [st for st, k in zip(stages, keep) if k]


def cluster_pairs(n: int, pairs: np.ndarray | Sequence[Sequence[int]]) -> list[list[int]]:
    """Connected components (union-find) of ``n`` items linked by ``pairs``; only clusters of two or more.

    Returns:
        clusters as sorted index lists, ordered by their first index.
    """
    return [c for c in connected_components(n, ((p[0], p[1]) for p in pairs)) if len(c) > 1]


@dataclass
class DuplicateResult:
    """Near-duplicate clusters of a list of files.

    Attributes:
        hashing: the :class:`HashResult` of the files.
        max_distance: the Hamming threshold used.
        min_similarity: the cosine threshold used.
        pairs: ``(P, 3)`` ``(i, j, distance)`` for every linked pair (content-identical files: distance 0).
        similarity: ``(P,)`` similarity of each pair in its stage: the AC-signature cosine (``"hash"``), the rank
            thumbnail correlation (``"rank..."``), 1.0 for identical bytes or voxels.
        clusters: index lists of two or more files each.
        stages: ``(P,)`` how each pair was linked, one of :data:`STAGES`.
        rank_similarity: the second stage's direct threshold (None: second stage off).
        aligned_similarity: the second stage's threshold after alignment.
        max_residual: the final verification's threshold (None: off).
        n_rejected: stage-1 and stage-2 pairs the final verification did not keep.
    """

    hashing: HashResult
    max_distance: int
    min_similarity: float
    pairs: np.ndarray
    similarity: np.ndarray
    clusters: list[list[int]]
    stages: list[str] = field(default_factory=list)
    rank_similarity: float | None = None
    aligned_similarity: float | None = None
    max_residual: float | None = None
    n_rejected: int = 0

    @property
    def paths(self) -> list[str]:
        """The files, in input order."""
        return self.hashing.paths

    def cluster_of(self) -> np.ndarray:
        """``(N,)`` cluster index per file, -1 for files without a near-duplicate."""
        out = np.full(len(self.paths), -1, dtype=np.int64)
        for c, members in enumerate(self.clusters):
            out[members] = c
        return out

    def subset(self, index: Sequence[int]) -> DuplicateResult:
        """The result restricted to the files ``index`` (renumbered in that order); pairs leaving the subset drop."""
        index = [int(i) for i in index]
        new_of = {old: new for new, old in enumerate(index)}
        h = self.hashing
        hashing = HashResult(
            paths=[h.paths[i] for i in index],
            hashes=h.hashes[index],
            signatures=h.signatures[index],
            thumbnails=h.thumbnails[index],
            fine=h.fine[index],
            ndim=h.ndim[index],
            ok=h.ok[index],
            sha256=[h.sha256[i] for i in index],
            errors={new_of[i]: m for i, m in h.errors.items() if i in new_of},
            n_cached=h.n_cached,
            seconds=h.seconds,
        )
        keep = [k for k, (a, b, _) in enumerate(self.pairs) if int(a) in new_of and int(b) in new_of]
        pairs = np.array(
            [(new_of[int(self.pairs[k, 0])], new_of[int(self.pairs[k, 1])], int(self.pairs[k, 2])) for k in keep],
            dtype=np.int64,
        ).reshape(-1, 3)
        sw = pairs[:, 0] > pairs[:, 1]
        pairs[sw, 0], pairs[sw, 1] = pairs[sw, 1], pairs[sw, 0]
        return DuplicateResult(
            hashing=hashing,
            max_distance=self.max_distance,
            min_similarity=self.min_similarity,
            pairs=pairs,
            similarity=self.similarity[keep],
            clusters=cluster_pairs(len(index), pairs),
            stages=[self.stages[k] for k in keep] if self.stages else [],
            rank_similarity=self.rank_similarity,
            aligned_similarity=self.aligned_similarity,
            max_residual=self.max_residual,
        )

    def summary(self) -> dict[str, Any]:
        """Counts for reports (JSON-friendly)."""
        return {
            "method": HASH_METHOD,
            "max_distance": int(self.max_distance),
            "min_similarity": float(self.min_similarity),
            "rank_similarity": self.rank_similarity,
            "aligned_similarity": self.aligned_similarity,
            "max_residual": self.max_residual,
            "n_rejected_by_verification": int(self.n_rejected),
            "n_files": len(self.paths),
            "n_hashed": int(self.hashing.ok.sum()),
            "n_unreadable": len(self.hashing.errors),
            "n_pairs": int(len(self.pairs)),
            "pairs_per_stage": {st: self.stages.count(st) for st in STAGES if st in self.stages},
            "n_clusters": len(self.clusters),
            "n_files_in_clusters": int(sum(len(c) for c in self.clusters)),
            "largest_cluster": max((len(c) for c in self.clusters), default=0),
            "n_cached": int(self.hashing.n_cached),
            "hash_seconds": round(float(self.hashing.seconds), 3),
        }


def find_duplicates(
    paths: Sequence[str | os.PathLike],
    max_distance: int = DEFAULT_MAX_DISTANCE,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
    cache_dir: str | os.PathLike | None = "default",
    loader: Callable[[Any], Any] | None = None,
    num_workers: int | None = None,
    progress: bool = False,
    rank_similarity: float | None = DEFAULT_RANK_SIMILARITY,
    aligned_similarity: float = DEFAULT_ALIGNED_SIMILARITY,
    neighbours: int = DEFAULT_NEIGHBOURS,
    max_residual: float | None = DEFAULT_MAX_RESIDUAL,
) -> DuplicateResult:
    """Hash ``paths`` (:func:`hash_files`), pair them in two stages and cluster the pairs.

    Stage 1: two files are near-duplicates when their 64-bit hashes differ in at most ``max_distance`` bits **and**
    the cosine similarity of their 63 low-frequency AC DCT coefficients is at least ``min_similarity`` (re-encoded,
    resized, brightened, slightly cropped copies). Stage 2 (:func:`processed_copy_pairs`): copies processed with an
    increasing intensity map, blur, sharpening, heavy JPEG or noise, flipped, rotated by a few degrees or cropped by up
    to 10 %, matched on their rank thumbnails. Files with identical bytes are paired (distance 0) even when they cannot
    be decoded.

    Args:
        paths: image files or DICOM series folders.
        max_distance: Hamming threshold, default :data:`DEFAULT_MAX_DISTANCE` (of 64 bits).
        min_similarity: cosine threshold, default :data:`DEFAULT_MIN_SIMILARITY`.
        cache_dir, loader, num_workers, progress: see :func:`hash_files`.
        rank_similarity: stage 2's direct threshold, default :data:`DEFAULT_RANK_SIMILARITY`; None turns stage 2 off.
        aligned_similarity: stage 2's threshold after alignment, default :data:`DEFAULT_ALIGNED_SIMILARITY`.
        neighbours: stage 2's partners per image, default :data:`DEFAULT_NEIGHBOURS`.
        max_residual: final verification of every stage-1 and stage-2 pair (:func:`verify_structure`), default
            :data:`DEFAULT_MAX_RESIDUAL`; None turns it off (identical bytes or voxels are never verified).

    Example::

        res = find_duplicates(sorted(glob.glob("/data/mri/*/*.jpg")), cache_dir=None)
        for c in res.clusters:
            print([res.paths[i] for i in c], [res.stages[k] for k, p in enumerate(res.pairs) if p[0] in c])
    """
    hashing = hash_files(paths, cache_dir=cache_dir, loader=loader, num_workers=num_workers, progress=progress)
    stage2 = None if rank_similarity is None else (rank_similarity, aligned_similarity, neighbours)
    pairs, sim, stages = _merge_pairs(_found_pairs(hashing, max_distance, min_similarity, stage2))
    keep = verify_structure(hashing, pairs, stages, max_residual)
    pairs, sim, stages = pairs[keep], sim[keep], [st for st, k in zip(stages, keep) if k]
    return DuplicateResult(
        hashing=hashing,
        max_distance=int(max_distance),
        min_similarity=float(min_similarity),
        pairs=pairs,
        similarity=sim,
        clusters=cluster_pairs(len(paths), pairs),
        stages=stages,
        rank_similarity=None if rank_similarity is None else float(rank_similarity),
        aligned_similarity=None if rank_similarity is None else float(aligned_similarity),
        max_residual=None if max_residual is None else float(max_residual),
        n_rejected=int((~keep).sum()),
    )


def _found_pairs(
    hashing: HashResult, max_distance: int, min_similarity: float, stage2: tuple[float, float, int] | None
) -> list[tuple[np.ndarray, np.ndarray, list[str]]]:
    """Identical files, stage-1 pairs and (``stage2``: its two thresholds and neighbours; None: off) stage-2 pairs."""
    valid = hashing.ok & (hashing.ndim == 2)
    found = [_identical_pairs(hashing)]
    pairs, sim = near_duplicate_pairs(
        hashing.hashes, max_distance, valid=valid, signatures=hashing.signatures, min_similarity=min_similarity
    )
    found.append((pairs, sim, ["hash"] * len(pairs)))
    if stage2 is not None:
        found.append(processed_copy_pairs(hashing, *stage2))
    return found


def verify_structure(
    hashing: HashResult, pairs: np.ndarray, stages: Sequence[str], max_residual: float | None = DEFAULT_MAX_RESIDUAL
) -> np.ndarray:
    """``(P,)`` bool: the pairs kept by the final verification. Pairs of identical bytes or voxels are kept; the
    others (stage 1 and stage 2) when their fine residual
    (:func:`~monai_transfer.data._similarity.fine_residual`) is at most ``max_residual`` (None: all kept): first as
    they are (or flipped), then, for the rest, after the best affine warp, except a pair whose two files are already
    joined by kept pairs (the clusters are the same; the costly alignment is skipped and the pair not listed).

    Args:
        hashing: the :class:`HashResult` (its fine thumbnails; no image is read).
        pairs: ``(P, 2+)`` index pairs.
        stages: the stage of each pair (:data:`STAGES`).
        max_residual: the largest residual kept.
    """
    keep = np.ones(len(pairs), dtype=bool)
    todo = np.flatnonzero([st not in ("bytes", "voxels") for st in stages])
    if max_residual is None or not len(todo):
        return keep
    pairs = np.asarray(pairs)[:, :2]
    keep[todo] = fine_residual(hashing.fine, pairs[todo], align=False) <= float(max_residual)
    parent = list(range(len(hashing.paths)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs[keep]:
        parent[root(int(i))] = root(int(j))
    rest = todo[~keep[todo]]
    for start in range(0, len(rest), 64):  # pairs whose files are already joined need no (costly) alignment
        sel = [k for k in rest[start : start + 64] if root(int(pairs[k, 0])) != root(int(pairs[k, 1]))]
        if sel:
            ok = fine_residual(hashing.fine, pairs[sel], skip_below=float(max_residual)) <= float(max_residual)
            keep[np.asarray(sel)[ok]] = True
            for i, j in pairs[np.asarray(sel)[ok]]:
                parent[root(int(i))] = root(int(j))
    return keep


def _identical_pairs(hashing: HashResult) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pairs of files with identical bytes (``"bytes"``) or volumes with identical voxels (``"voxels"``)."""
    same: dict[tuple[str, Any], list[int]] = {}
    for i, d in enumerate(hashing.sha256):
        if d is not None:
            same.setdefault(("bytes", d), []).append(i)
        if hashing.ok[i] and hashing.ndim[i] > 2:
            same.setdefault(("voxels", int(hashing.hashes[i])), []).append(i)
    links = sorted({(g[0], j, kind) for (kind, _), g in same.items() for j in g[1:]})
    pairs = np.asarray([(a, b, 0) for a, b, _ in links], dtype=np.int64).reshape(-1, 3)
    return pairs, np.ones(len(links)), [kind for _, _, kind in links]


def _merge_pairs(found: list[tuple[np.ndarray, np.ndarray, list[str]]]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One row per ``(i, j)``: the first stage in ``found`` that linked it; sorted by ``(i, j)``."""
    rows: dict[tuple[int, int], tuple[int, float, str]] = {}
    for pairs, sim, stages in found:
        for (a, b, d), s, st in zip(np.asarray(pairs).reshape(-1, 3), sim, stages):
            rows.setdefault((int(a), int(b)), (int(d), float(s), st))
    keys = sorted(rows)
    pairs = np.asarray([(a, b, rows[a, b][0]) for a, b in keys], dtype=np.int64).reshape(-1, 3)
    return pairs, np.asarray([rows[k][1] for k in keys], dtype=np.float64), [rows[k][2] for k in keys]
