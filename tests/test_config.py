"""Config: presets, YAML files, overrides, and clear errors naming the key."""

import pytest

from strongpose.config import Config, ConfigError, load_config, parse_overrides, preset_names


def test_presets_hold_the_papers_constants():
    assert {"personlab", "strongpose", "tiny"} <= set(preset_names())
    pl = load_config("personlab")
    assert pl.codec.disk_radius == 32.0
    assert (pl.loss.heatmap, pl.loss.body, pl.loss.short, pl.loss.mid, pl.loss.long) == (4, 2, 1, 0.25, 0.125)
    sp = load_config("strongpose")
    assert sp.codec.disk_radius == 16.0
    assert (sp.loss.heatmap, sp.loss.body, sp.loss.short, sp.loss.mid, sp.loss.long) == (4, 2, 1, 0.4, 0.1)
    assert sp.model.backbone == "resnet152"
    assert sp.model.output_stride == 16 and sp.eval_output_stride == 8
    assert sp.train.polyak_decay > 0


def test_overrides_are_typed_and_nested():
    cfg = load_config("strongpose", ["model.output_stride=8", "train.batch_size=4",
                                     "data.scale_range=[0.5, 1.5]", "model.weights=imagenet"])
    assert cfg.model.output_stride == 8 and cfg.train.batch_size == 4
    assert cfg.data.scale_range == (0.5, 1.5)
    assert cfg.model.weights == "imagenet"
    assert cfg.loss.mid == 0.4  # the preset survives a partial override
    assert parse_overrides(["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


def test_yaml_file_and_round_trip(tmp_path):
    cfg = load_config("strongpose")
    path = tmp_path / "mine.yaml"
    import yaml
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    again = load_config(path)
    assert again == cfg


def test_custom_skeleton_from_yaml(tmp_path):
    path = tmp_path / "hands.yaml"
    path.write_text(
        "skeleton:\n"
        "  names: [wrist, thumb, index]\n"
        "  edges: [[wrist, thumb], [wrist, index]]\n"
        "  sigmas: [0.05, 0.03, 0.03]\n")
    cfg = load_config(path)
    assert cfg.skeleton.num_keypoints == 3 and cfg.skeleton.directed_edges[2] == (1, 0)


@pytest.mark.parametrize("override, key", [
    ("model.foo=1", "model.foo"),
    ("modle.backbone=resnet50", "modle"),
    ("model.output_stride=12", "model.output_stride"),
    ("model.backbone=vgg", "model.backbone"),
    ("model.input_size=400", "model.input_size"),
    ("loss.mid=abc", "loss.mid"),
    ("loss.heatmap=-1", "loss.heatmap"),
    ("train.batch_size=2.5", "train.batch_size"),
    ("model.freeze_batchnorm=maybe", "model.freeze_batchnorm"),
    ("codec.disk_radius=0", "codec.disk_radius"),
    ("data.scale_range=[1.5, 0.5]", "data.scale_range"),
    ("decoder.nms_radius=-3", "decoder.nms_radius"),
    ("decoder.unchecked_vote_weight=1.5", "decoder.unchecked_vote_weight"),
    ("decoder.unchecked_vote_weight=-0.1", "decoder.unchecked_vote_weight"),
    ("train.mixed_dtype=int8", "train.mixed_dtype"),
])
def test_bad_keys_and_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value).startswith(key)


def test_bad_override_syntax_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["model.output_stride"])
    with pytest.raises(ConfigError, match="no preset"):
        load_config("nonexistent")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_defaults_construct():
    cfg = Config()
    assert cfg.skeleton.num_keypoints == 17 and cfg.eval_output_stride == 8
    assert cfg.decoder.unchecked_vote_weight == 0.5
    assert load_config(None, ["decoder.unchecked_vote_weight=0"]).decoder.unchecked_vote_weight == 0


def _float_keys():
    """Every float-typed key of every section, e.g. ``codec.disk_radius``."""
    import dataclasses
    import typing
    keys = []
    for section in dataclasses.fields(Config):
        if section.name == "skeleton":
            continue
        hints = typing.get_type_hints(typing.get_type_hints(Config)[section.name])
        keys += [f"{section.name}.{name}" for name, hint in hints.items() if hint is float]
    return keys


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
@pytest.mark.parametrize("key", _float_keys())
def test_every_float_must_be_finite(key, value):
    with pytest.raises(ConfigError, match="not a finite number") as info:
        load_config(None, [f"{key}={value}"])
    assert str(info.value).startswith(key)


def test_non_finite_values_are_refused_everywhere(tmp_path):
    import dataclasses
    from strongpose.config import CodecConfig
    assert "codec.disk_radius" in _float_keys() and len(_float_keys()) >= 20
    with pytest.raises(ConfigError, match=r"^data\.scale_range\[1\]: inf"):
        load_config(None, ["data.scale_range=[0.5, .inf]"])
    with pytest.raises(ConfigError, match=r"^codec\.disk_radius: .*not a finite float"):
        load_config(None, ["codec.disk_radius=" + "9" * 400])          # beyond float range
    with pytest.raises(ConfigError, match=r"^codec\.disk_radius: inf is not a finite number"):
        Config(codec=CodecConfig(disk_radius=float("inf")))             # built in Python too
    with pytest.raises(ConfigError, match=r"^skeleton\.sigmas\[1\]: nan"):
        Config(skeleton=dataclasses.replace(Config().skeleton,
                                            sigmas=(0.1, float("nan")) + Config().skeleton.sigmas[2:]))
    path = tmp_path / "inf.yaml"
    path.write_text("codec:\n  disk_radius: .inf\n")
    with pytest.raises(ConfigError, match=r"^codec\.disk_radius"):
        load_config(path)


def test_config_import_is_light():
    """Command lines import the config before --help: no Keras or TensorFlow behind it."""
    import subprocess
    import sys
    code = ("import sys, strongpose.config as c; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow', 'jax')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_backbone_names_come_from_the_backbone_specs():
    from strongpose.backbones import BACKBONES, SPECS
    assert BACKBONES == tuple(SPECS)
    for name in BACKBONES:
        assert load_config(None, [f"model.backbone={name}"]).model.backbone == name
    with pytest.raises(ConfigError, match=r"^model\.backbone: 'resnet18' is not one of"):
        load_config(None, ["model.backbone=resnet18"])
