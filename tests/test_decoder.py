"""The decoder's boundary (checked inputs), its inverse face (network outputs -> people)
and the bounds on its work (candidate caps)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from scenes import R, SK, STRIDE, make_maps, person_at
from strongpose.config import Config, DecoderConfig
from strongpose.geometry import ImageTransform
from strongpose.maps import MAPS
from strongpose.post_proc import Decoder, decode, find_candidates, hough_maps

DECODER = Decoder(skeleton=SK, stride=STRIDE, disk_radius=R)


def scene() -> dict[str, np.ndarray]:
    return make_maps([person_at(40, 30, missing=(10,)), person_at(150, 10)], (41, 41))


def logits_of(maps: dict[str, np.ndarray], eps: float = 1e-6) -> dict[str, np.ndarray]:
    """Network-style outputs of exact maps: logits of the clipped 0/1 probability maps."""
    out = {}
    for spec in MAPS:
        arr = maps[spec.key]
        if spec.logits:
            p = np.clip(arr, eps, 1 - eps)
            arr = np.log(p / (1 - p))
        out[spec.output_key] = arr.astype(np.float32)
    return out


def same_people(a, b, px: float = 1e-3, score: float = 1e-4) -> None:
    """Same people: found keypoints within ``px``, all scores within ``score``. (Where a
    keypoint is not found, its position is only a guess from votes whose weights are
    ~0 here and 1e-6 logits' heat there, so it may differ.)"""
    assert len(a) == len(b)
    for p, q in zip(a, b):
        np.testing.assert_allclose(p.keypoints[:, 2], q.keypoints[:, 2], atol=score)
        found = q.keypoints[:, 2] > 0
        np.testing.assert_allclose(p.keypoints[found, :2], q.keypoints[found, :2], atol=px)
        assert p.score == pytest.approx(q.score, abs=score)


# ------------------------------------------------------------------ checked inputs
@pytest.mark.parametrize("key", ["heatmap", "short", "mid", "long", "body"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_any_map_is_a_clear_error(key, bad):
    maps = scene()
    maps[key][3, 4, 0] = bad
    with pytest.raises(ValueError, match=rf"'{key}' holds 1 NaN/Inf"):
        DECODER(maps)


@pytest.mark.parametrize("key", ["heatmap", "body"])
def test_logits_in_place_of_probabilities_are_a_clear_error(key):
    maps = scene()
    maps[key] = logits_of(maps)[f"{key}_logits"]
    with pytest.raises(ValueError, match=rf"'{key}' holds values outside \[0, 1\].*logits.*decode_outputs"):
        DECODER(maps)


def test_maps_of_different_sizes_are_an_error():
    maps = scene()
    maps["mid"] = maps["mid"][:-1]
    with pytest.raises(ValueError, match="'mid' has shape"):
        DECODER(maps)


def test_unused_maps_are_not_required():
    maps = scene()
    cfg = dataclasses.replace(DecoderConfig(), use_long_range=False, instance_masks=False)
    people = decode({k: maps[k] for k in ("heatmap", "short", "mid")}, skeleton=SK, stride=STRIDE,
                    disk_radius=R, cfg=cfg)
    assert len(people) >= 2


def test_keypoints_lie_inside_the_original_image():
    maps = scene()
    maps["short"] += 100.0                     # every vote and snap lands 100 px right and down
    maps["mid"] -= 1e6
    t = ImageTransform(scale=0.5, original_width=150, original_height=160)
    people = DECODER(maps, t)
    assert people
    for p in people:
        assert np.isfinite(p.keypoints).all() and np.isfinite(p.score)
        assert (p.keypoints[:, 0] >= 0).all() and (p.keypoints[:, 0] <= 149).all()
        assert (p.keypoints[:, 1] >= 0).all() and (p.keypoints[:, 1] <= 159).all()


# ---------------------------------------------------------------- the inverse face
def test_decode_outputs_gives_the_people_of_the_maps():
    a, b = scene(), make_maps([person_at(60, 100)], (41, 41))
    outputs = {k: np.stack([x, y]) for (k, x), y in zip(logits_of(a).items(), logits_of(b).values())}
    t = ImageTransform(scale=2.0, offset_x=4.0, offset_y=0.0, original_width=160, original_height=165)
    got = DECODER.decode_outputs(outputs, [None, t])
    assert len(got) == 2
    same_people(got[0], DECODER(a))
    same_people(got[1], DECODER(b, t))
    assert len(got[0]) >= 2 and len(got[1]) == 1


def test_decode_outputs_takes_backend_tensors():
    tf = pytest.importorskip("tensorflow")
    maps = scene()
    outputs = {k: tf.constant(v[None]) for k, v in logits_of(maps).items()}
    same_people(DECODER.decode_outputs(outputs)[0], DECODER(maps))


def test_decode_outputs_of_the_model_on_exact_targets(coco):
    """Exact targets from the encoder, as the network would emit them, decode to the
    people of the maps and back to each image's ground truth."""
    from strongpose.coco import pad_to_stride
    from strongpose.targets import TargetEncoder

    cfg = Config()
    encoder = TargetEncoder.from_config(cfg, stride=STRIDE)
    decoder = Decoder.from_config(cfg, stride=STRIDE)
    for image_id in coco.image_ids[:2]:
        gt = pad_to_stride(coco.ground_truth(image_id, cfg.skeleton, cfg.codec.max_people), STRIDE)
        out = encoder(gt.as_target_inputs(), map_size=encoder.map_size_for((gt.height, gt.width)))
        maps = {s.key: np.asarray(out[s.key]) for s in MAPS}
        people = decoder.decode_outputs({k: v[None] for k, v in logits_of(maps).items()})[0]
        same_people(people, decoder(maps))
        labelled = gt.keypoints[: gt.num_people]
        labelled = labelled[(labelled[:, :, 2] > 0).any(axis=1)]
        assert len(people) == len(labelled)
        for truth in labelled:
            lab = truth[:, 2] > 0
            err = min(np.abs(p.keypoints[lab, :2] - truth[lab, :2]).max() for p in people)
            assert err < 0.5


def test_decode_outputs_bad_input():
    outputs = logits_of(scene())
    with pytest.raises(ValueError, match="batched"):
        DECODER.decode_outputs(outputs)
    batched = {k: v[None] for k, v in outputs.items()}
    with pytest.raises(ValueError, match="lack 'mid'"):
        DECODER.decode_outputs({k: v for k, v in batched.items() if k != "mid"})
    with pytest.raises(ValueError, match="2 transforms for a batch of 1"):
        DECODER.decode_outputs(batched, [None, None])
    batched["short"][0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="'short' holds NaN"):
        DECODER.decode_outputs(batched)


# ------------------------------------------------------------------ bounded work
def test_candidates_are_ranked_and_capped(rng):
    heat = rng.uniform(0.4, 0.6, (33, 33, SK.num_keypoints)).astype(np.float32)
    short = rng.normal(0, 12, (33, 33, 2 * SK.num_keypoints)).astype(np.float32)
    strong, scores = hough_maps(heat, short, STRIDE, R)
    everything = find_candidates(strong, scores, short, stride=STRIDE, threshold=0.01,
                                 max_per_type=10**6, max_total=10**6)
    assert len(everything) > 500
    assert (np.diff(everything.scores) <= 0).all()
    capped = find_candidates(strong, scores, short, stride=STRIDE, threshold=0.01,
                             max_per_type=7, max_total=100)
    assert len(capped) == 100 and np.bincount(capped.types).max() <= 7
    assert (np.diff(capped.scores) <= 0).all()
    # The kept ones are the best of each type.
    for t in range(SK.num_keypoints):
        best = np.sort(everything.scores[everything.types == t])[::-1][:7]
        mine = capped.scores[capped.types == t]
        np.testing.assert_array_equal(mine, best[:mine.size])


def test_people_never_exceed_max_people():
    people = [person_at(10 + 90 * (i % 4), 20 + 230 * (i // 4)) for i in range(8)]
    maps = make_maps(people, (61, 51))
    cfg = dataclasses.replace(DecoderConfig(), max_people=3)
    assert len(decode(maps, skeleton=SK, stride=STRIDE, disk_radius=R, cfg=cfg)) == 3
