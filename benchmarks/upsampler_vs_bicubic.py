"""An upsampler model file against bicubic on held-out pairs, for several sampler settings.
Prints one JSON object per setting.

Takes the first ``--pairs`` samples of the val split (low and high resolution, as the evaluate
stage does), upsamples them with each ``--setting`` (``steps:temperature``) and reports the mean
PSNR of the upsampler and of bicubic with bootstrap intervals of the paired difference. It
measures what sampler settings and training recipes buy, not speed.

    python benchmarks/upsampler_vs_bicubic.py models/upsampler.pt --pairs 48 \
        --setting fast27:0.997 --setting ddim25:0
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="an upsampler model file (models/upsampler.pt)")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--setting", action="append", default=[], help="steps:temperature")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from pipeline.data.examples import held_out_examples
    from pipeline.evaluation.uncertainty import (
        bootstrap_indices,
        bootstrap_mean,
        centred_interval,
    )
    from pipeline.evaluation.upsampling import EVALUATION_SETTINGS, evaluate_upsampling
    from pipeline.sampling import load_sampling_model

    torch.set_num_threads(args.threads)
    upsampler = load_sampling_model(args.model, expect="upsample")
    pairs = held_out_examples(args.shards, args.pairs, images=("base", "hires"))
    indices = bootstrap_indices(len(pairs), 1000, args.seed)
    for setting in args.setting or ["fast27:0.997"]:
        steps, temperature = setting.split(":")
        started = time.perf_counter()
        settings = replace(
            EVALUATION_SETTINGS, steps=steps, temperature=float(temperature), seed=args.seed
        )
        result = evaluate_upsampling(upsampler, pairs, settings)
        gain = torch.from_numpy(result.per_image_upsampler - result.per_image_bicubic)
        point = float(gain.mean())
        low, high = centred_interval(point, bootstrap_mean(gain, indices), 0.95)
        print(
            json.dumps(
                {
                    "model": args.model,
                    "steps": steps,
                    "temperature": float(temperature),
                    "pairs": len(pairs),
                    "psnr_upsampler": round(result.psnr_upsampler, 2),
                    "psnr_bicubic": round(result.psnr_bicubic, 2),
                    "psnr_gain": round(point, 2),
                    "psnr_gain_95": [round(low, 2), round(high, 2)],
                    "worst_gain": round(float(np.min(gain.numpy())), 2),
                    "seconds": round(time.perf_counter() - started, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
