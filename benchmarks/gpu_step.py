"""Speed of one training step of a profile's model: bare and through the Lightning module.

Bare: the network, the hybrid loss and AdamW (fused where the device has it), under the stage's
precision, on images of the stage's training size (``crop_size`` crops where it sets one).
Lightning: the same step through GlideDiffusionModule and a Trainer (EMA, gradient clipping,
caption drop, logging), fed by batches already in memory. Random data; no Ray, no MLflow. FLOPs
per step are counted once with FlopCounterMode; the fraction of peak uses --peak-tflops or the
dense bf16/fp16 peak known for the GPU's name. Prints one JSON object.

    python benchmarks/gpu_step.py --profile released --batch 64
    python benchmarks/gpu_step.py --profile released --batch 64 --lightning --compile
    python benchmarks/gpu_step.py --profile ci --batch 8 --steps 3    # runs on a CPU too
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from typing import Any

import torch

from pipeline.config import load_config
from pipeline.diffusion import create_diffusion
from pipeline.models import create_glide_model
from pipeline.models.execution import configure_for_training
from pipeline.training.model_setup import diffusion_settings, glide_model_kwargs

# Dense (no sparsity) bf16/fp16 tensor-core peaks by device name, TFLOP/s (vendor datasheets).
KNOWN_PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10G": 70.0}
VOCAB_SIZE = 49408  # CLIP's BPE vocabulary: the released models' token embedding


def stage_names(model: str) -> tuple[str, str]:
    return {
        "base": ("base_model", "pretrain_base"),
        "upsampler": ("upsample_model", "train_upsampler"),
    }[model]


def random_batch(
    model_kwargs: dict[str, Any], batch: int, low_res: int, seed: int = 0, size: int = 0
) -> dict:
    """A batch in the training stream's format (uint8 images [B, H, W, 3], tokens, mask);
    ``size``: the side of the training images (a crop), 0 for the model's image_size."""
    g = torch.Generator().manual_seed(seed)
    size, ctx = size or model_kwargs["image_size"], model_kwargs["text_ctx"]
    out = {
        "image": torch.randint(0, 256, (batch, size, size, 3), generator=g, dtype=torch.uint8),
        "tokens": torch.randint(1, VOCAB_SIZE, (batch, ctx), generator=g),
        "mask": torch.ones(batch, ctx, dtype=torch.bool),
    }
    if model_kwargs.get("super_res"):
        out["low_res"] = torch.randint(0, 256, (batch, low_res, low_res, 3), generator=g).to(
            torch.uint8
        )
    return out


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BareStep:
    """Network + hybrid loss + AdamW, with the stage's precision and execution settings."""

    def __init__(self, model_kwargs, diffusion, train, batch, device, execution) -> None:
        from pipeline.training.diffusion_module import images_to_model_range

        self.model = create_glide_model(**model_kwargs).to(device)
        configure_for_training(self.model, **execution)
        self.diffusion = create_diffusion(diffusion["diffusion_steps"], diffusion["noise_schedule"])
        fused = device.type in ("cuda", "cpu")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=float(train.lr), fused=fused)
        self.dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(
            str(train.precision)
        )
        self.device = device
        x = images_to_model_range(batch["image"]).to(device)
        if execution.get("channels_last"):
            x = x.contiguous(memory_format=torch.channels_last)
        self.x = x
        self.kwargs = {"tokens": batch["tokens"].to(device), "mask": batch["mask"].to(device)}
        if "low_res" in batch:
            self.kwargs["low_res"] = images_to_model_range(batch["low_res"]).to(device)
        self.t = torch.randint(0, self.diffusion.num_timesteps, (x.shape[0],), device=device)

    def __call__(self) -> None:
        with torch.autocast(
            self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
        ):
            loss = self.diffusion.training_losses(self.model, self.x, self.t, self.kwargs)[
                "loss"
            ].mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def time_steps(step, device: torch.device, steps: int, warmup: int) -> dict[str, float]:
    """Median and spread of `steps` timed steps after `warmup` (the first pays compilation)."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    warmup_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    times.sort()
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    return {
        "peak_memory_gb": round(peak, 2) if peak is not None else None,  # the timed steps'
        "median_step_s": times[len(times) // 2],
        "min_step_s": times[0],
        "max_step_s": times[-1],
        "warmup_s": warmup_s,
    }


def count_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


def lightning_timings(module, batch, device, steps: int, warmup: int, train) -> dict[str, float]:
    """Wall time per step of Trainer.fit, synchronised at the first and the last timed step."""
    import lightning.pytorch as pl

    marks: dict[str, float] = {}

    class Marks(pl.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step in (warmup, warmup + steps):
                synchronize(device)
                marks[str(trainer.global_step)] = time.perf_counter()
                if trainer.global_step == warmup and device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)

    trainer = pl.Trainer(
        max_steps=warmup + steps,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=str(train.precision),
        gradient_clip_val=float(train.grad_clip) or None,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=int(train.log_every_steps),
        callbacks=[Marks()],
    )
    on_device = {k: v.to(device) for k, v in batch.items()}  # as Ray Train's feed delivers it
    trainer.fit(module, train_dataloaders=itertools.repeat(on_device))
    per_step = (marks[str(warmup + steps)] - marks[str(warmup)]) / steps
    return {"median_step_s": per_step, "note": "mean over the timed steps (synchronised ends)"}


def kernel_table(step, rows: int) -> dict[str, Any]:
    """Top CUDA kernels of one step by device time, and the share of fp32 (non-tensor-core) GEMMs
    and of dtype copies."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    total = sum(e.self_device_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.self_device_time_total, reverse=True)

    def share(match) -> float:
        return round(sum(e.self_device_time_total for e in events if match(e.key)) / total, 4)

    return {
        "device_ms": round(total / 1000, 2),
        "fp32_gemm_share": share(lambda k: "gemm" in k and "f32f32" in k),
        "copy_share": share(lambda k: "copy" in k.lower() or "cast" in k.lower()),
        "attention_kernels": sorted(
            {
                e.key[:60]
                for e in events
                if "attention" in e.key.lower()
                or "fmha" in e.key.lower()
                or "flash" in e.key.lower()
            }
        )[:6],
        "top": [[e.key[:90], round(e.self_device_time_total / total, 4)] for e in events[:rows]],
    }


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in KNOWN_PEAK_TFLOPS.items() if k in name), None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="released")
    parser.add_argument("--model", choices=["base", "upsampler"], default="base")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--lightning", action="store_true", help="also time the Lightning step")
    parser.add_argument("--bare", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--checkpoint", action="store_true", help="gradient checkpointing")
    parser.add_argument(
        "--channels-last", action="store_true", help="NHWC (bare step only; slower on an H200)"
    )
    parser.add_argument("--cudnn-benchmark", action="store_true", help="cuDNN autotuning")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--kernels", type=int, default=0, help="profile a bare step: top N kernels")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument(
        "overrides", nargs="*", help="config dotlist, e.g. pretrain_base.precision=32-true"
    )
    return parser


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The figures of one configuration (``build_parser``'s arguments)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = load_config([f"profile={args.profile}", *args.overrides], params_path=None)
    model_section, stage = stage_names(args.model)
    train = cfg[stage]
    model_kwargs = glide_model_kwargs(cfg[model_section], VOCAB_SIZE)
    diffusion = diffusion_settings(cfg[model_section])
    execution = {
        "use_checkpoint": args.checkpoint,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "compile_backend": args.compile_backend,
    }
    # what the stage trains on: only the upsampler's section has crop_size
    size = int(train.get("crop_size", 0)) or int(model_kwargs["image_size"])
    low_res = size * int(cfg.shard.base_resolution) // int(model_kwargs["image_size"])
    batch = random_batch(model_kwargs, args.batch, low_res, size=size)
    result: dict[str, Any] = {
        "profile": args.profile,
        "model": args.model,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "batch": args.batch,
        "image_size": int(model_kwargs["image_size"]),
        "train_size": size,
        "precision": str(train.precision),
        **{k: v for k, v in execution.items() if k != "compile_backend"},
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_benchmark": args.cudnn_benchmark,
    }
    flops = None
    if args.bare:
        step = BareStep(model_kwargs, diffusion, train, batch, device, execution)
        result["parameters"] = sum(p.numel() for p in step.model.parameters())
        timing = time_steps(step, device, args.steps, args.warmup)
        flops = optional(count_flops, step) if not args.compile else None
        result["bare"] = summarise(timing, args.batch, flops, device, args.peak_tflops)
        if args.kernels and device.type == "cuda":
            result["bare"]["kernels"] = optional(kernel_table, step, args.kernels)
        del step
        release_memory(device)
    if args.lightning:
        result["lightning"] = optional(
            lightning_result, args, cfg, stage, model_kwargs, diffusion, batch, device, flops
        )
        release_memory(device)
        if "bare" in result and "median_step_s" in result["lightning"]:
            ratio = result["bare"]["median_step_s"] / result["lightning"]["median_step_s"]
            result["lightning_vs_bare_speed"] = round(ratio, 4)
    return result


def optional(function, *args: Any) -> Any:
    """``function(*args)``, or its error as text: an extra figure must not lose the timings."""
    try:
        return function(*args)
    except Exception as err:
        return {"error": repr(err)[:300]}


def release_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def lightning_result(args, cfg, stage, model_kwargs, diffusion, batch, device, flops) -> dict:
    from omegaconf import OmegaConf

    from pipeline.training.diffusion_module import GlideDiffusionModule

    train = cfg[stage]
    settings = OmegaConf.to_container(train, resolve=True)
    settings.update(
        use_checkpoint=args.checkpoint,
        compile=args.compile,
        compile_backend=args.compile_backend,
        max_steps=args.warmup + args.steps,
    )
    module = GlideDiffusionModule(model_kwargs, diffusion, settings, "benchmark", seed=0)
    timing = lightning_timings(module, batch, device, args.steps, args.warmup, train)
    return summarise(timing, args.batch, flops, device, args.peak_tflops)


def summarise(timing: dict, batch: int, flops: int | None, device, given_peak) -> dict[str, Any]:
    out: dict[str, Any] = {
        **{k: round(v, 5) if isinstance(v, float) else v for k, v in timing.items()}
    }
    out["images_per_s"] = round(batch / timing["median_step_s"], 2)
    if isinstance(flops, int) and flops:
        achieved = flops / timing["median_step_s"] / 1e12
        out["tflop_per_step"] = round(flops / 1e12, 3)
        out["achieved_tflops"] = round(achieved, 2)
        peak = peak_tflops(device, given_peak)
        if peak:
            out["fraction_of_peak"] = round(achieved / peak, 4)
            out["peak_tflops"] = peak
    if device.type == "cuda" and out.get("peak_memory_gb") is None:
        out["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
    return out


def main() -> None:
    print(json.dumps(measure(build_parser().parse_args())))


if __name__ == "__main__":
    main()
