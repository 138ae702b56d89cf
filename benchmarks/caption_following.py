"""Caption following of a text-to-image model file on the embedded scenes. Prints one JSON object.

Samples one image per held-out caption (the first ``--captions`` of the val split, as the
evaluate stage takes them) at ``--guidance`` (1: the model alone), reads each image's object with
``pipeline.evaluation.scene_readout`` and reports colour and shape accuracy, per sampling seed and
pooled, with the shape confusion counts (wanted -> read). More captions and seeds than the
evaluate stage's 48 make the figure steadier; it measures a model, not the sampler's speed.

    python benchmarks/caption_following.py models/base.pt --captions 192 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="a text-to-image model file (models/base.pt, models/cfg.pt)")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--captions", type=int, default=192)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--steps", default="40")
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid", default="", help="write the first seed's first 48 samples here")
    args = parser.parse_args()

    from pipeline.data.examples import held_out_examples
    from pipeline.evaluation.scene_readout import caption_following
    from pipeline.sampling import SamplerSettings, load_sampling_model, sample_text_to_image

    torch.set_num_threads(args.threads)
    loaded = load_sampling_model(args.model)
    captions = [e["caption"] for e in held_out_examples(args.shards, args.captions)]
    rates = ("colour_accuracy", "shape_accuracy", "both_accuracy")
    per_seed, confusion = [], Counter()
    hits = Counter()
    started = time.perf_counter()
    for seed in args.seeds:
        images = torch.cat(
            [
                sample_text_to_image(
                    loaded,
                    captions[start : start + args.batch],
                    SamplerSettings(steps=args.steps, seed=seed * 100_003 + start),
                    guidance_scale=args.guidance,
                )
                for start in range(0, len(captions), args.batch)
            ]
        ).numpy()
        result = caption_following(images, captions)
        per_seed.append({"seed": seed, **{k: result[k] for k in rates}})
        hits.update({k: result[k] for k in ("scored", "colour_hits", "shape_hits", "both_hits")})
        confusion.update(result["shape_confusion"])
        if args.grid and seed == args.seeds[0]:
            from pipeline.sampling.grid import captioned_grid

            Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
            captioned_grid(list(images[:48]), captions[:48]).save(args.grid)

    def pooled(key: str) -> float | None:
        return round(hits[key] / hits["scored"], 4) if hits["scored"] else None

    print(
        json.dumps(
            {
                "model": args.model,
                "step": loaded.info.get("step"),
                "guidance": args.guidance,
                "sampler_steps": args.steps,
                "captions": len(captions),
                "scored": hits["scored"],
                "colour_accuracy": pooled("colour_hits"),
                "shape_accuracy": pooled("shape_hits"),
                "both_accuracy": pooled("both_hits"),
                "per_seed": per_seed,
                "shape_confusion": dict(sorted(confusion.items())),
                "seconds": round(time.perf_counter() - started, 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
