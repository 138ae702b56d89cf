"""Guided sampling throughput: our sampler against a naive classifier-free-guidance baseline.

Ours (``pipeline.sampling.sample_text_to_image``): one forward pass per step over the batch
[conditional; unconditional], text transformer run once per sampling call. The naive baseline
calls the model twice per step (conditional, then unconditional) and re-encodes both captions
in every call, as a straightforward implementation does. Both draw the same noise and give the
same images (checked: ``max_abs_pixel_difference``). Prints one JSON object.

    python benchmarks/sample_throughput.py --profile mini --steps ddim25 --batch 4
    python benchmarks/sample_throughput.py --profile released --steps ddim5 --batch 2

Weights are random unless ``--model-file`` names a trained model file: speed does not depend on
them. ``--profile released`` builds the 385M-parameter base model.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import torch

from pipeline.config import load_config
from pipeline.diffusion import sample_loop
from pipeline.models import create_glide_model
from pipeline.models.model_file import load_model
from pipeline.sampling import SamplerSettings, SamplingModel, sample_text_to_image, to_uint8
from pipeline.text import empty_caption_tokens, get_tokenizer, tokenize_batch
from pipeline.training.model_setup import build_tokenizer, glide_model_kwargs

PROMPTS = [
    "a red circle",
    "a blue square",
    "a small green triangle to the left of a large yellow circle",
    "a purple star above a white diamond",
]


@torch.no_grad()
def naive_guided_sample(
    sampler: SamplingModel, prompts: list[str], settings: SamplerSettings, scale: float
) -> torch.Tensor:
    """Two model calls per step, captions re-encoded in each call; uint8 [B, H, W, 3]."""
    model, device = sampler.model, torch.device(settings.device)
    text_ctx, size = int(model.text_ctx), int(model.image_size)
    tokens, mask = tokenize_batch(sampler.tokenizer, prompts, text_ctx)
    empty_tokens, empty_mask = empty_caption_tokens(text_ctx, len(prompts))
    tokens, mask = tokens.to(device), mask.to(device)
    empty_tokens, empty_mask = empty_tokens.to(device), empty_mask.to(device)

    def model_fn(x: torch.Tensor, t: torch.Tensor, **_: Any) -> torch.Tensor:
        half = x[: x.shape[0] // 2]
        cond = model(half, t[: half.shape[0]], tokens=tokens, mask=mask)
        uncond = model(half, t[: half.shape[0]], tokens=empty_tokens, mask=empty_mask)
        eps = uncond[:, :3] + scale * (cond[:, :3] - uncond[:, :3])
        guided = torch.cat([eps, cond[:, 3:]], dim=1)
        return torch.cat([guided, guided])

    # The same doubled batch as ours, so that both draw identical noise; only the model calls
    # differ. The doubled half costs the sampler arithmetic only, not model evaluations.
    shape = (2 * len(prompts), 3, size, size)
    samples = sample_loop(model_fn, sampler.diffusion(settings.steps), shape, settings)
    return to_uint8(samples[: len(prompts)])


def timed(fn, repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--model-file", default="", help="a trained model file (optional)")
    parser.add_argument("--steps", default="ddim25")
    parser.add_argument("--batch", type=int, default=4, help="prompts per sampling call")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    if args.model_file:
        model, info = load_model(args.model_file, device=device)
        tokenizer = get_tokenizer("clip")
        diffusion = info["diffusion"]
    else:
        cfg = load_config([f"profile={args.profile}"], params_path=None)
        tokenizer = build_tokenizer(cfg.base_model)
        torch.manual_seed(0)
        model = create_glide_model(**glide_model_kwargs(cfg.base_model, tokenizer.vocab_size))
        model = model.to(device).eval()
        diffusion = {
            "diffusion_steps": int(cfg.base_model.diffusion_steps),
            "noise_schedule": str(cfg.base_model.noise_schedule),
        }
    sampler = SamplingModel.of_network(model, tokenizer, diffusion)
    settings = SamplerSettings(steps=args.steps, seed=0, device=device)
    prompts = (PROMPTS * args.batch)[: args.batch]

    def ours():
        return sample_text_to_image(sampler, prompts, settings, guidance_scale=args.guidance)

    def naive():
        return naive_guided_sample(sampler, prompts, settings, args.guidance)

    ours()  # warm-up (allocator, kernels)
    ours_s, ours_images = timed(ours, args.repeats)
    naive_s, naive_images = timed(naive, args.repeats)
    difference = (ours_images.int() - naive_images.int()).abs().max().item()
    print(
        json.dumps(
            {
                "benchmark": "sample_throughput",
                "profile": args.profile if not args.model_file else args.model_file,
                "device": str(device),
                "torch_threads": torch.get_num_threads(),
                "machine": platform.machine(),
                "image_size": int(model.image_size),
                "parameters": sum(p.numel() for p in model.parameters()),
                "steps": args.steps,
                "guidance": args.guidance,
                "images_per_call": len(prompts),
                "repeats": args.repeats,
                "ours_median_s": round(ours_s, 4),
                "naive_median_s": round(naive_s, 4),
                "ours_images_per_s": round(len(prompts) / ours_s, 4),
                "naive_images_per_s": round(len(prompts) / naive_s, 4),
                "speedup": round(naive_s / ours_s, 3),
                "max_abs_pixel_difference": difference,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
