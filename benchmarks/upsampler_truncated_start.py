"""Where an upsampler loses to bicubic: sample it from the bicubic image noised to an
intermediate step (an SDEdit-style truncated chain) instead of pure noise. Prints one JSON
object per (respacing, start).

If the network denoised better than bicubic at low noise, a start near t = 0 would beat bicubic
(it keeps bicubic's colours and only has to sharpen the edges); if the PSNR climbs towards
bicubic from below as the start lowers, the network is worse than bicubic at every noise level.

    python benchmarks/upsampler_truncated_start.py models/upsampler.pt --pairs 24 \
        --steps fast27 --steps ddim25 --start 1 --start 0.5 --start 0.2 --start 0.1
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="an upsampler model file (models/upsampler.pt)")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--steps", action="append", default=[], help="respacing (fast27, ddim25)")
    parser.add_argument(
        "--start", action="append", type=float, default=[], help="0..1 of the chain"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from pipeline.data.examples import held_out_examples
    from pipeline.evaluation.upsampling import bicubic_upsample, psnr
    from pipeline.sampling import load_sampling_model
    from pipeline.text import tokenize_batch

    torch.set_num_threads(args.threads)
    upsampler = load_sampling_model(args.model, expect="upsample")
    pairs = held_out_examples(args.shards, args.pairs, images=("base", "hires"))
    low, high = (np.stack([p[k] for p in pairs]) for k in ("base", "hires"))
    bicubic = bicubic_upsample(low, high.shape[1])
    to_model = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    net = upsampler.model
    tokens, mask = tokenize_batch(upsampler.tokenizer, [p["caption"] for p in pairs], net.text_ctx)
    with torch.no_grad():
        kwargs = {"text_outputs": net.encode_text(tokens, mask), "low_res": to_model(low)}
    if net.noise_cond_aug:
        kwargs["aug_level"] = torch.zeros(len(pairs), dtype=torch.long)
    for steps in args.steps or ["fast27"]:
        diffusion = upsampler.diffusion(steps)
        for start in args.start or [1.0]:
            began = time.perf_counter()
            images, start_t = _sample_from(
                upsampler, diffusion, to_model(bicubic), kwargs, steps, start
            )
            gain = psnr(images, high) - psnr(bicubic, high)
            print(json.dumps({
                "model": args.model, "steps": steps, "start": start, "start_t": start_t,
                "psnr": round(float(psnr(images, high).mean()), 2),
                "psnr_bicubic": round(float(psnr(bicubic, high).mean()), 2),
                "gain": round(float(gain.mean()), 2), "gain_sd": round(float(gain.std()), 2),
                "seconds": round(time.perf_counter() - began, 1),
            }), flush=True)  # fmt: skip


def _sample_from(upsampler, diffusion, x0_bicubic, kwargs, steps, start):
    """uint8 images sampled from step ``start`` of the chain (1: pure noise, GLIDE's 0.997)."""
    from pipeline.diffusion import SamplerSettings, StepHooks, final_step, sample_loop_progressive

    generator = torch.Generator().manual_seed(0)
    k = min(diffusion.num_timesteps - 1, round(start * (diffusion.num_timesteps - 1)))
    noise = torch.randn(x0_bicubic.shape, generator=generator)
    if start >= 1.0:
        x = noise * 0.997
    else:
        x = diffusion.q_sample(x0_bicubic, torch.full((len(noise),), k), noise=noise)
    truncated = _first_steps(upsampler, diffusion, k)
    settings = SamplerSettings(steps=steps)
    with torch.no_grad():
        steps_out = sample_loop_progressive(
            upsampler.model, truncated, x.shape, settings, StepHooks(model_kwargs=kwargs),
            generator=generator, noise=x,
        )  # fmt: skip
        sample = final_step(steps_out)["sample"]
    images = ((sample + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return images, int(diffusion.timestep_map[k])


def _first_steps(upsampler, diffusion, k):
    """The respaced diffusion cut to its steps 0..k (a start at step k)."""
    from pipeline.diffusion.respace import SpacedDiffusion
    from pipeline.diffusion.schedules import get_named_beta_schedule

    betas = get_named_beta_schedule(upsampler.noise_schedule, upsampler.diffusion_steps)
    kept = [int(t) for t in diffusion.timestep_map[: k + 1]]
    return SpacedDiffusion(
        kept,
        betas,
        prediction_type=upsampler.prediction_type,
        low_res_residual=upsampler.low_res_residual,
        sigma_data=upsampler.sigma_data,
    )


if __name__ == "__main__":
    main()
