"""A memory plan per training stage: what a profile's training needs on each GPU, and the fewest
GPUs of a given size that hold the configured global batch.

``python -m pipeline.training.memory_plan profile=paper [--gpu-gib 80] [key=value ...]``

Per stage: parameters; bytes of the fp32 weights, AdamW's two moments and the EMA; activation
memory per sample without and with gradient checkpointing (traced, see
``pipeline.models.memory``); and the fewest GPUs, with the configured strategy, batch and
precision, for checkpointing off and on. Per GPU, a step needs:

- ``ddp``: weights 4 B, gradients 4 B, DDP's gradient buckets 4 B, AdamW 8 B and the EMA 4 B per
  parameter, autocast's bf16 weight copies, and the activations of its share of the batch;
- ``fsdp`` over N GPUs: those 20 B per parameter / N (sharded), plus the gathered weights of the
  network's root (what no block holds), and of the two largest blocks with one block's
  gradients and bf16 copies (16 B per block parameter), and the activations.

Only ``GPU_USABLE`` of a GPU's memory is counted on (CUDA context, allocator slack). The number of
GPUs must divide the global batch; none fits when even one sample per GPU is too much.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import torch
from omegaconf import DictConfig

from pipeline.config import load_config
from pipeline.config.load import TRAINING_STAGES
from pipeline.models import create_glide_model
from pipeline.models.memory import MemoryTrace, clip_forward, glide_forward, trace_memory
from pipeline.models.noised_clip import create_noised_clip

GIB = 2**30
GPU_USABLE = 0.9
WEIGHT, GRAD, DDP_BUCKET, ADAMW, EMA = 4, 4, 4, 8, 4
FSDP_BLOCK_BYTES = 2 * WEIGHT + GRAD + 2 * 2  # two gathered blocks, one block's grads, bf16
PLAN_STAGES = (*TRAINING_STAGES, "train_noised_clip", "eval_clip")
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@dataclass(frozen=True)
class StagePlan:
    """One stage's figures (bytes) and the fewest GPUs (None: does not fit) without and with
    gradient checkpointing (the CLIPs have none: ``can_checkpoint`` False)."""

    stage: str
    trace: MemoryTrace
    strategy: str
    precision: str
    batch_size: int
    workers: int
    ema: bool
    can_checkpoint: bool
    checkpointing: bool
    gpus_plain: int | None
    gpus_checkpointed: int | None

    @property
    def weight_bytes(self) -> float:
        return WEIGHT * self.trace.parameters

    @property
    def optimizer_bytes(self) -> float:
        return ADAMW * self.trace.parameters

    @property
    def ema_bytes(self) -> float:
        return EMA * self.trace.parameters if self.ema else 0.0


@cache
def _trace(model: str, kwargs: tuple, image: int, low_res: int, precision: str) -> MemoryTrace:
    settings = dict(kwargs)
    dtype = AUTOCAST.get(precision)
    if model == "clip":
        return trace_memory(
            lambda: create_noised_clip(**settings),
            clip_forward(settings["image_size"], settings["text_ctx"]),
            dtype,
        )
    settings["use_checkpoint"] = False
    return trace_memory(
        lambda: create_glide_model(**settings),
        glide_forward(image, int(settings["text_ctx"]), low_res),
        dtype,
    )


def stage_trace(cfg: DictConfig, stage: str) -> MemoryTrace:
    """The traced memory of the model ``stage`` trains, on the inputs it trains on."""
    from pipeline.training.clip_stage import clip_model_kwargs
    from pipeline.training.model_setup import build_tokenizer, glide_model_kwargs

    train = cfg[stage]
    precision = str(train.precision)
    if stage in ("train_noised_clip", "eval_clip"):
        return _trace("clip", tuple(sorted(clip_model_kwargs(cfg).items())), 0, 0, precision)
    section = "upsample_model" if stage == "train_upsampler" else "base_model"
    model_cfg = cfg[section]
    kwargs = glide_model_kwargs(model_cfg, build_tokenizer(model_cfg).vocab_size)
    kwargs["inpaint"] = kwargs["inpaint"] or stage == "finetune_inpaint"
    kwargs["instruct"] = stage == "finetune_instruct"
    image, low_res = int(model_cfg.image_size), 0
    if kwargs.get("super_res"):
        image = int(train.crop_size) or image
        low_res = image * int(cfg.shard.base_resolution) // int(cfg.shard.upsample_resolution)
    return _trace("glide", tuple(sorted(kwargs.items())), image, low_res, precision)


def per_gpu_bytes(plan: StagePlan, gpus: int, checkpointing: bool) -> float:
    """Peak bytes on each of ``gpus`` GPUs for one step of the stage's global batch."""
    trace = plan.trace
    state = plan.weight_bytes + GRAD * trace.parameters + plan.optimizer_bytes + plan.ema_bytes
    per_sample = trace.checkpointed_per_sample if checkpointing else trace.activations_per_sample
    activations = per_sample * plan.batch_size / gpus
    if plan.strategy == "fsdp":
        root = trace.parameters - trace.unit_parameters
        working = WEIGHT * root + FSDP_BLOCK_BYTES * trace.largest_unit_parameters
        return state / gpus + working + activations
    return state + DDP_BUCKET * trace.parameters + trace.batch_independent + activations


def fewest_gpus(plan: StagePlan, gpu_gib: float, checkpointing: bool) -> int | None:
    """The fewest GPUs (a divisor of the global batch) of ``gpu_gib`` GiB that hold a step."""
    usable = GPU_USABLE * gpu_gib * GIB
    for gpus in range(1, plan.batch_size + 1):
        if plan.batch_size % gpus == 0 and per_gpu_bytes(plan, gpus, checkpointing) <= usable:
            return gpus
    return None


def plan_stage(cfg: DictConfig, stage: str, gpu_gib: float) -> StagePlan:
    """The memory plan of one training stage of ``cfg``."""
    train = cfg[stage]
    is_clip = stage in ("train_noised_clip", "eval_clip")
    section = "upsample_model" if stage == "train_upsampler" else "base_model"
    plan = StagePlan(
        stage=stage,
        trace=stage_trace(cfg, stage),
        strategy=str(train.strategy),
        precision=str(train.precision),
        batch_size=int(train.batch_size),
        workers=int(train.num_workers),
        ema=not is_clip,
        can_checkpoint=not is_clip,
        checkpointing=False if is_clip else bool(cfg[section].use_checkpoint),
        gpus_plain=None,
        gpus_checkpointed=None,
    )
    plain = fewest_gpus(plan, gpu_gib, checkpointing=False)
    checkpointed = None if is_clip else fewest_gpus(plan, gpu_gib, checkpointing=True)
    return StagePlan(**{**plan.__dict__, "gpus_plain": plain, "gpus_checkpointed": checkpointed})


def _gib(value: float) -> str:
    return f"{value / GIB:.2f}"


def _gpus(count: int | None, configured: bool) -> str:
    text = "none" if count is None else str(count)
    return text + ("*" if configured else "")


def format_plan(cfg: DictConfig, plans: Sequence[StagePlan], gpu_gib: float) -> str:
    """The plan as a text table (GiB), one row per stage."""
    head = (
        f"memory plan, profile {cfg.profile}, GPUs of {gpu_gib:g} GiB ({GPU_USABLE:.0%} usable); "
        "GiB; act = activations per sample; * = the model's use_checkpoint setting"
    )
    columns = ("stage", "params", "weights", "AdamW", "EMA", "act", "act ckpt", "strategy",
               "precision", "batch", "workers", "GPUs", "GPUs ckpt")  # fmt: skip
    rows = [columns]
    for p in plans:
        ckpt = _gib(p.trace.checkpointed_per_sample) if p.can_checkpoint else "-"
        rows.append(
            (
                p.stage,
                f"{p.trace.parameters / 1e6:.1f}M",
                _gib(p.weight_bytes),
                _gib(p.optimizer_bytes),
                _gib(p.ema_bytes),
                _gib(p.trace.activations_per_sample),
                ckpt,
                p.strategy,
                p.precision,
                str(p.batch_size),
                str(p.workers),
                _gpus(p.gpus_plain, not p.checkpointing),
                _gpus(p.gpus_checkpointed, p.checkpointing) if p.can_checkpoint else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([head, *lines])


def plan_profile(cfg: DictConfig, gpu_gib: float) -> list[StagePlan]:
    """The plan of every training stage of ``cfg``."""
    return [plan_stage(cfg, stage, gpu_gib) for stage in PLAN_STAGES]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the memory plan of a profile (``profile=...`` and other overrides as arguments)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.training.memory_plan")
    parser.add_argument("--gpu-gib", type=float, default=80.0, help="memory of one GPU (GiB)")
    args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.gpu_gib <= 0:
        parser.error("--gpu-gib must be positive")
    cfg = load_config(overrides)
    print(format_plan(cfg, plan_profile(cfg, args.gpu_gib), args.gpu_gib))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
