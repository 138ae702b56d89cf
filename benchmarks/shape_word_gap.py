"""How much a text-to-image model file uses the shape word of its captions, per noise level.
Prints one JSON object.

For the first ``--images`` held-out scenes it noises each image to timestep t and predicts x0
twice: with the true caption and with the shape word swapped for another shape. The gap is the
mean squared x0 error with the swapped caption minus with the true one (0: the shape word is
ignored at that t). It needs no sampling, so it takes seconds where
``caption_following.py`` takes minutes, and it says where in the noise range the model reads the
word. The gap at t = 500-600 tracks unguided shape accuracy (figures: docs/experiments.md).

    python benchmarks/shape_word_gap.py models/base.pt --images 96
"""

from __future__ import annotations

import argparse
import json
import re
import time

import numpy as np
import torch


def swap_shape_word(caption: str, rng: np.random.Generator) -> str | None:
    """The one-object caption with its shape word replaced by another shape; None for a caption
    the scene readout would not score (no shape, or several objects)."""
    from pipeline.data.synthetic_scenes import SHAPES
    from pipeline.evaluation.scene_readout import caption_attributes

    attributes = caption_attributes(caption)
    if attributes is None:
        return None
    shape = attributes["shape"]
    other = str(rng.choice([s for s in SHAPES if s != shape]))
    return re.sub(rf"\b{shape}\b", other, caption, count=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="a text-to-image model file (models/base.pt, models/cfg.pt)")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[100, 300, 500, 600, 700, 900])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from pipeline.data.examples import held_out_examples
    from pipeline.sampling import load_sampling_model
    from pipeline.sampling.upsample import images_to_model
    from pipeline.text.tokenizer import tokenize_batch

    torch.set_num_threads(args.threads)
    loaded = load_sampling_model(args.model)
    model = loaded.model
    rng = np.random.default_rng(args.seed)
    pairs = []
    for example in held_out_examples(args.shards, args.images):
        swapped = swap_shape_word(example["caption"], rng)
        if swapped is not None:
            pairs.append((example, swapped))
    if not pairs:
        raise SystemExit(f"no held-out caption in {args.shards} names one object's shape")
    images = np.stack([example["base"] for example, _ in pairs])  # [N, H, W, 3] uint8
    x_start = images_to_model(torch.from_numpy(images))  # [N, 3, H, W] in [-1, 1]
    diffusion = loaded.diffusion("")
    true_text = tokenize_batch(loaded.tokenizer, [e["caption"] for e, _ in pairs], model.text_ctx)
    swapped_text = tokenize_batch(loaded.tokenizer, [s for _, s in pairs], model.text_ctx)
    generator = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    gaps = {}
    with torch.no_grad():
        for t in args.timesteps:
            timesteps = torch.full((len(pairs),), t)
            noise = torch.randn(x_start.shape, generator=generator)
            x_t = diffusion.q_sample(x_start, timesteps, noise)
            errors = []
            for tokens, mask in (true_text, swapped_text):
                eps = model(x_t, timesteps, tokens=tokens, mask=mask)[:, :3]
                pred = diffusion.predict_xstart_from_eps(x_t, timesteps, eps).clamp(-1, 1)
                errors.append(((pred - x_start) ** 2).mean().item())
            gaps[str(t)] = round(errors[1] - errors[0], 5)
    print(
        json.dumps(
            {
                "model": args.model,
                "step": loaded.info.get("step"),
                "images": len(pairs),
                "shape_word_gap": gaps,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
