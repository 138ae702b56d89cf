"""An upsampler model file against bicubic on held-out pairs, for several sampler settings.
Prints one JSON object per setting.

Takes the first ``--pairs`` samples of the val split (low and high resolution, as the evaluate
stage does), upsamples them with each ``--setting`` (``steps:temperature``) and reports the mean
PSNR of the upsampler and of bicubic with bootstrap intervals of the paired difference. With
``--fid N`` also the FID of both at the high resolution against the first N held-out high-res
images (as the evaluate stage does; the upsampled and bicubic sets resampled together, so the
interval is that of the difference); with ``--own-targets`` instead the FID against the pairs'
own high-res images, the three sets resampled together (the paired interval of the gain). It
measures what sampler settings and training recipes buy, not speed.

    python benchmarks/upsampler_vs_bicubic.py models/upsampler.pt --pairs 48 --fid 96 \
        --setting fast27:0.997 --setting ddim25:0 --tile 32 --tile-stride 8

``--tile`` runs the network on overlapping tiles of that size (the training crop size of a model
trained on crops; ``--tile-stride`` apart), as ``evaluate.upsample_tile_size`` does;
``--projection`` keeps every x0 at the low-res block means, as ``evaluate.upsample_projection``.
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
    parser.add_argument("--fid", type=int, default=0, help="reference images for FID (0: none)")
    parser.add_argument(
        "--disjoint-fid",
        action="store_true",
        help="FID references are the --fid held-out images after the pairs (default: the first "
        "--fid, which include the pairs' own targets, as the evaluate stage does)",
    )
    parser.add_argument(
        "--own-targets",
        action="store_true",
        help="FID against the pairs' own high-res images, every set resampled with the same "
        "indices (paired: the interval of the gain leaves out the reference set's own spread)",
    )
    parser.add_argument("--tile", type=int, default=0, help="tile size (0: whole images)")
    parser.add_argument("--tile-stride", type=int, default=8)
    parser.add_argument(
        "--projection", action="store_true", help="x0 kept at the low-res block means"
    )
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
    from pipeline.sampling.tiles import Tiling

    torch.set_num_threads(args.threads)
    upsampler = load_sampling_model(args.model, expect="upsample")
    pairs = held_out_examples(args.shards, args.pairs, images=("base", "hires"))
    indices = bootstrap_indices(len(pairs), 1000, args.seed)
    if args.own_targets:
        fid = own_target_fid(pairs, indices)
    else:
        fid = fid_figures(args, len(pairs)) if args.fid else None
    for setting in args.setting or ["fast27:0.997"]:
        steps, temperature = setting.split(":")
        started = time.perf_counter()
        settings = replace(
            EVALUATION_SETTINGS, steps=steps, temperature=float(temperature), seed=args.seed
        )
        tiling = Tiling(args.tile, args.tile_stride)
        result = evaluate_upsampling(
            upsampler, pairs, settings, tiling=tiling, project=args.projection
        )
        gain = torch.from_numpy(result.per_image_upsampler - result.per_image_bicubic)
        point = float(gain.mean())
        low, high = centred_interval(point, bootstrap_mean(gain, indices), 0.95)
        figures = fid(result.upsampled, result.bicubic) if fid else {}
        print(
            json.dumps(
                {
                    **figures,
                    "model": args.model,
                    "steps": steps,
                    "temperature": float(temperature),
                    "tile": [args.tile, args.tile_stride] if args.tile else None,
                    "projection": args.projection,
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


def inception_features():
    """A function: uint8 images [N, H, W, 3] -> their FID Inception features [N, 2048]."""
    from pipeline.evaluation.inception_weights import load_fid_inception

    inception = load_fid_inception().eval()

    def features(images: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return inception(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())

    return features


def own_target_fid(pairs: list[dict], indices: torch.Tensor):
    """A function (upsampled, bicubic) -> their FIDs against the pairs' own high-res images and
    the paired bootstrap interval of the gain (bicubic minus ours; ``indices`` [B, N])."""
    from pipeline.evaluation.uncertainty import bootstrap_fid, centred_interval
    from pipeline.evaluation.uncertainty import frechet_distance as fid

    features = inception_features()
    truth = features(np.stack([pair["hires"] for pair in pairs]))

    def figures(upsampled: np.ndarray, bicubic: np.ndarray) -> dict[str, object]:
        ours, theirs = features(upsampled), features(bicubic)
        gain = fid(truth, theirs) - fid(truth, ours)
        replicates = bootstrap_fid(truth, theirs, indices) - bootstrap_fid(truth, ours, indices)
        low, high = centred_interval(gain, replicates, 0.95)
        return {
            "fid_reference": "own targets, paired",
            "fid_upsampler": round(fid(truth, ours), 2),
            "fid_bicubic": round(fid(truth, theirs), 2),
            "fid_gain": round(gain, 2),
            "fid_gain_95": [round(low, 2), round(high, 2)],
        }

    return figures


def fid_figures(args: argparse.Namespace, pairs: int):
    """A function (upsampled, bicubic uint8 [N, H, W, 3]) -> their FIDs against ``args.fid``
    held-out high-res images (the first, or with ``--disjoint-fid`` those after the ``pairs``),
    the 95% interval of the FID gain over bicubic and the FID of the pairs' true images."""
    from pipeline.data.examples import held_out_examples
    from pipeline.evaluation.bootstrap import unpaired_fid
    from pipeline.evaluation.uncertainty import bootstrap_indices, centred_interval
    from pipeline.evaluation.uncertainty import frechet_distance as fid

    features = inception_features()
    skip = pairs if args.disjoint_fid else 0
    needed = max(pairs, skip + args.fid)
    held_out = held_out_examples(args.shards, needed, images=("hires",))
    if len(held_out) < needed:
        raise SystemExit(f"only {len(held_out)} held-out images: fewer than --pairs/--fid ask")
    every = features(np.stack([example["hires"] for example in held_out]))  # each image once
    real = every[skip : skip + args.fid]
    truth = fid(real, every[:pairs])
    real_idx = bootstrap_indices(len(real), 1000, args.seed + 1)
    fake_idx = bootstrap_indices(pairs, 1000, args.seed)

    def figures(upsampled: np.ndarray, bicubic: np.ndarray) -> dict[str, object]:
        ours, theirs = features(upsampled), features(bicubic)
        gain = fid(real, theirs) - fid(real, ours)
        replicates = unpaired_fid(real, theirs, real_idx, fake_idx) - unpaired_fid(
            real, ours, real_idx, fake_idx
        )
        low, high = centred_interval(gain, replicates, 0.95)
        return {
            "fid_reference_images": len(real),
            "fid_references_disjoint": bool(args.disjoint_fid),
            "fid_true_images": round(truth, 2),
            "fid_upsampler": round(fid(real, ours), 2),
            "fid_bicubic": round(fid(real, theirs), 2),
            "fid_gain": round(gain, 2),
            "fid_gain_95": [round(low, 2), round(high, 2)],
        }

    return figures


if __name__ == "__main__":
    main()
