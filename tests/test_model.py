"""Model: bilinear sampler and refinement against hand computations; network shapes, saving,
mixed precision, custom skeletons."""

import numpy as np
import pytest
import tensorflow as tf

from strongpose.model import (OffsetRefinement, bilinear_sample, cell_points, refine_long,
                              refine_mid)

S = 8  # output stride used by the op tests


# ------------------------------------------------------------------ sampler
def test_cell_points_follow_align_corners_geometry():
    pts = cell_points(2, 3, S).numpy()
    assert pts.shape == (2, 3, 2)
    np.testing.assert_array_equal(pts[1, 2], [16.0, 8.0])  # cell (i, j) = (1, 2) -> (x, y) = (s*j, s*i)
    np.testing.assert_array_equal(pts[0, 1], [8.0, 0.0])


def test_bilinear_sample_matches_hand_computation():
    # One item, one channel: 2x2 field [[0, 1], [2, 7]].
    field = np.array([[0.0, 1.0], [2.0, 7.0]], np.float32).reshape(1, 2, 2, 1, 1)
    points = np.zeros((1, 2, 2, 1, 2), np.float32)
    points[0, 0, 0, 0] = [0.5 * S, 0.5 * S]    # centre: mean of the four = 2.5
    points[0, 0, 1, 0] = [0.25 * S, 0.0]       # top edge: 0.75*0 + 0.25*1
    points[0, 1, 0, 0] = [1.0 * S, 0.75 * S]   # right edge: 0.25*1 + 0.75*7
    points[0, 1, 1, 0] = [0.25 * S, 0.5 * S]   # 0.5*(0.75*0 + 0.25*1) + 0.5*(0.75*2 + 0.25*7)
    out = bilinear_sample(field, points, S).numpy()[0, ..., 0, 0]
    expected = [[2.5, 0.25], [5.5, 0.5 * 0.25 + 0.5 * 3.25]]
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_bilinear_sample_each_item_reads_its_own_field():
    h, w = 3, 4
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    # Item n's field is linear: value = 10*i + j + 100*n (two channels: value, -value).
    base = np.stack([10.0 * i + j + 100.0 * n for n in range(3)], axis=-1)
    field = np.stack([base, -base], axis=-1)[None].astype(np.float32)   # (1, h, w, 3, 2)
    rng = np.random.default_rng(1)
    xy = rng.uniform([0, 0], [(w - 1) * S, (h - 1) * S], size=(1, h, w, 3, 2)).astype(np.float32)
    out = bilinear_sample(field, xy, S).numpy()
    exact = 10.0 * xy[..., 1] / S + xy[..., 0] / S + 100.0 * np.arange(3)
    np.testing.assert_allclose(out[..., 0], exact, rtol=1e-5)
    np.testing.assert_allclose(out[..., 1], -exact, rtol=1e-5)


def test_bilinear_sample_clamps_points_off_the_map():
    h, w = 3, 4
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    field = (10.0 * i + j).astype(np.float32).reshape(1, h, w, 1, 1)
    points = np.zeros((1, h, w, 1, 2), np.float32)
    points[0, 0, 0, 0] = [-100.0, 1000.0]        # -> cell (h-1, 0) = 20
    points[0, 0, 1, 0] = [1000.0, -5.0]          # -> cell (0, w-1) = 3
    points[0, 0, 2, 0] = [1.5 * S, -50.0]        # -> (x=1.5, y=0) = 1.5
    out = bilinear_sample(field, points, S).numpy()[0, 0, :3, 0, 0]
    np.testing.assert_allclose(out, [20.0, 3.0, 1.5])
    assert np.all(np.isfinite(bilinear_sample(field, points * 1e30, S).numpy()))


def test_bilinear_sample_gradients_finite_and_nonzero():
    field = tf.Variable(np.random.default_rng(0).normal(size=(2, 3, 3, 2, 2)).astype(np.float32))
    points = tf.Variable(np.random.default_rng(1).uniform(-4, 20, size=(2, 3, 3, 2, 2)).astype(np.float32))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(bilinear_sample(field, points, S) ** 2)
    gf, gp = tape.gradient(y, [field, points])
    assert np.all(np.isfinite(gf.numpy())) and np.any(gf.numpy() != 0)
    assert np.all(np.isfinite(gp.numpy())) and np.any(gp.numpy() != 0)


# --------------------------------------------------------------- refinement
def _linear_short(h, w, kps):
    """Short offsets pointing exactly at fixed keypoints: S_k(q) = kp_k - q (linear in q)."""
    p = cell_points(h, w, S).numpy()
    return np.concatenate([np.asarray(k, np.float32) - p for k in kps], axis=-1)[None]


def test_refine_mid_constant_fields():
    """Constant short fields: every step adds S_b of the edge's target keypoint b."""
    h, w, edges = 4, 5, ((0, 1), (1, 2), (1, 0), (2, 1))
    short = np.zeros((1, h, w, 6), np.float32)
    for k, c in enumerate([(1.0, 2.0), (10.0, 20.0), (100.0, 200.0)]):
        short[..., 2 * k:2 * k + 2] = c
    mid = np.full((1, h, w, 8), 3.0, np.float32)
    out = refine_mid(mid, short, edges, S, steps=2).numpy()
    for e, (_, b) in enumerate(edges):
        np.testing.assert_allclose(out[..., 2 * e:2 * e + 2], 3.0 + 2 * short[..., 2 * b:2 * b + 2])
    np.testing.assert_array_equal(refine_mid(mid, short, edges, S, steps=0), mid)


def test_refine_mid_linear_field_snaps_to_keypoint():
    """S_b(q) = kp_b - q: one step gives M'(p) = kp_b - p where p + M(p) is on the map."""
    h, w = 6, 7
    kps = [(10.0, 12.0), (33.0, 20.0)]
    short = _linear_short(h, w, kps)
    mid = np.zeros((1, h, w, 4), np.float32)
    mid[..., 0:2] = (3.0, -2.0)     # edge (0, 1)
    mid[..., 2:4] = (-5.0, 4.0)     # edge (1, 0)
    p = cell_points(h, w, S).numpy()
    for steps in (1, 2):
        out = refine_mid(mid, short, ((0, 1), (1, 0)), S, steps=steps).numpy()[0]
        inside = ((p + (3.0, -2.0)) >= 0).all(-1) & ((p + (3.0, -2.0)) <= ((w - 1) * S, (h - 1) * S)).all(-1)
        np.testing.assert_allclose(out[inside, 0:2], (np.array(kps[1]) - p)[inside], atol=1e-4)
        inside = ((p + (-5.0, 4.0)) >= 0).all(-1) & ((p + (-5.0, 4.0)) <= ((w - 1) * S, (h - 1) * S)).all(-1)
        np.testing.assert_allclose(out[inside, 2:4], (np.array(kps[0]) - p)[inside], atol=1e-4)


def test_refine_long_self_then_short():
    """L(q) = (kp - q)/2: self-refinement gives 0.75 (kp - p); the short step then snaps to kp - p."""
    h, w = 5, 6
    kps = [(12.0, 9.0), (30.0, 20.0)]
    short = _linear_short(h, w, kps)
    long = 0.5 * short
    p = cell_points(h, w, S).numpy()
    exact = np.concatenate([np.array(k) - p for k in kps], axis=-1)
    no_short = refine_long(long, np.zeros_like(short), S, steps=1).numpy()[0]
    np.testing.assert_allclose(no_short, 0.75 * exact, atol=1e-4)
    full = refine_long(long, short, S, steps=1).numpy()[0]
    np.testing.assert_allclose(full, exact, atol=1e-4)
    np.testing.assert_array_equal(refine_long(long, short, S, steps=0), long)


def test_offset_refinement_layer_scales_and_refines():
    h, w = 4, 4
    edges = ((0, 1), (1, 0))
    layer = OffsetRefinement(edges, output_stride=S, offset_scale=16.0,
                             mid_refine_steps=1, long_refine_steps=0)
    short = np.full((1, h, w, 4), 0.5, np.float16)            # -> 8 px
    mid = np.full((1, h, w, 4), 0.25, np.float16)             # -> 4 px, + S_b = 12
    long = np.full((1, h, w, 4), -1.0, np.float16)            # -> -16 px, no refinement
    s, m, l = layer([short, mid, long])
    assert s.dtype == m.dtype == l.dtype == tf.float32
    np.testing.assert_allclose(s, 8.0)
    np.testing.assert_allclose(m, 12.0)
    np.testing.assert_allclose(l, -16.0)
    clone = OffsetRefinement.from_config(layer.get_config())
    assert clone.directed_edges == edges and clone.offset_scale == 16.0
    assert clone.mid_refine_steps == 1 and clone.long_refine_steps == 0
