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
"""Second stage of the near-duplicate finder (``monai_transfer.data._similarity``): rank thumbnails, candidates,
verification."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from monai_transfer.data._similarity import (
    STAGE_ALIGNED,
    STAGE_DIRECT,
    STAGE_FLIPPED,
    fine_residual,
    rank_candidates,
    rank_thumbnail,
    verify_pairs,
)
from monai_transfer.data.duplicates import DEFAULT_MAX_RESIDUAL, image_key
from tests.data.test_duplicates import _base_image, _mask


def _thumb(im: Image.Image) -> np.ndarray:
    return image_key(np.asarray(im, dtype=np.float32)[None])[2]


def test_rank_thumbnail_ignores_increasing_intensity_maps_and_averages_ties():
    rng = np.random.default_rng(0)
    small = rng.random((32, 32))
    ref = rank_thumbnail(small)
    assert ref.dtype == np.uint8 and ref.shape == (32, 32) and ref.min() <= 1 and ref.max() >= 254
    for mapped in (small**2.2, 3 + 7 * small, np.log1p(small), np.clip(small, 0.2, 0.8)):
        same = rank_thumbnail(mapped)
        changed = np.flatnonzero(same.ravel() != ref.ravel())
        if mapped.min() == 0.2:  # clipping (another window) ties the clipped pixels: they share their mean rank
            assert np.all((small.ravel()[changed] <= 0.2) | (small.ravel()[changed] >= 0.8))
        else:
            assert len(changed) == 0
    two = np.zeros((32, 32))
    two[:, 16:] = 5.0
    assert sorted(np.unique(rank_thumbnail(two)).tolist()) == [64, 191]  # half the pixels each: mean ranks 1/4, 3/4
    assert not rank_thumbnail(np.full((32, 32), 3.0)).any()  # a constant image has no ranks to compare


def test_candidates_are_complete_when_every_partner_is_kept_and_skip_invalid():
    rng = np.random.default_rng(1)
    thumbs = np.stack([_thumb(_base_image(rng)) for _ in range(7)])
    valid = np.ones(7, dtype=bool)
    every = rank_candidates(thumbs, valid, neighbours=6, floor=-1.0)
    assert every.tolist() == [[i, j] for i in range(7) for j in range(i + 1, 7)]
    valid[3] = False
    thumbs[5] = 0  # constant image
    some = rank_candidates(thumbs, valid, neighbours=6, floor=-1.0)
    assert not np.isin(some, [3, 5]).any() and len(some) == 10
    assert len(rank_candidates(thumbs, valid, neighbours=1, floor=-1.0)) <= 5  # each keeps its best partner


def test_verification_names_how_a_pair_matched():
    rng = np.random.default_rng(2)
    ims = [_base_image(rng, size=256) for _ in range(3)]
    w, h = ims[0].size
    copies = [
        ims[0].point(lambda v: int(255 * (v / 255) ** 1.5)),  # gamma
        ImageOps.mirror(ims[1]),  # flip
        ims[2].crop((25, 25, w, h)),  # 10 % cropped off the top and left
    ]
    thumbs = np.stack([_thumb(im) for im in ims + copies])
    pairs = np.array([[0, 3], [1, 4], [2, 5], [0, 1], [1, 2], [0, 2]])
    keep, sim, stages = verify_pairs(thumbs, pairs, direct=0.97, aligned=0.97)
    assert keep.tolist() == [True, True, True, False, False, False], sim
    assert stages[:3] == [STAGE_DIRECT, STAGE_FLIPPED, STAGE_ALIGNED] and sim[0] > 0.99
    loose_direct, _, _ = verify_pairs(thumbs, pairs[2:3], direct=0.97, aligned=1.01)
    assert not loose_direct[0]  # the crop needs the alignment


def _fine(im: Image.Image) -> np.ndarray:
    return image_key(np.asarray(im, dtype=np.float32)[None])[4]


def test_fine_residual_separates_processed_copies_from_non_rigid_changes():
    """The final verification's residual: near 0 for a copy with another window (clipped), blurred, mirrored, rotated
    or cropped (after the alignment), above the default threshold for a mask whose shape changed (a neighbouring
    slice) and for an unrelated image; without the alignment the rotated copy is not recognised."""
    from PIL import ImageFilter

    rng = np.random.default_rng(3)
    im = _base_image(rng, size=256)
    a = np.asarray(im, dtype=np.float64)
    window = Image.fromarray(np.clip((a - 90) * 2.5, 0, 255).astype(np.uint8))
    copies = [window, im.filter(ImageFilter.GaussianBlur(1.5)), ImageOps.mirror(im), im.rotate(4, Image.BILINEAR)]
    copies.append(im.crop((0, 20, 236, 256)))
    others = [_mask(256, 0.3, 0.2, 0.06), _mask(256, 0.28, 0.215, 0.1), _base_image(rng, size=256)]
    fine = np.stack([_fine(x) for x in [im, *copies, *others]])
    assert fine.shape == (9, 64, 64) and fine.dtype == np.uint8
    pairs = np.array([[0, k] for k in range(1, 6)] + [[6, 7], [0, 8]])
    res = fine_residual(fine, pairs)
    assert (res[:5] <= DEFAULT_MAX_RESIDUAL).all() and (res[5:] > DEFAULT_MAX_RESIDUAL).all(), res
    unaligned = fine_residual(fine, pairs[3:4], align=False)
    assert unaligned[0] > DEFAULT_MAX_RESIDUAL >= res[3]
