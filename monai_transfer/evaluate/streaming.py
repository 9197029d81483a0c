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
"""Per-case evaluation, streamed: one case is loaded at a time; images (2D) or the slices of a volume go through the
bundle's ``inferer``, ``network`` and ``postprocessing`` in batches.

When ``slicing`` is a ``Compose``, the transforms after the one that splits the volume into slices (resize,
normalisation, ...) are applied lazily, slice by slice, so peak memory is about one volume, its raw slices and one
batch, whatever the number of cases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import optional_import

from monai_transfer.evaluate.bundle_inference import Bundle
from monai_transfer.evaluate.cases import (
    VOLUME_EXTENSIONS,
    CaseFailure,
    CasePrediction,
    EvaluationResult,
    EvaluationUsageError,
    _broken_link,
    _CaseError,
    _display,
)

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["BatchRunner", "CaseLoop", "volume_case", "image_case", "non_finite_reason"]


def _nifti_shape(path: Path) -> tuple[int, ...] | None:
    """Stored NIfTI shape (header only) with trailing singleton axes beyond 2 removed; None for other files."""
    if not path.name.lower().endswith(VOLUME_EXTENSIONS):
        return None
    import nibabel

    try:
        shape = tuple(int(s) for s in nibabel.load(str(path)).shape)
    except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError, zlib errors, ...
        raise _CaseError("read", f"unreadable NIfTI file ({type(e).__name__}: {e})") from e
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _check_stored_shape(path: Path, kind: str) -> tuple[int, ...] | None:
    shape = _nifti_shape(path)
    if shape is None:
        return None
    if any(s == 0 for s in shape):
        raise _CaseError("empty", f"zero-size image (stored shape {shape})")
    want = 3 if kind == "volume" else 2
    if len(shape) != want:
        what = "a 3D volume" if want == 3 else "a 2D image"
        raise _CaseError("dimensions", f"{len(shape)}D image (stored shape {shape}); this bundle needs {what}")
    return shape


def _raw_is_empty(path: Path) -> str | None:
    """After a failed load: say whether the stored NIfTI data are all zeros (cheap diagnosis, failures only)."""
    if not path.name.lower().endswith(VOLUME_EXTENSIONS):
        return None
    try:
        import nibabel

        data = np.asanyarray(nibabel.load(str(path)).dataobj)
    except Exception:
        return None
    if data.size == 0:
        return f"zero-size image (stored shape {data.shape})"
    if not np.any(data):
        return f"empty image: all {data.size} voxels are 0"
    return None


def _check_content(img: Any, ndim: int, what: str) -> torch.Tensor:
    """The image as a plain tensor; raises when it is not ``ndim``-D, empty, or constant in every channel."""
    if not isinstance(img, (torch.Tensor, np.ndarray)):
        raise _CaseError("read", f"the bundle's preprocessing gave a {type(img).__name__} for 'image', not an array")
    t = torch.as_tensor(img)
    if isinstance(t, torch.Tensor) and hasattr(t, "as_tensor"):
        t = t.as_tensor()
    if t.numel() == 0:
        raise _CaseError("empty", f"zero-size {what} after preprocessing (shape {tuple(t.shape)})")
    if t.ndim != ndim:
        raise _CaseError(
            "dimensions", f"{what} has shape {tuple(t.shape)} after preprocessing; expected {ndim} dims (C, spatial)"
        )
    flat = t.reshape(t.shape[0], -1)
    if bool((flat.amax(1) == flat.amin(1)).all()):
        value = float(flat[0, 0])
        reason = "every voxel is 0" if value == 0 else f"every voxel of each channel has one value ({value:g}, ...)"
        raise _CaseError("empty", f"empty {what}: {reason}")
    return t


def _iter_slices(slicing: Callable, data: dict) -> Iterator[dict]:
    """Slice dicts of one volume; transforms after the slice split of a ``Compose`` run lazily, slice by slice."""
    from monai.transforms import Compose, apply_transform

    if isinstance(slicing, Compose) and not getattr(slicing, "lazy", False):
        cur: Any = data
        transforms = list(slicing.transforms)
        for i, t in enumerate(transforms):
            cur = apply_transform(t, cur, map_items=slicing.map_items, unpack_items=slicing.unpack_items)
            if isinstance(cur, (list, tuple)):
                rest = transforms[i + 1 :]
                for item in cur:
                    for t2 in rest:
                        item = apply_transform(t2, item, map_items=slicing.map_items, unpack_items=slicing.unpack_items)
                    yield item
                return
        yield cur
        return
    out = slicing(data)
    if isinstance(out, dict):
        yield out
    else:
        yield from out


class BatchRunner:
    """Runs a batch of preprocessed images through the bundle's ``inferer`` and ``network``, then its
    ``postprocessing`` case by case (as the decollated output of a MONAI evaluator): class probabilities ``(B, K)``.

    The activation (softmax/sigmoid), a temperature (``ApplyTemperatured``) and test-time augmentation
    (``TTAInferer``) thus come from the bundle's config.
    """

    def __init__(self, b: Bundle, net: torch.nn.Module, device: torch.device) -> None:
        self.net = net
        self.device = device
        self.num_classes = len(b.class_names)
        self.inferer = b.inferer
        self.postprocessing = b.postprocessing

    def _post(self, logits: torch.Tensor) -> torch.Tensor:
        rows = [self.postprocessing({"pred": row})["pred"] for row in logits]
        return torch.stack([torch.as_tensor(r).as_subclass(torch.Tensor).float().reshape(-1) for r in rows])

    def __call__(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        x = torch.stack([torch.as_tensor(i).as_subclass(torch.Tensor) for i in images]).float().to(self.device)
        with torch.inference_mode():
            logits = self.inferer(x, self.net)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        logits = torch.as_tensor(logits).as_subclass(torch.Tensor).float()
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise EvaluationUsageError(
                f"the network gives outputs of shape {tuple(logits.shape)}; expected (batch, {self.num_classes}) "
                "for the bundle's class names"
            )
        return self._post(logits.cpu())


def volume_case(b: Bundle, path: Path, run: BatchRunner, batch_size: int) -> tuple[np.ndarray, int]:
    _check_stored_shape(path, "volume")
    assert b.volume_preprocessing is not None and b.slicing is not None and b.aggregate is not None
    data = _preprocess(b.volume_preprocessing, "volume_preprocessing", path)
    _check_content(data["image"], 4, "volume")
    probs: list[torch.Tensor] = []
    batch: list[torch.Tensor] = []
    try:
        for item in _iter_slices(b.slicing, data):
            batch.append(_slice_image(item))
            if len(batch) >= batch_size:
                probs.append(run(batch))
                batch = []
        if batch:
            probs.append(run(batch))
    except (_CaseError, EvaluationUsageError):
        raise
    except Exception as e:
        raise _CaseError("slicing", f"slicing or inference failed: {type(e).__name__}: {e}") from e
    finally:
        del data, batch
    if not probs:
        raise _CaseError("empty", "the bundle's slicing produced no slice for this volume")
    slice_probs = torch.cat(probs)
    n_bad = int((~torch.isfinite(slice_probs).all(1)).sum())
    if n_bad:
        raise _CaseError("inference", non_finite_reason(f"{n_bad} of {len(slice_probs)} slice(s)"))
    vol = torch.as_tensor(b.aggregate(slice_probs), dtype=torch.float64).reshape(-1)
    if vol.numel() != run.num_classes:
        raise EvaluationUsageError(f"aggregation returned {vol.numel()} values; expected {run.num_classes}")
    if not bool(torch.isfinite(vol).all()):
        raise _CaseError("inference", non_finite_reason(f"the aggregated volume ({b.aggregation_desc})"))
    return vol.numpy(), int(slice_probs.shape[0])


def non_finite_reason(what: str) -> str:
    return (
        f"non-finite (NaN/inf) probabilities for {what}: the network's outputs overflow (diverged or corrupted "
        "weights?); the case is not reported as a prediction"
    )


def _slice_image(item: Any) -> torch.Tensor:
    if not isinstance(item, dict) or "image" not in item:
        raise _CaseError("slicing", f"the bundle's slicing must yield dicts with 'image', got {type(item).__name__}")
    t = torch.as_tensor(item["image"])
    if t.ndim != 3:
        raise _CaseError("slicing", f"a slice has shape {tuple(t.shape)}; expected (C, H, W)")
    return t


def image_case(b: Bundle, path: Path) -> torch.Tensor:
    _check_stored_shape(path, "2d")
    try:
        return _image_content(b, path)
    except _CaseError as e:
        if e.stage == "dimensions" and path.name.lower().endswith(VOLUME_EXTENSIONS):
            import nibabel

            stored = tuple(int(v) for v in nibabel.load(str(path)).shape)
            raise _CaseError(e.stage, f"{e.reason} (stored NIfTI shape {stored}; a 2D NIfTI (x, y) is expected)") from e
        raise


def _image_content(b: Bundle, path: Path) -> torch.Tensor:
    assert b.preprocessing is not None
    data = _preprocess(b.preprocessing, "preprocessing", path)
    return _check_content(data["image"], 3, "image")


def _preprocess(transform: Callable, name: str, path: Path) -> dict:
    """Run the bundle's ``name`` transform on ``{"image": path}``; an empty file or a failure is a case error."""
    try:
        data = transform({"image": str(path)})
    except Exception as e:
        empty = _raw_is_empty(path)
        if empty:
            raise _CaseError("empty", empty) from e
        raise _CaseError("read", f"the bundle's {name} failed: {type(e).__name__}: {e}") from e
    if not isinstance(data, dict) or "image" not in data:
        raise _CaseError("read", f"{name} must return a dict with 'image', got {type(data).__name__}")
    return data


class CaseLoop:
    """Streams the cases of a folder through a :class:`BatchRunner`; collects the predictions and the failing cases
    by name (logged), and lets the run go on.

    Args:
        b: the bundle's components.
        run: the runner (network, inferer, postprocessing).
        images_dir: the folder the case names are relative to.
        result: receives ``predictions`` and ``failures``.
        labels: ``{case path: label}``.
        batch_size: 2D images (or slices of a volume) per forward pass.
        log: where failures are logged.
    """

    def __init__(
        self,
        b: Bundle,
        run: BatchRunner,
        images_dir: Path,
        result: EvaluationResult,
        labels: dict[Path, int],
        batch_size: int,
        log: logging.Logger,
    ) -> None:
        self.b, self.run, self.images_dir, self.result, self.labels = b, run, Path(images_dir), result, labels
        self.batch_size, self.log = int(batch_size), log
        self.pending: list[tuple[Path, torch.Tensor]] = []

    def name_of(self, p: Path) -> str:
        return _display(p.relative_to(self.images_dir).as_posix())

    def _log_failure(self, f: CaseFailure) -> None:
        self.log.error(f"case {f.case!r} failed ({f.stage}): {f.reason}")

    def fail(self, p: Path, stage: str, reason: str) -> None:
        self.result.failures.append(CaseFailure(self.name_of(p), str(p), stage, reason))
        self._log_failure(self.result.failures[-1])

    def add(self, p: Path, probs: Any, n_slices: int | None = None) -> None:
        # the id is the path relative to --images, extension kept: the format of every predictions.csv (case_id)
        pred = CasePrediction(self.name_of(p), str(p), probs, self.labels.get(p), n_slices)
        self.result.predictions.append(pred)

    def _one(self, p: Path, t: torch.Tensor) -> torch.Tensor | None:
        try:
            return self.run([t])[0]
        except EvaluationUsageError:
            raise
        except Exception as e:
            self.fail(p, "inference", f"{type(e).__name__}: {e}")
            return None

    def flush(self) -> None:
        """Run the pending 2D images as one batch; after an error, one by one to find the bad case(s)."""
        if not self.pending:
            return
        try:
            probs = self.run([t for _, t in self.pending])
        except EvaluationUsageError:
            raise
        except Exception:
            probs = None
        for i, (p, t) in enumerate(self.pending):
            row = probs[i] if probs is not None else self._one(p, t)
            if row is None:
                continue
            if not bool(torch.isfinite(row).all()):
                self.fail(p, "inference", non_finite_reason("this image"))
                continue
            self.add(p, row.double().numpy())
        self.pending.clear()

    def case(self, path: Path) -> None:
        broken = _broken_link(path)
        if broken:
            return self.fail(path, "read", broken)
        try:
            if self.b.kind == "volume":
                probs, n_slices = volume_case(self.b, path, self.run, self.batch_size)
                return self.add(path, probs, n_slices)
            self.pending.append((path, image_case(self.b, path)))
            if len(self.pending) >= self.batch_size:
                self.flush()
        except _CaseError as e:
            self.fail(path, e.stage, e.reason)

    def run_cases(self, cases: Sequence[Path], progress: bool | None = None) -> None:
        """Log the failures already in ``result`` (labels CSV), then run every other case of ``cases`` and the last
        batch; ``progress``: a tqdm bar over the cases (default only on a terminal).
        """
        for f in self.result.failures:
            self._log_failure(f)
        failed = {Path(f.path) for f in self.result.failures if f.path}
        disable = None if progress is None else not progress  # None: tqdm shows the bar only on a terminal
        for path in tqdm(cases, desc="cases", unit="case", disable=disable) if has_tqdm else cases:
            if path not in failed:
                self.case(path)
        self.flush()
