"""Cost of one upsampler training step (forward, backward, fused AdamW) for crop sizes, batch
sizes, widths and precisions, on random inputs. Prints ONE JSON object: the median seconds a step
of each variant over ``--repeats`` interleaved rounds (machines here are noisy: compare variants
of one run only).

    python benchmarks/upsampler_step_cost.py --profile mini --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

VARIANTS = {
    "32px_batch16": {"crop": 32, "batch": 16},
    "64px_batch4": {"crop": 64, "batch": 4},
    "64px_batch2": {"crop": 64, "batch": 2},
    "48px_batch4": {"crop": 48, "batch": 4},
    "64px_batch4_16ch_1244": {
        "crop": 64,
        "batch": 4,
        "num_channels": 16,
        "channel_mult": (1, 2, 4, 4),
    },
    "64px_batch4_16ch_1224": {
        "crop": 64,
        "batch": 4,
        "num_channels": 16,
        "channel_mult": (1, 2, 2, 4),
    },
    "64px_batch4_bf16": {"crop": 64, "batch": 4, "bf16": True},
    "64px_batch4_bf16_channels_last": {"crop": 64, "batch": 4, "bf16": True, "channels_last": True},
}


def step_seconds(model_kwargs: dict, variant: dict, steps: int, warmup: int) -> float:
    """Median wall time of a training step of a freshly built model."""
    from pipeline.models.factory import create_glide_model

    arch = {k: variant[k] for k in ("num_channels", "channel_mult") if k in variant}
    torch.manual_seed(0)
    model = create_glide_model(**{**model_kwargs, **arch})
    crop, batch = variant["crop"], variant["batch"]
    x = torch.randn(batch, 3, crop, crop)
    low_res = torch.randn(batch, 3, crop // 4, crop // 4)
    if variant.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4, fused=True)
    ctx = model_kwargs["text_ctx"]
    tokens = torch.randint(0, model_kwargs["vocab_size"], (batch, ctx))
    mask = torch.ones(batch, ctx, dtype=torch.bool)
    t = torch.randint(0, 1000, (batch,))
    times = []
    for _ in range(steps + warmup):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(variant.get("bf16"))):
            out = model(x, t, tokens=tokens, mask=mask, low_res=low_res)
        out.float().pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    return statistics.median(times[warmup:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    args = parser.parse_args()

    from pipeline.config import load_config
    from pipeline.training.model_setup import glide_model_kwargs

    torch.set_num_threads(args.threads)
    cfg = load_config([f"profile={args.profile}"], params_path=None)
    model_kwargs = glide_model_kwargs(cfg.upsample_model, vocab_size=1000)
    rounds: dict[str, list[float]] = {name: [] for name in args.variants}
    for _ in range(args.repeats):
        for name in args.variants:
            rounds[name].append(step_seconds(model_kwargs, VARIANTS[name], args.steps, args.warmup))
    median = {name: round(statistics.median(values), 4) for name, values in rounds.items()}
    reference = median.get("64px_batch4")
    print(
        json.dumps(
            {
                "profile": args.profile,
                "threads": args.threads,
                "median_step_s": median,
                "relative_to_64px_batch4": {
                    name: round(value / reference, 2) for name, value in median.items()
                }
                if reference
                else None,
                "rounds_s": {k: [round(v, 4) for v in vs] for k, vs in rounds.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
