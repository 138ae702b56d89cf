"""The memory plan (``python -m pipeline.training.memory_plan``): per training stage, parameters,
weight/AdamW/EMA bytes, activation memory per sample with and without gradient checkpointing, and
the fewest GPUs that hold the configured global batch."""

import pytest
import torch

from pipeline.config import PROFILES, load_config
from pipeline.models import create_glide_model
from pipeline.models.noised_clip import create_noised_clip
from pipeline.training.clip_stage import clip_model_kwargs
from pipeline.training.memory_plan import (
    GIB,
    GPU_USABLE,
    PLAN_STAGES,
    format_plan,
    main,
    per_gpu_bytes,
    plan_profile,
)
from pipeline.training.model_setup import build_tokenizer, glide_model_kwargs


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def built_models(cfg):
    """The networks the stages build, with real weights."""
    tokenizer = build_tokenizer(cfg.base_model)
    base = glide_model_kwargs(cfg.base_model, tokenizer.vocab_size)
    upsampler = glide_model_kwargs(cfg.upsample_model, tokenizer.vocab_size)
    clip = create_noised_clip(**clip_model_kwargs(cfg))
    return {
        "pretrain_base": create_glide_model(**base),
        "finetune_cfg": create_glide_model(**base),
        "finetune_inpaint": create_glide_model(**{**base, "inpaint": True}),
        "train_upsampler": create_glide_model(**upsampler),
        "train_noised_clip": clip,
        "eval_clip": clip,
    }


@pytest.mark.parametrize("profile", ["ci", "mini"])
def test_the_plan_counts_the_models_the_stages_build(profile):
    cfg = load_config([f"profile={profile}"], params_path=None)
    plans = {plan.stage: plan for plan in plan_profile(cfg, gpu_gib=80)}
    assert list(plans) == list(PLAN_STAGES)
    for stage, model in built_models(cfg).items():
        plan, count = plans[stage], parameters(model)
        assert plan.trace.parameters == count, stage
        assert plan.weight_bytes == 4 * count and plan.optimizer_bytes == 8 * count
        assert plan.ema_bytes == (0 if stage.endswith("clip") else 4 * count)
        assert plan.trace.activations_per_sample > 0
        assert plan.gpus_plain == 1, stage  # a small profile's batch fits on one 80 GiB GPU
        if plan.can_checkpoint:
            ckpt = plan.trace.checkpointed_per_sample
            assert 0 < ckpt < plan.trace.activations_per_sample, stage


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_gets_a_row_per_training_stage_and_the_fewest_gpus(profile):
    cfg = load_config([f"profile={profile}"], params_path=None)
    plans = plan_profile(cfg, gpu_gib=80)
    table = format_plan(cfg, plans, 80).splitlines()
    assert [line.split()[0] for line in table[2:]] == list(PLAN_STAGES)
    usable = GPU_USABLE * 80 * GIB
    for plan in plans:
        for gpus, checkpointing in ((plan.gpus_plain, False), (plan.gpus_checkpointed, True)):
            if gpus is None:
                continue  # e.g. the CLIPs have no checkpointing
            assert plan.batch_size % gpus == 0
            assert per_gpu_bytes(plan, gpus, checkpointing) <= usable
            fewer = [n for n in range(1, gpus) if plan.batch_size % n == 0]
            assert all(per_gpu_bytes(plan, n, checkpointing) > usable for n in fewer)


def test_paper_scale_needs_sharding_and_checkpointing_to_fit():
    """The paper's 3.5B base: 20 bytes of state per parameter (66 GiB) do not leave room for a
    useful share of the batch on one 80 GiB GPU; sharded over more GPUs they do."""
    cfg = load_config(["profile=paper"], params_path=None)
    (plan,) = [p for p in plan_profile(cfg, gpu_gib=80) if p.stage == "pretrain_base"]
    assert 3.4e9 < plan.trace.parameters < 3.7e9
    assert plan.strategy == "fsdp" and plan.checkpointing
    assert per_gpu_bytes(plan, 1, checkpointing=True) > GPU_USABLE * 80 * GIB
    assert plan.gpus_checkpointed is not None and plan.gpus_plain is not None
    assert plan.gpus_checkpointed < plan.gpus_plain


def test_command_prints_the_table(capsys):
    assert main(["profile=ci", "--gpu-gib", "24"]) == 0
    out = capsys.readouterr().out
    assert "profile ci, GPUs of 24 GiB" in out
    assert all(stage in out for stage in PLAN_STAGES)
    with pytest.raises(SystemExit):
        main(["profile=ci", "--gpu-gib", "0"])
