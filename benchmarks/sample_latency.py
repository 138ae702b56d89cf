"""Latency of guided text-to-image sampling: ms per sampler step and per call, eager and
compiled (``compile_for_sampling``: CUDA graphs on a GPU), in float32 or under half-precision
autocast (``--precision``), through the pipeline's own ``sample_text_to_image``. Random weights
(speed does not depend on them); no Ray, no MLflow. Prints one JSON object.

    python benchmarks/sample_latency.py --profile released --prompts 4 --steps ddim25
    python benchmarks/sample_latency.py --profile released --precision bf16-mixed
    python benchmarks/sample_latency.py --profile ci --prompts 2 --steps ddim5 --modes eager
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from pipeline.config import load_config
from pipeline.models import create_glide_model
from pipeline.models.execution import (
    SAMPLING_PRECISIONS,
    compile_for_sampling,
    sample_in_precision,
)
from pipeline.sampling import SamplerSettings, SamplingModel, sample_text_to_image
from pipeline.training.model_setup import build_tokenizer, glide_model_kwargs

PROMPTS = ["a red circle", "a blue square above a green star", "a small yellow triangle"]


def timed_calls(sample, device: torch.device, repeats: int) -> tuple[float, list[float]]:
    """(seconds of the first call, seconds of each of ``repeats`` further calls)."""

    def one() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        sample()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    first = one()
    return first, [one() for _ in range(repeats)]


def summary(first: float, times: list[float], steps: int) -> dict[str, Any]:
    times = sorted(times)
    median = times[len(times) // 2]
    return {
        "first_call_s": round(first, 3),
        "ms_per_call": round(1000 * median, 2),
        "ms_per_step": round(1000 * median / steps, 3),
        "spread_ms_per_call": [round(1000 * times[0], 2), round(1000 * times[-1], 2)],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="released")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--steps", default="ddim25")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"]
    )
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--precision", default="32-true", choices=list(SAMPLING_PRECISIONS))
    parser.add_argument("--threads", type=int, default=0)
    return parser


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Eager and/or compiled latency of one configuration (``build_parser``'s arguments)."""
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = load_config([f"profile={args.profile}"], params_path=None)
    tokenizer = build_tokenizer(cfg.base_model)
    model = create_glide_model(**glide_model_kwargs(cfg.base_model, tokenizer.vocab_size))
    model = sample_in_precision(model.to(device).eval(), args.precision)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.prompts)]
    diffusion = {
        "diffusion_steps": int(cfg.base_model.diffusion_steps),
        "noise_schedule": str(cfg.base_model.noise_schedule),
    }
    sampler = SamplingModel.of_network(model, tokenizer, diffusion)
    steps = sampler.diffusion(args.steps).num_timesteps
    settings = SamplerSettings(steps=args.steps, seed=0, device=device)

    def sample() -> torch.Tensor:
        return sample_text_to_image(sampler, prompts, settings, guidance_scale=args.guidance)

    result: dict[str, Any] = {
        "profile": args.profile,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "prompts": args.prompts,
        "model_batch": args.prompts * (2 if args.guidance != 1.0 else 1),
        "sampler_steps": steps,
        "respacing": args.steps,
        "guidance": args.guidance,
        "precision": args.precision,
    }
    outputs = {}
    for mode in args.modes:
        if mode == "compiled":
            compile_for_sampling(model, backend=args.compile_backend)
        first, times = timed_calls(sample, device, args.repeats)
        result[mode] = summary(first, times, steps)
        outputs[mode] = sample()
    if len(outputs) == 2:
        diff = (outputs["eager"].int() - outputs["compiled"].int()).abs()
        result["compiled_vs_eager_max_abs_pixel_difference"] = int(diff.max())
        result["compiled_speedup"] = round(
            result["eager"]["ms_per_call"] / result["compiled"]["ms_per_call"], 3
        )
    return result


def main() -> None:
    print(json.dumps(measure(build_parser().parse_args())))


if __name__ == "__main__":
    main()
