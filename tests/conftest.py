"""Shared fixtures: quiet TensorFlow, the coco-mini location, a fixed seed, the synthetic
COCO set, Keras' mixed-precision policy."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
COCO_MINI = REPO.parent / "shared" / "data" / "coco-mini"
COCO_MINI_ANN = COCO_MINI / "annotations" / "person_keypoints_train2017.json"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def coco_mini_annotations() -> Path:
    """Path to coco-mini's keypoint JSON; skips the test where it is absent."""
    if not COCO_MINI_ANN.is_file():
        pytest.skip(f"coco-mini not found at {COCO_MINI}")
    return COCO_MINI_ANN


@pytest.fixture
def synth(tmp_path):
    """A small COCO-format data set written by tests/coco_synth.py."""
    from coco_synth import write_synth_coco
    return write_synth_coco(tmp_path / "synth")


@pytest.fixture
def coco(synth):
    """The synthetic data set read with strongpose.coco."""
    from strongpose.coco import CocoKeypoints
    return CocoKeypoints(synth.annotation_file, image_dir=synth.image_dir)


@pytest.fixture
def mixed_float16():
    """Keras' global dtype policy is ``mixed_float16`` during the test, the previous after."""
    keras = pytest.importorskip("keras")
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy(before)
