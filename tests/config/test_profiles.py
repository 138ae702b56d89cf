"""The small profiles stay small: every stage sized explicitly for a 2-core CPU."""

from pathlib import Path

import pytest
import torch
import yaml

from pipeline.config import load_config
from pipeline.models import create_glide_model
from pipeline.models.noised_clip import create_noised_clip
from pipeline.training.clip_stage import clip_model_kwargs
from pipeline.training.model_setup import build_tokenizer, glide_model_kwargs

PROFILES = Path(__file__).resolve().parents[2] / "conf" / "profiles"
SIZED_SECTIONS = (
    "shard",
    "base_model",
    "pretrain_base",
    "finetune_cfg",
    "finetune_inpaint",
    "upsample_model",
    "train_upsampler",
    "noised_clip",
    "train_noised_clip",
    "eval_clip",
    "evaluate",
)
# profile -> most parameters of (base, upsampler, noised CLIP), most training steps of any stage
BUDGET = {
    "ci": (2_000_000, 2_000_000, 2_000_000, 50),
    "mini": (10_000_000, 6_000_000, 5_000_000, 3600),
}


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("profile", sorted(BUDGET))
def test_small_profiles_size_every_stage(profile):
    written = yaml.safe_load((PROFILES / f"{profile}.yaml").read_text())
    missing = [s for s in SIZED_SECTIONS if s not in written]
    assert not missing, f"{profile}.yaml leaves {missing} at the schema's (paper-scale) defaults"

    cfg = load_config([f"profile={profile}"], params_path=None)
    tokenizer = build_tokenizer(cfg.base_model)
    with torch.device("meta"):
        base = create_glide_model(**glide_model_kwargs(cfg.base_model, tokenizer.vocab_size))
        upsampler = create_glide_model(
            **glide_model_kwargs(cfg.upsample_model, tokenizer.vocab_size)
        )
        clip = create_noised_clip(**clip_model_kwargs(cfg))
    max_base, max_upsampler, max_clip, max_steps = BUDGET[profile]
    assert parameters(base) <= max_base
    assert parameters(upsampler) <= max_upsampler
    assert parameters(clip) <= max_clip
    for stage in ("pretrain_base", "finetune_cfg", "finetune_inpaint", "train_upsampler",
                  "train_noised_clip", "eval_clip"):  # fmt: skip
        assert cfg[stage].max_steps <= max_steps, stage
