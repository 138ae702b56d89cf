"""Where along the sampling chain an upsampler's samples leave the data's noise level.
Prints one JSON object per step, then a summary line.

For the first ``--pairs`` held-out pairs, runs the upsampler's chain (``--steps``, GLIDE's
temperature) and after every step compares x_t with the true high-res image x0:
``noise_ratio`` = std((x_t - sqrt(abar) x0) / sqrt(1 - abar)) is 1 on the data's path and
above 1 where the chain carries more noise than its step should; ``rms_error`` and ``psnr`` are
those of x_t against x0. ``--variance-fraction v`` replaces the network's learned variance
output by ``v`` (-1: the posterior variance beta-tilde, +1: beta) to see what the learned
variance costs. A diagnostic of training recipes, not a timing.

    python benchmarks/upsampler_chain_noise.py models/upsampler.pt --steps fast27
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import torch


def fixed_variance(model: torch.nn.Module, fraction: float) -> None:
    """Make ``model``'s variance channels (the last 3 of 6) output ``fraction``."""
    forward = model.forward

    def patched(*args, **kwargs):
        out = forward(*args, **kwargs).clone()
        out[:, 3:] = fraction
        return out

    model.forward = patched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="an upsampler model file (models/upsampler.pt)")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--steps", default="fast27", help="respacing, e.g. fast27 or 50,10,3,2,2")
    parser.add_argument("--variance-fraction", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from pipeline.data.examples import held_out_examples
    from pipeline.sampling import load_sampling_model
    from pipeline.sampling.text_to_image import Conditioning, sample_images_progressive
    from pipeline.sampling.upsample import GLIDE_UPSAMPLE_SETTINGS, _low_res_inputs

    torch.set_num_threads(args.threads)
    upsampler = load_sampling_model(args.model, expect="upsample")
    if args.variance_fraction is not None:
        fixed_variance(upsampler.model, args.variance_fraction)
    pairs = held_out_examples(args.shards, args.pairs, images=("base", "hires"))
    low = torch.from_numpy(np.stack([p["base"] for p in pairs]))
    truth = torch.from_numpy(np.stack([p["hires"] for p in pairs])).permute(0, 3, 1, 2)
    truth = truth.float() / 127.5 - 1  # [N, 3, H, W]
    settings = replace(GLIDE_UPSAMPLE_SETTINGS, steps=args.steps, seed=args.seed)
    conditioning = Conditioning(image_inputs=_low_res_inputs(upsampler, low, 0, args.seed))
    diffusion = upsampler.diffusion(args.steps)
    captions = [str(p["caption"]) for p in pairs]
    count = len(diffusion.alphas_cumprod_prev)
    steps = sample_images_progressive(upsampler, captions, settings, conditioning)
    for k, x in enumerate(steps):
        index = count - 1 - k  # x is x at respaced step index - 1
        abar = float(diffusion.alphas_cumprod_prev[index])
        to_t = int(diffusion.timestep_map[index - 1]) if index > 0 else -1
        rms = float((x - truth).pow(2).mean().sqrt())
        row = {"step": k, "to_t": to_t, "data_noise_std": round((1 - abar) ** 0.5, 4),
               "rms_error": round(rms, 4), "psnr": round(20 * np.log10(2 / rms), 2)}  # fmt: skip
        if to_t >= 0:
            noise = (x - abar**0.5 * truth) / (1 - abar) ** 0.5
            row["noise_ratio"] = round(float(noise.std()), 3)
        print(json.dumps(row), flush=True)
    summary = {"model": args.model, "steps": args.steps, "pairs": len(pairs),
               "variance_fraction": args.variance_fraction, "final_psnr": row["psnr"]}  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
