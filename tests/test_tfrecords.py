"""strongpose.tfrecords: the converter (atomic shards, bad images skipped) and the reader
giving the JSON path's batches for the same seed."""

import json
import shutil

import numpy as np
import pytest

from strongpose.config import load_config
from strongpose.data_generator import make_dataset
from strongpose.synthetic import write_dataset
from strongpose.tfrecords import META_FILE, TFRecordSource, main

SIZE = 129


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfr_synth")
    ann = write_dataset(root, split="train", images=9, seed=4, size=(113, SIZE), crowd_rate=0.6,
                        mask_only_rate=0.3, empty_rate=0.2)
    return root, ann


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny", [f"model.input_size={SIZE}", "data.shuffle_buffer=4"])


def _batches(ds, count):
    out = []
    for images, targets in ds.take(count):
        out.append((images.numpy(), {k: v.numpy() for k, v in targets.items()}))
    return out


def _assert_same(a, b):
    assert len(a) == len(b) and a
    for (img_a, t_a), (img_b, t_b) in zip(a, b):
        np.testing.assert_array_equal(img_a, img_b)
        assert set(t_a) == set(t_b)
        for key in t_a:
            np.testing.assert_array_equal(t_a[key], t_b[key], err_msg=key)


def _convert(data, out, *extra):
    return main([str(data), str(out), "--split", "train", "--config", "tiny", "--quiet",
                 f"model.input_size={SIZE}", *extra])


def test_json_and_tfrecord_paths_give_the_same_batches(cfg, synth, tmp_path):
    root, ann = synth
    meta = _convert(root, tmp_path / "tfr")                 # a data root: annotations/ + train/
    assert meta["images"] == 9 and len(meta["shards"]) == 1 and not meta["skipped"]
    assert sorted(p.name for p in (tmp_path / "tfr").iterdir() if p.is_file()) == \
        sorted(meta["shards"] + [META_FILE])                # no temporary file left
    kw = dict(seed=7, batch_size=2, progress=False, empty_image_rate=0.5)
    # Training: shuffled, repeated (9 images, window 4: several windows; ~7 kept per epoch).
    json_batches = _batches(make_dataset(cfg, ann, root / "train", tmp_path / "c", **kw), 7)
    tfr_batches = _batches(make_dataset(cfg, "train", tfrecord_dir=tmp_path / "tfr", **kw), 7)
    _assert_same(json_batches, tfr_batches)
    other = _batches(make_dataset(cfg, "train", tfrecord_dir=tmp_path / "tfr",
                                  **{**kw, "seed": 8}), 1)
    assert not np.array_equal(other[0][0], tfr_batches[0][0])
    # One pass in file order, target inputs (for the train step) instead of targets.
    kw = dict(training=False, batch_size=4, progress=False, with_targets=False)
    _assert_same(_batches(make_dataset(cfg, ann, root / "train", tmp_path / "c", **kw), 3),
                 _batches(make_dataset(cfg, "train", tfrecord_dir=tmp_path / "tfr", **kw), 3))


def test_several_shards_same_batches_as_json_with_that_layout(cfg, synth, tmp_path, monkeypatch):
    from strongpose import data_generator
    root, ann = synth
    meta = _convert(ann, tmp_path / "tfr", "--shards", "3")   # a JSON: images in ../train
    assert meta["shard_starts"] == [0, 3, 6, 9]
    monkeypatch.setattr(data_generator, "IMAGES_PER_SHARD", 3)  # the JSON path's default: 3 shards
    kw = dict(seed=2, batch_size=3, progress=False)
    _assert_same(_batches(make_dataset(cfg, ann, root / "train", tmp_path / "c", **kw), 4),
                 _batches(make_dataset(cfg, "train", tfrecord_dir=tmp_path / "tfr", **kw), 4))


def test_bad_images_skipped_and_counted_and_config_checked(cfg, synth, tmp_path, capsys):
    root, ann = synth
    images = tmp_path / "images"
    shutil.copytree(root / "train", images)
    victims = sorted(images.glob("*.jpg"))[:2]
    victims[0].write_bytes(b"not a jpeg")
    victims[1].unlink()
    meta = _convert(ann, tmp_path / "tfr", "--images", str(images))
    assert meta["images"] == 7 and len(meta["skipped"]) == 2
    assert "2 image(s) skipped" in capsys.readouterr().out
    assert json.loads((tmp_path / "tfr" / META_FILE).read_text())["skipped"] == meta["skipped"]
    ds = make_dataset(cfg, "train", tfrecord_dir=tmp_path / "tfr", training=False, batch_size=4,
                      progress=False)
    assert sum(int(x.shape[0]) for x, _ in ds) == 7
    other = load_config("tiny", [f"model.input_size={SIZE}", "codec.max_people=8"])
    with pytest.raises(ValueError, match="max_people"):
        make_dataset(other, "train", tfrecord_dir=tmp_path / "tfr", progress=False)
    with pytest.raises(FileNotFoundError, match="meta.json"):
        TFRecordSource(tmp_path)
    with pytest.raises(Exception, match="allow_eval_split"):
        make_dataset(cfg, "val", tfrecord_dir=tmp_path / "tfr", progress=False)


def test_coco_mini_json_and_tfrecords_agree(coco_mini_annotations, tmp_path):
    cfg = load_config("tiny")
    images = coco_mini_annotations.parents[1] / "train2017"
    meta = main([str(coco_mini_annotations), str(tmp_path / "tfr"), "--split", "train2017",
                 "--config", "tiny", "--quiet", "--cache", str(tmp_path / "c")])
    assert meta["images"] == 80 and meta["people"] == 86
    kw = dict(seed=1, batch_size=2, progress=False)
    _assert_same(_batches(make_dataset(cfg, coco_mini_annotations, images, tmp_path / "c", **kw), 2),
                 _batches(make_dataset(cfg, "train2017", tfrecord_dir=tmp_path / "tfr", **kw), 2))
