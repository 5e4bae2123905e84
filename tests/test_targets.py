"""Target encoder: hand-made people with known answers, graph mode, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from strongpose.config import Config
from strongpose.skeleton import Skeleton
from strongpose.targets import MAP_KEYS, WEIGHT_KEYS, TargetEncoder, build_targets

# A three-point chain a - b - c (flip swaps a and c): small, and not COCO.
LINE = Skeleton(names=("a", "b", "c"), edges=((0, 1), (1, 2)), flip_pairs=((0, 2),),
                sigmas=(0.05, 0.05, 0.05))
# directed edges: 0:(a,b) 1:(b,c) 2:(b,a) 3:(c,b)
S = 4          # stride
H = W = 9      # map size -> input 33 x 33
R = 6.0        # disk radius
LR = 3.0       # limb radius


def make_inputs(people, *, skeleton=LINE, p_max=4, f=1, h=H, w=W, crowd=None,
                unannotated=None, masks=None):
    """Single-example inputs; people: list of (K, 3) arrays; masks: {person: (hm, wm)}."""
    k = skeleton.num_keypoints
    hm, wm = f * (h - 1) + 1, f * (w - 1) + 1
    kp = np.zeros((p_max, k, 3), np.float32)
    for i, p in enumerate(people):
        kp[i] = p
    person_masks = np.zeros((p_max, hm, wm), np.uint8)
    has_mask = np.zeros((p_max,), bool)
    for i, m in (masks or {}).items():
        person_masks[i], has_mask[i] = m, True
    return {
        "keypoints": kp,
        "num_people": np.int32(len(people)),
        "person_masks": person_masks,
        "has_mask": has_mask,
        "crowd_mask": np.zeros((hm, wm), np.uint8) if crowd is None else crowd.astype(np.uint8),
        "unannotated_mask": (np.zeros((hm, wm), np.uint8) if unannotated is None
                             else unannotated.astype(np.uint8)),
    }


def encode(inputs, skeleton=LINE, h=H, w=W, radius=R):
    out = build_targets(inputs, skeleton=skeleton, stride=S, map_size=(h, w),
                        disk_radius=radius, limb_radius=LR)
    return {k: v.numpy() for k, v in out.items()}


def person(*points):
    """(K, 3) from (x, y) or None (unlabelled) per keypoint."""
    return np.array([(0, 0, 0) if p is None else (p[0], p[1], 2) for p in points], np.float32)


def cell_points(h=H, w=W, stride=S):
    """(h, w, 2) input points (x, y) of the map cells."""
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([stride * jj, stride * ii], axis=-1).astype(np.float32)


def disk_cells(x, y, r, h=H, w=W):
    pts = cell_points(h, w)
    return ((pts[..., 0] - x) ** 2 + (pts[..., 1] - y) ** 2) <= r * r


# ------------------------------------------------------------------------ basics
def test_keys_shapes_dtypes_coco():
    sk = Skeleton()
    inputs = make_inputs([np.zeros((17, 3), np.float32)], skeleton=sk)
    out = encode(inputs, skeleton=sk)
    assert set(out) == set(MAP_KEYS) | set(WEIGHT_KEYS)
    k, e = 17, 16
    want = {"heatmap": k, "short": 2 * k, "mid": 4 * e, "long": 2 * k, "body": 1,
            "heatmap_weight": k, "short_weight": k, "mid_weight": 2 * e,
            "long_weight": k, "body_weight": 1}
    for key, c in want.items():
        assert out[key].shape == (H, W, c), key
        assert out[key].dtype == np.float32
    # No labelled keypoint: nothing but weights of 1 for heat and body.
    assert out["heatmap"].sum() == 0 and out["body"].sum() == 0
    assert out["heatmap_weight"].min() == 1 and out["body_weight"].min() == 1


def test_disk_and_short_single_keypoint():
    out = encode(make_inputs([person((10, 6), None, None)]))
    disk = disk_cells(10, 6, R)
    # Cells (i, j) = (1, 2), (1, 3), (2, 2), (2, 3): points (8|12, 4|8), each sqrt(8) away;
    # the next ring, e.g. (4, 4) or (8, 0), is sqrt(40) > 6 away.
    assert disk.sum() == 4 and disk[1:3, 2:4].all()
    np.testing.assert_array_equal(out["heatmap"][..., 0], disk)
    assert out["heatmap"][..., 1:].sum() == 0
    np.testing.assert_array_equal(out["short_weight"], out["heatmap"])
    pts = cell_points()
    want = np.where(disk[..., None], np.array([10, 6], np.float32) - pts, 0)
    np.testing.assert_allclose(out["short"][..., 0:2], want)
    assert out["short"][..., 2:].sum() == 0
    np.testing.assert_allclose(out["short"][1, 2, 0:2], [2, 2])    # (8, 4) -> (10, 6)
    np.testing.assert_allclose(out["short"][2, 3, 0:2], [-2, -2])  # (12, 8) -> (10, 6)


def test_disk_radius_is_inclusive():
    out = encode(make_inputs([person(None, (8, 8), None)]), radius=8.0)
    # Cells exactly 8 away: (0, 2), (4, 2), (2, 0), (2, 4); (1, 1) is 5.66 away; (0, 0) 11.3
    # and (0, 1) 8.94: the disk is the 3x3 block around (2, 2) plus those four: 13 cells.
    hm = out["heatmap"][..., 1]
    assert hm[0, 2] == hm[4, 2] == hm[2, 0] == hm[2, 4] == hm[1, 1] == 1
    assert hm[0, 0] == 0 and hm[0, 1] == 0 and hm.sum() == 13


def test_overlapping_disks_take_nearest_keypoint_and_its_person():
    # Two people, keypoint a at x=8 and x=16 (y=8); their b far apart vertically.
    p0 = person((8, 8), (8, 28), None)
    p1 = person((16, 8), (16, 0), None)
    out = encode(make_inputs([p0, p1]), radius=10.0)
    short, mid = out["short"], out["mid"]
    # Row i=2 (y=8): cell j=2 (x=8) is on p0's a, j=4 (x=16) on p1's a.
    np.testing.assert_allclose(short[2, 2, 0:2], [0, 0])
    np.testing.assert_allclose(short[2, 4, 0:2], [0, 0])
    np.testing.assert_allclose(short[2, 1, 0:2], [4, 0])    # x=4: nearest is p0 (8)
    np.testing.assert_allclose(short[2, 5, 0:2], [-4, 0])   # x=20: nearest is p1 (16)
    np.testing.assert_allclose(short[2, 3, 0:2], [-4, 0])   # x=12: a tie -> first person
    # Both disks overlap at x=12, and heatmap is still just 1.
    assert out["heatmap"][2, 3, 0] == 1
    # Mid-range a->b (pair 0) follows the nearest a's person.
    np.testing.assert_allclose(mid[2, 2, 0:2], [0, 20])     # p0: (8,8) -> (8,28)
    np.testing.assert_allclose(mid[2, 4, 0:2], [0, -8])     # p1: (16,8) -> (16,0)
    np.testing.assert_allclose(mid[2, 5, 0:2], [-4, -8])    # (20,8) -> (16,0)
    np.testing.assert_allclose(mid[2, 1, 0:2], [4, 20])     # (4,8) -> (8,28)


def test_mid_range_both_directions_and_missing_keypoints():
    # a and b labelled, c missing.
    p = person((8, 8), (24, 8), None)
    out = encode(make_inputs([p]))
    mw, mid = out["mid_weight"], out["mid"]
    disk_a, disk_b = disk_cells(8, 8, R), disk_cells(24, 8, R)
    np.testing.assert_array_equal(mw[..., 0], disk_a)     # a -> b
    np.testing.assert_array_equal(mw[..., 2], disk_b)     # b -> a
    assert mw[..., 1].sum() == 0                          # b -> c: c missing
    assert mw[..., 3].sum() == 0                          # c -> b: no c disk
    pts = cell_points()
    np.testing.assert_allclose(mid[..., 0:2], np.where(disk_a[..., None], [24, 8] - pts, 0))
    np.testing.assert_allclose(mid[..., 4:6], np.where(disk_b[..., None], [8, 8] - pts, 0))
    assert np.abs(mid[..., 2:4]).sum() == 0 and np.abs(mid[..., 6:8]).sum() == 0
    # Known cell: (2, 2) = (8, 8) on a: mid (16, 0); (2, 6) = (24, 8) on b: mid (-16, 0).
    np.testing.assert_allclose(mid[2, 2, 0:2], [16, 0])
    np.testing.assert_allclose(mid[2, 6, 4:6], [-16, 0])


def test_padding_people_and_unlabelled_keypoints_contribute_nothing():
    p = person((8, 8), None, (24, 24))
    ghost = person((16, 16), (20, 20), (28, 8))
    inputs = make_inputs([p, ghost], masks={1: np.ones((H, W), np.uint8)})
    inputs["num_people"] = np.int32(1)            # ghost is padding
    inputs["keypoints"][0, 1] = (16, 16, 0)       # v == 0 with coordinates: unlabelled
    out = encode(inputs)
    ref = encode(make_inputs([person((8, 8), None, (24, 24))], p_max=1))
    for key in out:
        np.testing.assert_array_equal(out[key], ref[key], err_msg=key)
    assert out["heatmap"][..., 1].sum() == 0


# ------------------------------------------------------------------------ bodies
def segment_d2(pts, a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    d = b - a
    t = np.clip(((pts - a) @ d) / max(d @ d, 1e-12), 0, 1)
    close = a + t[..., None] * d
    return ((pts - close) ** 2).sum(-1)


def test_body_from_limbs_for_person_without_mask():
    # a-b labelled (a limb), c missing: body = limb a-b (half-thickness LR) + disks.
    p = person((4, 4), (28, 20), None)
    out = encode(make_inputs([p]))
    pts = cell_points()
    want = segment_d2(pts, (4, 4), (28, 20)) <= LR * LR
    np.testing.assert_array_equal(out["body"][..., 0], want)
    assert out["body"][1, 1, 0] == 1 and out["body"][4, 6, 0] == 1   # (4,4)... (24, 16) on the limb
    assert out["body"][0, 8, 0] == 0
    # A lone keypoint (no labelled neighbour) still gives a disk of radius LR.
    lone = person(None, None, (16, 16))
    out = encode(make_inputs([lone]))
    np.testing.assert_array_equal(out["body"][..., 0], disk_cells(16, 16, LR))
    assert out["body"].sum() == 1   # LR = 3 < stride: only the cell on the point


def test_body_from_mask_at_higher_resolution():
    f = 2
    mask = np.zeros((f * (H - 1) + 1, f * (W - 1) + 1), np.uint8)
    mask[3:9, 5:12] = 1          # rows 3..8, cols 5..11 -> cells i in {2,3,4}, j in {3,4,5}
    p = person((4, 4), (28, 20), None)         # limbs would be elsewhere; mask wins
    out = encode(make_inputs([p], f=f, masks={0: mask}))
    np.testing.assert_array_equal(out["body"][..., 0], mask[::f, ::f])
    assert out["body"][2:5, 3:6, 0].all() and out["body"].sum() == 9
    # Long-range inside that body only: to a and b, not to c (missing).
    lw = out["long_weight"]
    np.testing.assert_array_equal(lw[..., 0], mask[::f, ::f])
    np.testing.assert_array_equal(lw[..., 1], mask[::f, ::f])
    assert lw[..., 2].sum() == 0
    np.testing.assert_allclose(out["long"][3, 4, 0:4], [4 - 16, 4 - 12, 28 - 16, 20 - 12])


def test_long_range_only_where_exactly_one_body():
    m0 = np.zeros((H, W), np.uint8)
    m1 = np.zeros((H, W), np.uint8)
    un = np.zeros((H, W), np.uint8)
    m0[1:5, 1:5] = 1
    m1[3:7, 3:7] = 1
    un[6:9, 0:2] = 1
    m0[6:8, 0:2] = 1             # overlaps the unannotated person at rows 6..7
    p0 = person((4, 4), (12, 12), None)
    p1 = person((20, 20), None, (24, 24))
    out = encode(make_inputs([p0, p1], masks={0: m0, 1: m1}, unannotated=un))
    lw, lg = out["long_weight"], out["long"]
    only0 = (m0 == 1) & (m1 == 0) & (un == 0)
    only1 = (m1 == 1) & (m0 == 0) & (un == 0)
    np.testing.assert_array_equal(lw[..., 0], only0 | only1)  # both have a
    np.testing.assert_array_equal(lw[..., 1], only0)          # p1 lacks b
    np.testing.assert_array_equal(lw[..., 2], only1)          # p0 lacks c
    assert lw[4, 4].sum() == 0 and lw[3, 3].sum() == 0        # overlap: ambiguous
    assert lw[6, 0].sum() == 0                                # p0 + unannotated
    np.testing.assert_allclose(lg[1, 1, 0:4], [0, 0, 8, 8])   # (4,4) -> p0's a, b
    np.testing.assert_allclose(lg[5, 5], [0, 0, 0, 0, 4, 4])  # (20,20) -> p1's a, (no b), c
    assert np.abs(lg[4, 4]).sum() == 0
    # Body: union of both masks and the unannotated one.
    np.testing.assert_array_equal(out["body"][..., 0], (m0 | m1 | un).astype(bool))


# ---------------------------------------------------------------- ignore regions
def test_crowd_region():
    crowd = np.zeros((H, W), np.uint8)
    crowd[0:4, 0:9] = 1
    p = person((8, 8), None, None)
    out = encode(make_inputs([p], crowd=crowd))
    disk = disk_cells(8, 8, R)
    hw = out["heatmap_weight"]
    for k in range(3):   # 0 in crowd except inside that type's labelled disk
        want = ~crowd.astype(bool) | (disk if k == 0 else False)
        np.testing.assert_array_equal(hw[..., k], want)
    assert hw[2, 2, 0] == 1 and hw[2, 2, 1] == 0 and hw[5, 5, 0] == 1
    np.testing.assert_array_equal(out["body_weight"][..., 0], crowd == 0)
    np.testing.assert_array_equal(out["heatmap"][..., 0], disk)   # targets unchanged


def test_unannotated_person():
    un = np.zeros((H, W), np.uint8)
    un[4:9, 4:9] = 1
    p = person((20, 20), None, None)          # its disk lies partly inside un
    out = encode(make_inputs([p], unannotated=un))
    disk = disk_cells(20, 20, R)
    np.testing.assert_array_equal(out["heatmap_weight"][..., 0], (un == 0) | disk)
    np.testing.assert_array_equal(out["heatmap_weight"][..., 1], un == 0)
    np.testing.assert_array_equal(out["body"][..., 0], (un == 1) | disk_cells(20, 20, LR))
    assert out["body_weight"].min() == 1
    # p's own body (a disk of LR at (20,20), cell (5,5)) lies inside un: ambiguous.
    assert out["long_weight"].sum() == 0


def test_image_without_people_still_has_body_targets():
    un = np.zeros((H, W), np.uint8)
    un[2:4, 2:4] = 1
    out = encode(make_inputs([], unannotated=un))
    assert out["body"].sum() == 4 and out["heatmap"].sum() == 0
    assert out["heatmap_weight"][2:4, 2:4].sum() == 0


# ------------------------------------------------------------- batch and graph
def random_inputs(rng, n_people, skeleton=LINE, p_max=4, f=2):
    hm = f * (H - 1) + 1
    people = []
    for _ in range(n_people):
        p = np.zeros((skeleton.num_keypoints, 3), np.float32)
        p[:, :2] = rng.integers(0, S * (H - 1) + 1, (skeleton.num_keypoints, 2))
        p[:, 2] = rng.integers(0, 3, skeleton.num_keypoints)
        people.append(p)
    masks = {i: (rng.uniform(size=(hm, hm)) > 0.6).astype(np.uint8)
             for i in range(n_people) if rng.uniform() > 0.5}
    return make_inputs(people, skeleton=skeleton, p_max=p_max, f=f, masks=masks,
                       crowd=rng.uniform(size=(hm, hm)) > 0.9,
                       unannotated=rng.uniform(size=(hm, hm)) > 0.9)


def stack(examples):
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def test_single_and_batched_agree(rng):
    examples = [random_inputs(rng, n) for n in (3, 0, 4)]
    batched = encode(stack(examples))
    for b, ex in enumerate(examples):
        single = encode(ex)
        for key in single:
            np.testing.assert_array_equal(batched[key][b], single[key], err_msg=key)


def test_graph_mode_tf_function_and_dataset(rng):
    examples = [random_inputs(rng, n) for n in (2, 4)]
    eager = encode(stack(examples))
    enc = TargetEncoder(LINE, S, R, LR)
    # tf.function with fully dynamic shapes (also exercises the run-time mask check).
    spec = {k: tf.TensorSpec([None] * np.ndim(v), tf.as_dtype(np.asarray(v).dtype))
            for k, v in stack(examples).items()}
    fn = tf.function(lambda d: enc(d, (H, W)), input_signature=[spec])
    graph = fn({k: tf.constant(v) for k, v in stack(examples).items()})
    for key in eager:
        np.testing.assert_array_equal(graph[key].numpy(), eager[key], err_msg=key)
    # tf.data map on single examples, then batch.
    ds = tf.data.Dataset.from_tensor_slices(stack(examples)).map(lambda d: enc(d, (H, W))).batch(2)
    (got,) = list(ds)
    for key in eager:
        np.testing.assert_array_equal(got[key].numpy(), eager[key], err_msg=key)


# -------------------------------------------------------------------- reference
def reference(inputs, skeleton=LINE, h=H, w=W):
    """Loop-based reference of MAPS.md on one example (slow; small sizes only)."""
    kp, n = inputs["keypoints"], int(inputs["num_people"])
    f = (inputs["crowd_mask"].shape[0] - 1) // (h - 1)
    sub = lambda m: m[::f, ::f].astype(bool)  # noqa: E731
    k_count, edges = skeleton.num_keypoints, skeleton.directed_edges
    out = {"heatmap": np.zeros((h, w, k_count)), "short": np.zeros((h, w, 2 * k_count)),
           "mid": np.zeros((h, w, 2 * len(edges))), "mid_weight": np.zeros((h, w, len(edges))),
           "long": np.zeros((h, w, 2 * k_count)), "long_weight": np.zeros((h, w, k_count))}
    bodies = []
    for j in range(n):
        if inputs["has_mask"][j]:
            bodies.append(sub(inputs["person_masks"][j]))
            continue
        body = np.zeros((h, w), bool)
        pts = cell_points(h, w)
        for k in range(k_count):
            if kp[j, k, 2] > 0:
                body |= disk_cells(kp[j, k, 0], kp[j, k, 1], LR, h, w)
        for a, b in skeleton.edges:
            if kp[j, a, 2] > 0 and kp[j, b, 2] > 0:
                body |= segment_d2(pts, kp[j, a, :2], kp[j, b, :2]) <= LR * LR
        bodies.append(body)
    un = sub(inputs["unannotated_mask"])
    for i in range(h):
        for jj in range(w):
            p = np.array([S * jj, S * i], np.float32)
            near = {}
            for k in range(k_count):
                d = [np.sum((kp[q, k, :2] - p) ** 2) if kp[q, k, 2] > 0 else np.inf for q in range(n)]
                if d and min(d) <= R * R:
                    q = int(np.argmin(d))
                    near[k] = q
                    out["heatmap"][i, jj, k] = 1
                    out["short"][i, jj, 2 * k:2 * k + 2] = kp[q, k, :2] - p
            for e, (a, b) in enumerate(edges):
                if a in near and kp[near[a], b, 2] > 0:
                    out["mid_weight"][i, jj, e] = 1
                    out["mid"][i, jj, 2 * e:2 * e + 2] = kp[near[a], b, :2] - p
            owners = [q for q in range(n) if bodies[q][i, jj]]
            if len(owners) == 1 and not un[i, jj]:
                q = owners[0]
                for k in range(k_count):
                    if kp[q, k, 2] > 0:
                        out["long_weight"][i, jj, k] = 1
                        out["long"][i, jj, 2 * k:2 * k + 2] = kp[q, k, :2] - p
    body = un.copy()
    for bd in bodies:
        body |= bd
    out["body"] = body[..., None]
    ignore = sub(inputs["crowd_mask"]) | un
    out["heatmap_weight"] = ~ignore[..., None] | out["heatmap"].astype(bool)
    out["short_weight"] = out["heatmap"]
    out["body_weight"] = ~sub(inputs["crowd_mask"])[..., None]
    return out


def test_matches_loop_reference_on_random_people(rng):
    for n in (1, 3, 4, 6):
        inputs = random_inputs(rng, n, p_max=6)
        got, want = encode(inputs), reference(inputs)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], atol=1e-4, err_msg=f"{key} n={n}")


# ------------------------------------------------------------------- bad input
def test_wrong_mask_shape_static_is_a_value_error():
    inputs = make_inputs([person((8, 8), None, None)])
    inputs["person_masks"] = np.zeros((4, 20, 20), np.uint8)   # 19 is not f*8
    with pytest.raises(ValueError, match="person_masks is 20x20.*f\\*\\(h-1\\)\\+1"):
        encode(inputs)
    inputs = make_inputs([person((8, 8), None, None)])
    inputs["crowd_mask"] = np.zeros((17, 33), np.uint8)        # f=2 rows, f=4 columns
    with pytest.raises(ValueError, match="crowd_mask"):
        encode(inputs)


def test_wrong_mask_shape_dynamic_is_an_assertion():
    inputs = make_inputs([person((8, 8), None, None)])
    inputs["unannotated_mask"] = np.zeros((20, 20), np.uint8)
    enc = TargetEncoder(LINE, S, R, LR)
    spec = {k: tf.TensorSpec([None] * np.ndim(v), tf.as_dtype(np.asarray(v).dtype))
            for k, v in inputs.items()}
    fn = tf.function(lambda d: enc(d, (H, W)), input_signature=[spec])
    with pytest.raises(tf.errors.InvalidArgumentError, match="unannotated_mask"):
        fn({k: tf.constant(v) for k, v in inputs.items()})


def test_other_bad_inputs():
    good = make_inputs([person((8, 8), None, None)])
    with pytest.raises(ValueError, match="3 types|skeleton has 17"):
        encode(good, skeleton=Skeleton())
    bad = dict(good)
    del bad["crowd_mask"]
    with pytest.raises(ValueError, match="crowd_mask"):
        encode(bad)
    bad = dict(good, has_mask=np.zeros((1, 4), bool))
    with pytest.raises(ValueError, match="has_mask must have rank 1"):
        encode(bad)
    bad = dict(good, has_mask=np.zeros((3,), bool))
    with pytest.raises(ValueError, match="number of people"):
        encode(bad)
    with pytest.raises(ValueError, match="stride"):
        TargetEncoder(LINE, 0, R, LR)
    with pytest.raises(ValueError, match="disk_radius"):
        TargetEncoder(LINE, S, -1.0, LR)


def test_from_config():
    cfg = Config()
    enc = TargetEncoder.from_config(cfg)
    assert (enc.stride, enc.disk_radius, enc.limb_radius) == (8, 32.0, 8.0)
    assert enc.skeleton == cfg.skeleton
    assert TargetEncoder.from_config(cfg, stride=16).stride == 16
    assert enc.map_size_for((401, 321)) == (51, 41)
    with pytest.raises(ValueError, match="8\\*n \\+ 1"):
        enc.map_size_for((400, 401))


# ------------------------------------------------------------------- real data
def test_real_coco_mini_annotations(coco_mini_annotations):
    """Encode real COCO people: every labelled keypoint sits in its disk, short offsets
    point at the nearest labelled keypoint of their type, bodies are the masks."""
    from strongpose.coco import CocoKeypoints, pad_to_stride

    sk, stride = Skeleton(), 8
    coco = CocoKeypoints(coco_mini_annotations)
    enc = TargetEncoder(sk, stride, 32.0, 8.0)
    crowded = sorted(coco.image_ids, key=lambda i: -len(coco.annotations(i)))[:3]
    for image_id in crowded:
        gt = pad_to_stride(coco.ground_truth(image_id, sk, max_people=32), stride)
        inputs = gt.as_target_inputs()
        h, w = enc.map_size_for((gt.height, gt.width))
        out = {k: v.numpy() for k, v in enc(inputs, (h, w)).items()}
        kp = inputs["keypoints"][: gt.num_people]
        pts = cell_points(h, w, stride)
        for k in range(sk.num_keypoints):
            labelled = kp[kp[:, k, 2] > 0, k, :2]
            for x, y in labelled:
                i, j = int(round(y / stride)), int(round(x / stride))
                assert out["heatmap"][i, j, k] == 1
                end = pts[i, j] + out["short"][i, j, 2 * k:2 * k + 2]
                d_end = np.hypot(*(end - pts[i, j]))
                assert d_end <= np.hypot(x - pts[i, j, 0], y - pts[i, j, 1]) + 1e-3
                assert np.min(np.hypot(*(labelled - end).T)) < 1e-3   # lands on a keypoint
        sub = lambda m: m[..., ::stride, ::stride].astype(bool)  # noqa: E731
        bodies = sub(inputs["person_masks"][: gt.num_people]).any(0) | sub(inputs["unannotated_mask"])
        assert inputs["has_mask"][: gt.num_people].all()
        np.testing.assert_array_equal(out["body"][..., 0], bodies)
        assert out["long_weight"].sum() > 0 and out["mid_weight"].sum() > 0
