"""strongpose.export: SavedModel and TFLite maps equal the Keras model's; the same decoder reads them."""

import subprocess
import sys

import numpy as np
import pytest

from strongpose import export
from strongpose.config import load_config
from strongpose.maps import OUTPUT_KEYS
from strongpose.predictor import Predictor, keras_network, load_keras_model, prepare

SIZE = 65


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cfg = load_config("tiny", [f"model.input_size={SIZE}"])
    model = load_keras_model(cfg, None)
    out = export.export_saved_model(model, cfg, tmp_path_factory.mktemp("exported"))
    return cfg, model, out


def _image(seed=0, h=40, w=57):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


@pytest.mark.slow
def test_saved_model_maps_equal_keras_and_decode_the_same(exported):
    import tensorflow as tf
    cfg, model, out = exported
    x, _ = prepare(_image(), SIZE, 8)
    x = np.rint(x)[None]                   # whole numbers: the uint8 signature sees the same image
    expected = {k: v.numpy() for k, v in model(x, training=False).items()}
    loaded = tf.saved_model.load(str(out))
    for name, value in (("serving_default", x), ("serving_uint8", x.astype(np.uint8))):
        got = loaded.signatures[name](images=tf.constant(value))
        assert set(got) == set(OUTPUT_KEYS)
        for k in OUTPUT_KEYS:
            np.testing.assert_allclose(got[k].numpy(), expected[k], atol=1e-4, rtol=1e-4, err_msg=f"{name} {k}")
    # The Predictor runs the SavedModel folder (config.yaml inside) like the Keras model.
    a = Predictor.load(out)(_image(1))
    b = Predictor(keras_network(model), cfg)(_image(1))
    assert len(a) == len(b)
    for pa, pb in zip(a, b):
        np.testing.assert_allclose(pa.keypoints, pb.keypoints, atol=1e-2)


@pytest.mark.slow
def test_tflite_maps_equal_keras(exported, tmp_path):
    cfg, model, _ = exported
    path = export.export_tflite(model, tmp_path / "m.tflite", SIZE)
    x, _ = prepare(_image(2), SIZE, 8)                       # (49, 65): pad to the fixed square
    x = np.pad(x, ((0, SIZE - x.shape[0]), (0, SIZE - x.shape[1]), (0, 0)))
    expected = {k: v.numpy() for k, v in model(x[None], training=False).items()}
    got = export.tflite_maps(path, x[None])
    for k in OUTPUT_KEYS:
        np.testing.assert_allclose(got[k], expected[k], atol=1e-3, rtol=1e-3, err_msg=k)


def test_cli_help_and_missing_weights(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "strongpose.export", *a],  # noqa: E731
                                    capture_output=True, text=True)
    assert run("--help").returncode == 0
    bad = run(str(tmp_path / "none"), str(tmp_path / "out"))
    assert bad.returncode == 2 and "none" in bad.stderr and not (tmp_path / "out").exists()
