"""Decoder tests on hand-made exact maps (built here from known keypoints with NumPy)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from strongpose.config import Config, DecoderConfig
from strongpose.geometry import ImageTransform
from strongpose.post_proc import Decoder, Person, decode, hough_vote, soft_nms_scores
from strongpose.skeleton import Skeleton

from scenes import K, R, SK, STRIDE, TEMPLATE, box_body, eight_people, make_maps, person_at

def cfg(**kw) -> DecoderConfig:
    return dataclasses.replace(DecoderConfig(), **kw)


def run(maps, transform=None, **kw) -> list[Person]:
    return decode(maps, skeleton=SK, stride=STRIDE, disk_radius=R, cfg=cfg(**kw), transform=transform)


def match(people: list[Person], truth: np.ndarray) -> Person:
    """The decoded person whose found keypoints are nearest ``truth`` (K, 3)."""
    lab = truth[:, 2] > 0
    errs = [np.abs(p.keypoints[lab, :2] - truth[lab, :2]).max() for p in people]
    return people[int(np.argmin(errs))]


# ---------------------------------------------------------------------------- hough
def test_hough_peak_is_about_one_at_an_exact_disk():
    maps = make_maps([person_at(96 - 50, 96 - 20)], (41, 41))               # nose on grid point (96, 96)
    strong = hough_vote(maps["heatmap"], maps["short"], STRIDE, R)
    assert strong.shape == (41, 41, K)
    assert strong[12, 12, 0] == pytest.approx(1.0, abs=0.05)               # 49 cells / (pi 4^2)
    assert strong[..., 0].sum() == pytest.approx(strong[12, 12, 0])        # all votes in one cell
    # Off the grid, votes split over 2x2 cells that still sum to about 1.
    right_eye = strong[..., 2]
    assert right_eye.max() < 0.9 and right_eye.sum() == pytest.approx(1.0, abs=0.05)


def test_hough_rejects_bad_shapes():
    with pytest.raises(ValueError, match="short"):
        hough_vote(np.zeros((5, 5, 3)), np.zeros((5, 5, 4)), 8, 32.0)
    with pytest.raises(ValueError, match="stride"):
        hough_vote(np.zeros((5, 5, 1)), np.zeros((5, 5, 2)), 0, 32.0)


# --------------------------------------------------------------------------- decode
def test_empty_maps_give_no_people():
    assert run(make_maps([], (31, 41))) == []


def test_two_people_close_together():
    a, b = person_at(40, 30), person_at(100, 36)          # 60 px apart: disks overlap
    maps = make_maps([a, b], (41, 31))
    people = run(maps)
    assert len(people) == 2
    for truth in (a, b):
        p = match(people, truth)
        np.testing.assert_allclose(p.keypoints[:, :2], truth[:, :2], atol=0.5)
        assert p.keypoints[:, 2].min() > 0.8
        assert p.score == pytest.approx(p.keypoints[:, 2].sum() / K, rel=1e-5)
    assert match(people, a) is not match(people, b)


def test_missing_keypoint_one_piece_with_long_range():
    truth = person_at(60, 40, missing=(7,))               # left elbow unlabelled: arm chain broken
    maps = make_maps([truth], (41, 31))
    whole = run(maps, use_long_range=True)
    assert len(whole) == 1
    kp = whole[0].keypoints
    np.testing.assert_allclose(kp[9, :2], truth[9, :2], atol=0.5)     # left wrist reached
    assert kp[9, 2] > 0.8 and kp[7, 2] < 0.01
    assert np.isfinite(kp).all()
    # Without long-range offsets the wrist comes out as a second, lower-scored piece.
    pieces = run(maps, use_long_range=False)
    assert len(pieces) == 2
    assert pieces[0].score > pieces[1].score
    np.testing.assert_allclose(pieces[1].keypoints[9, :2], truth[9, :2], atol=0.5)
    assert pieces[1].score == pytest.approx(pieces[1].keypoints[9, 2] / K, rel=1e-3)


def test_soft_nms_ranks_fragment_below_whole_person():
    whole = np.tile(np.arange(K, dtype=np.float32)[:, None] * 10, (1, 2))
    xy = np.stack([whole, whole + 1.0, whole + 300.0])    # whole, duplicate, a far one
    scores = np.ones((3, K), np.float32)
    scores[2, 1:] = 0                                     # the far one: one keypoint
    out, order = soft_nms_scores(xy, scores, nms_radius=10.0)
    assert out[0] == pytest.approx(1.0)
    assert out[1] == pytest.approx(0.0)                   # every keypoint within r of a better one
    assert out[2] == pytest.approx(1.0 / K)               # not the mean keypoint score (1.0)
    assert list(order) == [0, 1, 2]


def test_transform_maps_back_to_original_pixels():
    truth = person_at(60, 40)
    maps = make_maps([truth], (41, 31))
    t = ImageTransform(scale=0.5, offset_x=16.0, offset_y=8.0, original_width=440, original_height=600)
    people = run(maps, transform=t)
    assert len(people) == 1
    expect = (truth[:, :2] - [16.0, 8.0]) / 0.5
    np.testing.assert_allclose(people[0].keypoints[:, :2], expect, atol=1.0)
    assert people[0].mask.shape == (600, 440)
    x, y, w, h = people[0].box
    assert x <= expect[:, 0].min() and x + w >= expect[:, 0].max()
    assert y <= expect[:, 1].min() and y + h >= expect[:, 1].max()


def test_instance_masks_follow_bodies():
    a, b = person_at(20, 30), person_at(150, 30)
    shape = (41, 41)
    maps = make_maps([a, b], shape)
    people = run(maps)
    assert len(people) == 2
    size = STRIDE * (shape[0] - 1) + 1
    for truth in (a, b):
        p = match(people, truth)
        assert p.mask.shape == (size, size) and p.mask.dtype == bool
        full = np.zeros((size, size), bool)
        lo = (truth[:, :2].min(0) - 12).astype(int)
        hi = (truth[:, :2].max(0) + 12).astype(int)
        full[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = True
        iou = (p.mask & full).sum() / (p.mask | full).sum()
        assert iou > 0.85                                 # grid-cell box vs pixel box
    assert not (people[0].mask & people[1].mask).any()
    assert all(p.mask is None for p in run(maps, instance_masks=False))


def test_max_people_and_order():
    people, maps = eight_people()
    out = run(maps)
    assert len(out) == 8
    assert all(a.score >= b.score for a, b in zip(out, out[1:]))
    assert len(run(maps, max_people=3)) == 3


def test_decoder_from_config():
    config = Config()
    dec = Decoder.from_config(config, stride=STRIDE)
    assert dec.stride == STRIDE and dec.disk_radius == config.codec.disk_radius
    assert Decoder.from_config(config).stride == config.eval_output_stride
    maps = make_maps([person_at(60, 40)], (41, 31))
    assert len(dec(maps)) == 1


def test_bad_maps_raise_clear_errors():
    maps = make_maps([person_at(60, 40)], (41, 31))
    with pytest.raises(ValueError, match="lack"):
        run({k: v for k, v in maps.items() if k != "mid"})
    with pytest.raises(ValueError, match="short"):
        run({**maps, "short": maps["short"][..., :5]})
    with pytest.raises(ValueError, match="one image"):
        run({**maps, "heatmap": maps["heatmap"][None]})
    with pytest.raises(ValueError, match="stride"):
        decode(maps, skeleton=SK, stride=0, disk_radius=R, cfg=cfg())


def test_missing_keypoint_does_not_steal_a_neighbours():
    a = person_at(40, 30, missing=(10,))                  # a's right wrist unlabelled
    b = person_at(150, 10)
    b[8, :2], b[10, :2] = (170, 110), (130, 128)          # b's right wrist 20 px from a's right elbow
    people = run(make_maps([a, b], (41, 41)))
    assert len(people) == 2
    pa, pb = match(people, a), match(people, b)
    assert pa.keypoints[10, 2] == 0                       # not b's wrist: the walk back leads to b's elbow
    np.testing.assert_allclose(pb.keypoints[10, :2], b[10, :2], atol=0.5)
    assert pb.score == pytest.approx(pb.keypoints[:, 2].sum() / K, rel=1e-5)


def test_custom_skeleton():
    sk = Skeleton(names=("head", "hip", "foot"), edges=((0, 1), (1, 2)), flip_pairs=(),
                  sigmas=(0.05, 0.05, 0.05))
    people = [np.array([[40, 40, 1], [40, 120, 1], [40, 200, 1]], np.float32),
              np.array([[160, 48, 1], [0, 0, 0], [165, 210, 1]], np.float32)]    # hip missing
    maps = make_maps(people, (31, 31), skeleton=sk)
    out = decode(maps, skeleton=sk, stride=STRIDE, disk_radius=R, cfg=cfg())
    assert len(out) == 2
    for truth in people:
        p = match(out, truth)
        lab = truth[:, 2] > 0
        np.testing.assert_allclose(p.keypoints[lab, :2], truth[lab, :2], atol=0.5)
        assert (p.keypoints[lab, 2] > 0.8).all()


# ------------------------------------------------------- snapping at a small disk radius
PAIR = Skeleton(names=("a", "b"), edges=((0, 1),), flip_pairs=(), sigmas=(0.05, 0.05))


@pytest.mark.parametrize("long_range", [True, False])
def test_snap_is_exact_where_cells_straddle_the_disk_edge(long_range):
    # R = s = 8. a sits on grid point (96, 96) (5 disk cells: it seeds) and the walk
    # reaches b = (106.5, 201) exactly; of b's four surrounding cells (104, 200), (112, 200)
    # and (104, 208) are in its disk, (112, 208) is not (offset 0 there). Plain bilinear
    # short offsets pull b 0.4 px off over two snaps; the heat-weighted votes of
    # those cells land exactly on b.
    truth = np.array([[96.0, 96.0, 1], [106.5, 201.0, 1]], np.float32)
    maps = make_maps([truth], (41, 31), skeleton=PAIR, radius=8.0)
    out = decode(maps, skeleton=PAIR, stride=STRIDE, disk_radius=8.0,
                 cfg=cfg(use_long_range=long_range))
    assert len(out) == 1
    np.testing.assert_allclose(out[0].keypoints[:, :2], truth[:, :2], atol=1e-3)
    assert (out[0].keypoints[:, 2] > 0.5).all()


def test_small_person_at_radius_equal_to_stride_is_recovered_exactly():
    # A 21 x 67 px person at s = 16, R = 16 (R <= s sqrt(2)): keypoints off the grid, most
    # cells around them half in and half out of their disks.
    truth = person_at(0, 0)
    truth[:, :2] = TEMPLATE * 0.35 + (101.3, 83.7)
    maps = make_maps([truth], (21, 21), stride=16, radius=16.0)
    out = decode(maps, skeleton=SK, stride=16, disk_radius=16.0, cfg=cfg())
    assert len(out) == 1
    np.testing.assert_allclose(out[0].keypoints[:, :2], truth[:, :2], atol=1e-2)


def test_unchecked_vote_weight_decides_votes_landing_off_the_body():
    truth = person_at(60, 40, missing=(7,))               # left elbow unlabelled: arm chain broken
    truth[9, :2] = (40, 160)                              # left wrist out to the left, off the body
    core = truth.copy()
    core[9, 2] = 0
    maps = make_maps([truth], (41, 31), bodies=[box_body(core, (41, 31), margin=4.0)])
    assert maps["body"][160 // STRIDE, 40 // STRIDE, 0] == 0
    # Long-range votes for the wrist cannot be checked there: by default they count half.
    one = run(maps)
    assert len(one) == 1
    np.testing.assert_allclose(one[0].keypoints[9, :2], truth[9, :2], atol=0.5)
    assert one[0].keypoints[9, 2] > 0.8
    # Weight 0: the wrist stays a separate, lower-scored piece.
    pieces = run(maps, unchecked_vote_weight=0.0)
    assert len(pieces) == 2
    assert pieces[0].keypoints[9, 2] == 0
    np.testing.assert_allclose(pieces[1].keypoints[9, :2], truth[9, :2], atol=0.5)
