"""The released configurations reproduce the released state dicts exactly (keys, shapes, count);
the paper-scale configurations land at the paper's sizes; the factory validates its keys."""

import pytest
import torch

from pipeline.models import (
    GLIDE_KEYS,
    count_parameters,
    count_parameters_meta,
    create_glide_model,
    glide_base_config,
    glide_upsampler_config,
    paper_scale_configs,
)

VARIANTS = {
    "base": glide_base_config(),
    "base-inpaint": {**glide_base_config(), "inpaint": True},
    "upsample": glide_upsampler_config(),
    "upsample-inpaint": {**glide_upsampler_config(), "inpaint": True},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_released_state_dict(variant, glide_reference):
    with torch.device("meta"):
        model = create_glide_model(**VARIANTS[variant])
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    ref = glide_reference[variant]["state_dict"]
    assert sorted(set(ours) - set(ref)) == [], "keys the released checkpoint lacks"
    assert sorted(set(ref) - set(ours)) == [], "released keys we lack"
    assert {k: s for k, s in ours.items() if s != ref[k]} == {}, "shape mismatches"
    assert count_parameters(model) == glide_reference[variant]["params"]


def test_released_counts_are_the_documented_ones():
    assert count_parameters_meta(**VARIANTS["base"]) == 385_030_726
    assert count_parameters_meta(**VARIANTS["upsample-inpaint"]) == 398_368_198


def test_paper_scale_sizes():
    """Paper: 3.5B base (2.3B ADM + 1.2B text transformer), 1.5B upsampler."""
    configs = paper_scale_configs()
    base = count_parameters_meta(**configs["base"])
    up = count_parameters_meta(**configs["upsampler"])
    assert base == 3_554_414_086 and abs(base - 3.5e9) / 3.5e9 < 0.03
    assert up == 1_540_932_998 and abs(up - 1.5e9) / 1.5e9 < 0.04
    # the text side of the base model: 24 blocks of width 2048 ~ 1.2B
    blocks = count_parameters_meta(**configs["base"]) - count_parameters_meta(
        **{**configs["base"], "xf_layers": 0}
    )
    assert abs(blocks - 1.2e9) / 1.2e9 < 0.02


def test_defaults_need_only_vocab_size():
    with torch.device("meta"):
        model = create_glide_model(vocab_size=50257)
    assert model.config["channel_mult"] == (1, 2, 3, 4)  # derived from image_size 64
    assert count_parameters(model) == 385_030_726
    assert set(model.config) == set(GLIDE_KEYS)


def test_glide_style_strings_are_parsed():
    cfg = {**glide_base_config(), "channel_mult": "1,2,3,4", "attention_resolutions": "32,16,8"}
    assert count_parameters_meta(**cfg) == 385_030_726


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"num_chanels": 64}, TypeError, "num_chanels"),
        ({"vocab_size": None}, ValueError, "vocab_size is required"),
        ({"num_channels": 0}, ValueError, "num_channels"),
        ({"inpaint": 1}, ValueError, "inpaint must be a bool"),
        ({"attention_resolutions": (32, 4)}, ValueError, r"attention_resolutions \[4\]"),
        ({"image_size": 48, "channel_mult": ()}, ValueError, "no default channel_mult"),
        ({"num_head_channels": 100}, ValueError, "num_head_channels"),
        ({"xf_heads": 7}, ValueError, "xf_heads"),
        ({"dropout": 1.5}, ValueError, "dropout"),
        ({"channel_mult": "1,x"}, ValueError, "channel_mult"),
    ],
)
def test_bad_keys_are_named(change, error, match):
    with pytest.raises(error, match=match), torch.device("meta"):
        create_glide_model(**{**glide_base_config(), **change})


def test_config_round_trips_as_plain_data(tiny_config):
    """model.config (tuples as lists, as a weights_only checkpoint stores it) rebuilds the model."""
    model = create_glide_model(**tiny_config, super_res=True)
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in model.config.items()}
    again = create_glide_model(**plain)
    assert again.config == model.config
    again.load_state_dict(model.state_dict(), strict=True)
