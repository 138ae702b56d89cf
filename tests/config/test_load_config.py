"""Configuration resolution and validation: the errors name the key, before any work."""

from pathlib import Path

import pytest
import yaml

from pipeline.config import PROFILES, ConfigError, load_config, params_template, save_config

REPO = Path(__file__).resolve().parents[2]


def write_params(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_resolves_and_validates(profile):
    cfg = load_config([f"profile={profile}"], params_path=None, conf_dir=REPO / "conf")
    assert cfg.profile == profile
    assert cfg.base_model.image_size == cfg.shard.base_resolution


def test_layers_apply_in_order_profile_then_params_then_cli(tmp_path):
    params = write_params(tmp_path, {"profile": "ci", "shard": {"num_samples": 999}})
    cfg = load_config([], params_path=params, conf_dir=REPO / "conf")
    assert cfg.profile == "ci"
    assert cfg.shard.num_samples == 999  # params.yaml beats the profile
    assert cfg.shard.base_resolution == 16  # the ci profile beats the defaults
    cfg = load_config(["shard.num_samples=7"], params_path=params, conf_dir=REPO / "conf")
    assert cfg.shard.num_samples == 7  # the command line beats params.yaml


def test_null_in_params_means_inherit_from_profile(tmp_path):
    params = write_params(tmp_path, {"profile": "ci", "shard": {"num_samples": None}})
    cfg = load_config([], params_path=params, conf_dir=REPO / "conf")
    assert cfg.shard.num_samples == 256


def test_cli_profile_overrides_params_profile(tmp_path):
    params = write_params(tmp_path, {"profile": "mini"})
    cfg = load_config(["profile=ci"], params_path=params, conf_dir=REPO / "conf")
    assert cfg.profile == "ci" and cfg.shard.base_resolution == 16


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("shard.no_such_key=1", "shard.no_such_key"),
        ("shard.num_samples=many", "shard.num_samples"),
        ("pretrain_base.lr=fast", "pretrain_base.lr"),
        ("nonsense.section=1", "nonsense"),
        ("shard.source=ftp", "shard.source"),
        ("shard.val_fraction=1.5", "shard.val_fraction"),
        ("base_model.image_size=24", "base_model.image_size"),
        ("pretrain_base.p2_gamma=-1", "pretrain_base.p2_gamma"),
        ("finetune_cfg.p2_k=0", "finetune_cfg.p2_k"),
        ("pretrain_base.num_workers=0", "pretrain_base.num_workers"),
        ("pretrain_base.num_workers=3", "pretrain_base.batch_size"),  # 16 is not divisible by 3
        ("train_upsampler.cpus_per_worker=0", "train_upsampler.cpus_per_worker"),
        ("train_noised_clip.strategy=fsdp", "train_noised_clip.strategy"),
        ("ray.resource_timeout_s=0", "ray.resource_timeout_s"),
        ("shard_edits.source=ftp", "shard_edits.source"),
        ("shard_edits.source=folder", "shard_edits.input_path"),
        ("shard_edits.kinds=[recolor]", "shard_edits.kinds"),
        ("shard_edits.size_scale=0", "shard_edits.size_scale"),
        ("shard_edits.object_count_weights=[1,-1]", "shard_edits.object_count_weights"),
        ("finetune_instruct.joint_drop_prob=0.95", "finetune_instruct.image_drop_prob"),
        ("profile=huge", "profile"),
        ("upsample_model.prediction_type=x0", "upsample_model.prediction_type"),
        ("base_model.low_res_residual=true", "base_model.low_res_residual"),  # not super_res
        ("upsample_model.prediction_type=epsilon", "upsample_model.low_res_residual"),
        ("upsample_model.sigma_data=0", "upsample_model.sigma_data"),
        ("base_model.sigma_data=0.5", "base_model.sigma_data"),  # epsilon
        ("train_upsampler.sample_temperature=-0.5", "train_upsampler.sample_temperature"),
        ("evaluate.upsample_temperature=-1", "evaluate.upsample_temperature"),
        ("evaluate.upsample_tile_size=-8", "evaluate.upsample_tile_size"),
        ("evaluate.upsample_tile_stride=0", "evaluate.upsample_tile_stride"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}"):
        load_config([override], params_path=None, conf_dir=REPO / "conf")


def test_a_bad_tile_stride_is_refused_with_tiling_off():
    """The released profile samples whole images; a stride of 0 is still an error at load time,
    not when the evaluation builds its tiling."""
    with pytest.raises(ConfigError, match="'evaluate.upsample_tile_stride"):
        load_config(
            ["profile=released", "evaluate.upsample_tile_stride=0"],
            params_path=None,
            conf_dir=REPO / "conf",
        )


def test_a_tile_stride_that_leaves_gaps_is_refused():
    with pytest.raises(ConfigError, match="'evaluate.upsample_tile_stride"):
        load_config(
            ["evaluate.upsample_tile_size=32", "evaluate.upsample_tile_stride=40"],
            params_path=None,
            conf_dir=REPO / "conf",
        )


def test_unknown_key_in_params_file_is_named(tmp_path):
    params = write_params(tmp_path, {"profile": "ci", "shard": {"num_sample": 5}})
    with pytest.raises(ConfigError, match="shard.num_sample"):
        load_config([], params_path=params, conf_dir=REPO / "conf")


def test_resolved_config_is_read_only_and_saved(tmp_path):
    cfg = load_config(["profile=ci"], params_path=None, conf_dir=REPO / "conf")
    with pytest.raises(Exception):  # noqa: B017 - OmegaConf's ReadonlyConfigError
        cfg.shard.num_samples = 3
    out = save_config(cfg, tmp_path / "deep" / "config.yaml")
    saved = yaml.safe_load(out.read_text())
    assert saved["shard"]["num_samples"] == cfg.shard.num_samples
    assert saved["profile"] == "ci"


def test_params_yaml_lists_every_schema_key():
    """params.yaml must list every key so `dvc exp run -S section.key=value` works for all."""
    committed = yaml.safe_load((REPO / "params.yaml").read_text())

    def keys(tree, prefix=""):
        out = set()
        for k, v in tree.items():
            name = f"{prefix}{k}"
            out |= keys(v, name + ".") if isinstance(v, dict) else {name}
        return out

    assert keys(committed) == keys(params_template()), (
        "params.yaml is out of date: regenerate with `python -m pipeline.config > params.yaml`"
    )
    cfg = load_config([], params_path=REPO / "params.yaml", conf_dir=REPO / "conf")
    assert cfg.profile == committed["profile"]
