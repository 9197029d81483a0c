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
"""Second stage of the near-duplicate finder: copies that were *processed* (gamma, contrast, histogram
equalisation, another window, blur, sharpening, heavy JPEG, noise, a small rotation or crop, a horizontal flip).

Every 2D image keeps a 32x32 **rank thumbnail**: the 32x32 area-averaged thumbnail that the DCT hash uses, each
pixel replaced by its rank (ties averaged) scaled to 0..255. A rank is unchanged by any increasing intensity map
(gamma, contrast stretch, window, histogram equalisation), and at 32x32 blur, sharpening, JPEG blocks and noise are
averaged away. It is stored (1 KiB) in the hash cache, so pairing reads no image.

1. **Candidates** (:func:`rank_candidates`): each image's 8x8 rank descriptor (unit-norm, mean-free) is compared
   with every other image's 8x8 descriptors of the image itself, its horizontal flip and nine 92.5 % zooms (a 3x3
   grid of offsets, standing in for crops up to 10 %); each image keeps its ``neighbours`` best partners at or above
   ``floor``. Cost: ``O(N^2 * 11 * 64)`` multiply-adds in BLAS blocks of ``block`` rows (``O(block * N)`` memory),
   quadratic like the Hamming stage but a few seconds for 10,000 images; the pairs kept are ``O(N * neighbours)``.
2. **Verification** (:func:`verify_pairs`): the Pearson correlation of the two 32x32 rank thumbnails (also against
   the flipped partner); pairs below ``direct`` are aligned: one thumbnail is warped by a small grid of scales
   (100, 95, 90 %), rotations (-3, 0, 3 degrees) and shifts (57 maps), in both directions, and the best correlation
   with the other at 16x16 kept (coarser, so that the grid's steps are forgiven); pairs reaching 0.95 also try 90
   maps between those steps.
   ``O(pairs * (114 + 180) * 256)`` samples at most, only for the candidate pairs. Measured on 10,428 real
   radiographs (one torch thread, busy 2-core machine): candidates 11 s, the whole second stage 112 s for 75,447
   candidate pairs; the first stage takes about a second. Pairs are not cached (thumbnails are): each run pays it.
3. **Final verification** (:func:`fine_residual`, called by ``duplicates.verify_structure`` for every stage-1 and
   stage-2 pair): on 64x64 rank thumbnails (4 KiB, also cached), the share of one image's rank variance that is not
   an increasing function of the other's, blurred by one pixel so that noise averages out while a moved edge does
   not, as they are, flipped, or after the best affine warp (a grid search, then 20 gradient steps). Neighbouring
   slices of a volume, whose shape changes, stay above the threshold; processed copies fall below it.

Imports nothing of the project (``duplicates.py`` calls it).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "THUMB_SIZE",
    "FINE_SIZE",
    "rank_thumbnail",
    "fine_residual",
    "descriptors",
    "rank_candidates",
    "pair_scores",
    "verify_pairs",
    "STAGE_DIRECT",
    "STAGE_FLIPPED",
    "STAGE_ALIGNED",
]

#: side of the stored rank thumbnail
THUMB_SIZE = 32
#: side of the stored fine rank thumbnail of the final verification (:func:`fine_residual`)
FINE_SIZE = 64
#: rank bins of the residual (:func:`fine_residual`)
_BINS = 32
#: pixels of the 64x64 border left out of the residual (a rotated copy's filled corners, a crop's cut edges)
_BORDER = 6
#: steps of the gradient alignment of the final verification
_ALIGN_STEPS = 20
#: how a verified pair matched (see :func:`verify_pairs`)
STAGE_DIRECT, STAGE_FLIPPED, STAGE_ALIGNED = "rank", "rank-flipped", "rank-aligned"
_ZOOM = 0.925
#: coarse alignment scores from which the finer warp grid is also tried
REFINE_FROM = 0.95


def rank_thumbnail(small: np.ndarray) -> np.ndarray:
    """uint8 ranks (ties averaged, scaled to 0..255) of a square thumbnail (``(32, 32)`` or the ``(64, 64)`` fine
    one), same shape; zeros when constant."""
    small = np.asarray(small, dtype=np.float64)
    v = small.reshape(-1)
    order = np.argsort(v, kind="stable")
    s = v[order]
    if s[-1] <= s[0]:
        return np.zeros(small.shape, dtype=np.uint8)
    # a tie group spanning sorted positions [start, end) gets (start + end) / 2n: the mean of its "left" and "right"
    # insertion points, in one sort instead of two binary searches per pixel
    first = np.empty(v.size, dtype=bool)
    first[0], first[1:] = True, s[1:] != s[:-1]
    starts = np.flatnonzero(first)
    group = np.cumsum(first) - 1
    ends = np.append(starts[1:], v.size)
    r = np.empty(v.size, dtype=np.float64)
    r[order] = (starts[group] + ends[group]) / (2.0 * v.size)
    return np.clip(np.rint(r * 255.0), 0, 255).astype(np.uint8).reshape(small.shape)


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` (last axis) made mean-free and unit-norm (zero rows stay zero)."""
    x = x - x.mean(-1, keepdim=True)
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def _as_tensor(thumbs: np.ndarray) -> torch.Tensor:
    """``(N, 1, 32, 32)`` float32 from ``(N, 32, 32)`` uint8 thumbnails."""
    return torch.as_tensor(np.asarray(thumbs, dtype=np.float32).reshape(-1, 1, THUMB_SIZE, THUMB_SIZE))


def _warp(t: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """``(P, W, size*size)`` unit rows: each of the ``P`` thumbnails ``t`` sampled under each of the ``W`` affine
    maps ``theta`` (``(W, 2, 3)``, output to input, normalised coordinates)."""
    p, w = t.shape[0], theta.shape[0]
    grid = torch.nn.functional.affine_grid(theta, [w, 1, size, size], align_corners=False).repeat(p, 1, 1, 1)
    src = t.repeat_interleave(w, 0)
    out = torch.nn.functional.grid_sample(src, grid, align_corners=False, padding_mode="border")
    return _unit(out.reshape(p, w, size * size))


def _affine(scale: float, degrees: float, tx: float, ty: float) -> list[list[float]]:
    a = math.radians(degrees)
    c, s = scale * math.cos(a), scale * math.sin(a)
    return [[c, -s, tx], [s, c, ty]]


def _zoom_thetas() -> torch.Tensor:
    """The identity, the horizontal flip and nine 92.5 % zooms (3x3 offsets)."""
    m = 1.0 - _ZOOM
    out = [_affine(1, 0, 0, 0), [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]
    out += [_affine(_ZOOM, 0, tx, ty) for tx in (-m, 0.0, m) for ty in (-m, 0.0, m)]
    return torch.tensor(out, dtype=torch.float32)


def _align_thetas() -> torch.Tensor:
    """Scales 1, 0.95, 0.9 x rotations -3, 0, 3 degrees x shifts (3x3 for the zooms): 57 maps."""
    out = []
    for scale in (1.0, 0.95, 0.9):
        m = 1.0 - scale
        shifts = [(0.0, 0.0)] if m == 0 else [(x, y) for x in (-m, 0.0, m) for y in (-m, 0.0, m)]
        out += [_affine(scale, deg, x, y) for deg in (-3.0, 0.0, 3.0) for x, y in shifts]
    return torch.tensor(out, dtype=torch.float32)


def _fine_thetas() -> torch.Tensor:
    """Between the coarse steps: scales 0.975 and 0.925 x rotations -4.5, -1.5, 1.5, 4.5 degrees x 3x3 shifts, and
    scale 1 at +-1.5 degrees x 3x3 shifts of 2.5 %: 90 maps."""
    out = []
    for scale, degs in ((0.975, (-4.5, -1.5, 1.5, 4.5)), (0.925, (-4.5, -1.5, 1.5, 4.5)), (1.0, (-1.5, 1.5))):
        m = max(1.0 - scale, 0.025)
        out += [_affine(scale, deg, x, y) for deg in degs for x in (-m, 0.0, m) for y in (-m, 0.0, m)]
    return torch.tensor(out, dtype=torch.float32)


def descriptors(thumbs: np.ndarray, size: int = 8) -> torch.Tensor:
    """``(N, 11, size*size)`` unit descriptors: identity, flip and the nine zooms of each rank thumbnail."""
    t = _as_tensor(thumbs)
    if not len(t):
        return torch.zeros((0, 11, size * size))
    return torch.cat([_warp(t[i : i + 1024], _zoom_thetas(), size) for i in range(0, len(t), 1024)])


def rank_candidates(
    thumbs: np.ndarray, valid: np.ndarray, neighbours: int = 8, floor: float = 0.5, block: int = 512
) -> np.ndarray:
    """Candidate pairs ``(P, 2)`` (``i < j``, unique, sorted) of the valid thumbnails (see the module docstring).

    Args:
        thumbs: ``(N, 32, 32)`` uint8 rank thumbnails.
        valid: ``(N,)`` bool; others (volumes, unreadable or constant images) are never paired.
        neighbours: best partners kept per image.
        floor: smallest descriptor cosine kept.
        block: rows per matrix block.
    """
    flat = np.asarray(thumbs).reshape(len(valid), -1)
    idx = np.flatnonzero(np.asarray(valid, dtype=bool) & (flat.max(1) > flat.min(1)))
    if len(idx) < 2 or neighbours < 1:
        return np.zeros((0, 2), dtype=np.int64)
    d = descriptors(np.asarray(thumbs)[idx])
    query, keys = d[:, 0], d.reshape(-1, d.shape[-1])
    k = min(int(neighbours), len(idx) - 1)
    out = []
    for start in range(0, len(idx), block):
        q = query[start : start + block]
        s = (q @ keys.T).reshape(len(q), len(idx), -1).amax(-1)  # best of identity, flip and zooms of the partner
        s[torch.arange(len(q)), torch.arange(start, start + len(q))] = -2.0  # not with itself
        val, col = torch.topk(s, k, dim=1)
        rows = torch.arange(start, start + len(q))[:, None].expand_as(col)
        keep = val >= floor
        out.append(torch.stack([rows[keep], col[keep]], 1).numpy())
    pairs = idx[np.concatenate(out)]
    pairs = np.unique(np.sort(pairs, axis=1), axis=0)
    return pairs.astype(np.int64).reshape(-1, 2)


def pair_scores(
    thumbs: np.ndarray, pairs: np.ndarray, align_below: float = 2.0, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(direct, flipped, aligned)`` per pair: the correlation of the 32x32 rank thumbnails (the better of as-is and
    one flipped), whether the flip was the better, and the best correlation of the 16x16 thumbnails over the small
    warps (-1 for pairs whose ``direct`` is at least ``align_below``, which are not aligned).

    Args:
        thumbs: ``(N, 32, 32)`` uint8 rank thumbnails.
        pairs: ``(P, 2)`` index pairs.
        align_below: only pairs below it are aligned (the default 2.0: all).
        chunk: pairs per warp batch.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    t = _as_tensor(thumbs)
    full, flip = _unit(t.reshape(len(t), -1)), _unit(t.flip(-1).reshape(len(t), -1))
    flat = _unit(torch.nn.functional.avg_pool2d(t, 2).reshape(len(t), -1))
    a, b = torch.as_tensor(pairs[:, 0]), torch.as_tensor(pairs[:, 1])
    same, flipped = (full[a] * full[b]).sum(-1).double().numpy(), (full[a] * flip[b]).sum(-1).double().numpy()
    direct = np.maximum(same, flipped)
    best = np.full(len(pairs), -1.0)
    todo = np.flatnonzero(direct < align_below)
    thetas = _align_thetas()
    for start in range(0, len(todo), chunk):
        sel = todo[start : start + chunk]
        s = torch.full((len(sel),), -1.0)
        for x, y in ((a[sel], b[sel]), (b[sel], a[sel])):  # either image may be the crop of the other
            u, inv = torch.unique(x, return_inverse=True)  # warp each image once per chunk
            s = torch.maximum(s, torch.einsum("pwd,pd->pw", _warp(t[u], thetas, 16)[inv], flat[y]).amax(1))
        best[sel] = s.double().numpy()
    _refine(t, flat, a, b, best, chunk)
    return direct, flipped > same, best


def _refine(
    t: torch.Tensor, flat: torch.Tensor, a: torch.Tensor, b: torch.Tensor, best: np.ndarray, chunk: int
) -> None:
    """Pairs whose coarse alignment reached :data:`REFINE_FROM` also try the 90 maps between the coarse grid's steps
    (:func:`_fine_thetas`); ``best`` is raised in place."""
    todo = np.flatnonzero((best >= REFINE_FROM) & (best < 0.999))
    thetas = _fine_thetas()
    for start in range(0, len(todo), chunk):
        sel = todo[start : start + chunk]
        s = torch.as_tensor(best[sel], dtype=torch.float32)
        for x, y in ((a[sel], b[sel]), (b[sel], a[sel])):
            u, inv = torch.unique(x, return_inverse=True)
            s = torch.maximum(s, torch.einsum("pwd,pd->pw", _warp(t[u], thetas, 16)[inv], flat[y]).amax(1))
        best[sel] = s.double().numpy()


def verify_pairs(
    thumbs: np.ndarray, pairs: np.ndarray, direct: float, aligned: float
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Keep the candidate ``pairs`` whose rank thumbnails correlate (see the module docstring and
    :func:`pair_scores`).

    Args:
        thumbs: ``(N, 32, 32)`` uint8 rank thumbnails.
        pairs: ``(P, 2)`` index pairs.
        direct: correlation of the 32x32 rank thumbnails (or of one with the other's flip) that links a pair as it is.
        aligned: best correlation over the small warps that links a pair not linked directly (only pairs below
            ``direct`` are aligned).

    Returns:
        ``(keep, similarity, stages)``: the ``(P,)`` bool mask of linked pairs, each pair's correlation (the one that
        linked it; for a pair not linked, the best one) and per pair :data:`STAGE_DIRECT`, :data:`STAGE_FLIPPED` or
        :data:`STAGE_ALIGNED`.
    """
    if not len(pairs):
        return np.zeros(0, dtype=bool), np.zeros(0), []
    sim, flipped, best = pair_scores(thumbs, pairs, align_below=direct)
    keep = (sim >= direct) | (best >= aligned)
    use_aligned = (sim < direct) & ((best >= aligned) | (best > sim))
    stages = np.where(use_aligned, STAGE_ALIGNED, np.where(flipped, STAGE_FLIPPED, STAGE_DIRECT))
    return keep, np.where(use_aligned, best, sim), [str(x) for x in stages]


def _ranks(x: torch.Tensor, levels: int = 1024) -> torch.Tensor:
    """Row-wise ranks of ``(Q, D)`` values in 0..1, quantised to ``levels`` grey levels, ties averaged, scaled to
    0..1 (a histogram per row: ``O(Q * (D + levels))``)."""
    q, d = x.shape
    lev = (x.clamp(0, 1) * (levels - 1)).round().long() + torch.arange(q)[:, None] * levels
    cnt = torch.bincount(lev.reshape(-1), minlength=q * levels).reshape(q, levels).float()
    mid = cnt.cumsum(1) - cnt / 2.0  # pixels below a level plus half of its ties
    return mid.reshape(-1)[lev] / d


def _unexplained(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Share of the variance of the ``(Q, 64*64)`` rank images ``b`` that is not a function of ``a``'s ranks (0..1,
    :data:`_BINS` bins) and is spatially coherent: each pixel's deviation from the mean of ``b`` over its bin of ``a``,
    blurred (:func:`_blur`: pixel noise averages out, a moved edge does not), mean-squared inside a :data:`_BORDER`
    margin, over the variance of ``b``."""
    q, d = a.shape
    bins = ((a.clamp(0, 1 - 1e-6) * _BINS).long() + torch.arange(q)[:, None] * _BINS).reshape(-1)
    cnt = torch.zeros(q * _BINS).scatter_add_(0, bins, torch.ones(q * d))
    s1 = torch.zeros(q * _BINS).scatter_add_(0, bins, b.reshape(-1))
    dev = (b.reshape(-1) - (s1 / cnt.clamp_min(1))[bins]).reshape(q, 1, FINE_SIZE, FINE_SIZE)
    inner = _blur(dev)[..., _BORDER:-_BORDER, _BORDER:-_BORDER]  # a rotation or crop fills or cuts the border
    return inner.pow(2).mean((1, 2, 3)) / b.var(1, unbiased=False).clamp_min(1e-9)


def _residual(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Residual of ``(Q, D)`` rank images: the smaller unexplained share of the two directions."""
    x, y = _ranks(x), _ranks(y)
    return torch.minimum(_unexplained(x, y), _unexplained(y, x))


def _blur(x: torch.Tensor) -> torch.Tensor:
    """A separable Gaussian blur (sigma 1 pixel) of ``(Q, 1, H, W)`` images, edges replicated."""
    k = torch.exp(-(torch.arange(-3, 4, dtype=torch.float32) ** 2) / 2.0)
    k = k / k.sum()
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (3, 3, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 0, 3, 3), mode="replicate"), k.view(1, 1, -1, 1))


def _best_warp(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(Q, 2, 3)`` affine maps that warp the blurred ``(Q, 1, 64, 64)`` images ``x`` onto ``y``: the best of the
    identity, the flip and the coarse and fine warp grids at 32x32, then :data:`_ALIGN_STEPS` gradient steps on the
    correlation at 64x64 (any affine map, so crops of another aspect ratio fit)."""
    thetas = torch.cat([_zoom_thetas()[:2], _align_thetas(), _fine_thetas()])
    xs, ys = torch.nn.functional.avg_pool2d(x, 2), torch.nn.functional.avg_pool2d(y, 2)
    score = torch.einsum("pwd,pd->pw", _warp(xs, thetas, FINE_SIZE // 2), _unit(ys.reshape(len(ys), -1)))
    theta = thetas[score.argmax(1)].clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=0.01)
    yu = _unit(y.reshape(len(y), -1))
    with torch.enable_grad():
        for _ in range(_ALIGN_STEPS):
            grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
            w = torch.nn.functional.grid_sample(x, grid, align_corners=False, padding_mode="border")
            loss = -(_unit(w.reshape(len(w), -1)) * yu).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return theta.detach()


def _aligned_residual(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Residual (:func:`_residual`) of ``(Q, 1, 64, 64)`` images ``x`` warped onto ``y`` by :func:`_best_warp`."""
    if not len(x):
        return torch.zeros(0)
    grid = torch.nn.functional.affine_grid(_best_warp(_blur(x), _blur(y)), list(x.shape), align_corners=False)
    w = torch.nn.functional.grid_sample(x, grid, align_corners=False, padding_mode="border")
    return _residual(w.reshape(len(x), -1), y.reshape(len(y), -1))


def fine_residual(
    fine: np.ndarray, pairs: np.ndarray, align: bool = True, skip_below: float = 0.005, chunk: int = 64
) -> np.ndarray:
    """Final verification of candidate pairs: ``(P,)`` residuals (0: one image's fine rank thumbnail is an increasing
    function of the other's, up to a small affine warp; larger: structure that moved non-rigidly).

    A processed copy keeps its structure where it was (gamma, contrast, window, histogram equalisation: the copy's
    grey levels are an increasing, possibly clipping, function of the original's; blur, sharpening, JPEG and noise are
    small at 64x64) or moved by a global warp (rotation, crop, flip); a neighbouring slice of a volume changes shape.
    The residual is the share of one image's rank variance that is not a function of the other's ranks (32 rank bins,
    the better direction, so a clipped window counts as a function of the original), taken as they are, with one
    flipped, and (``align``) after the best affine warp of either onto the other (:func:`_best_warp`; only pairs whose
    unwarped residual is at least ``skip_below``); the smallest is kept. ``O(P * 2 * (149 * 1024 + 20 * 3 * 4096))``
    samples at most, about 10-30 ms per aligned pair on one CPU thread.

    Args:
        fine: ``(N, 64, 64)`` uint8 fine rank thumbnails.
        pairs: ``(P, 2)`` index pairs.
        align: also try the affine warps.
        skip_below: pairs whose unwarped residual is below it are not aligned.
        chunk: pairs per batch.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    t = torch.as_tensor(np.asarray(fine, dtype=np.float32).reshape(-1, 1, FINE_SIZE, FINE_SIZE)) / 255.0
    out = np.ones(len(pairs))
    for start in range(0, len(pairs), chunk):
        a, b = (torch.as_tensor(pairs[start : start + chunk, k]) for k in (0, 1))
        x, y = t[a].reshape(len(a), -1), t[b].reshape(len(b), -1)
        res = torch.minimum(_residual(x, y), _residual(t[a].flip(-1).reshape(len(a), -1), y))
        todo = torch.nonzero(res >= skip_below).reshape(-1) if align else torch.zeros(0, dtype=torch.long)
        for u, v in ((a[todo], b[todo]), (b[todo], a[todo])):  # either image may be the crop of the other
            res[todo] = torch.minimum(res[todo], _aligned_residual(t[u], t[v]))
        out[start : start + chunk] = res.double().numpy()
    return out
