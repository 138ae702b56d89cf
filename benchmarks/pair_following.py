"""Two-object caption following of text-to-image model files against the guidance scale, as the
evaluate stage's two-object sweep measures it, with more captions when asked. Prints one JSON
object per condition, then the guidance claim.

Takes the first ``--captions`` two-object relation captions of the val split, samples each with
the base model (when given) and with the classifier-free model at every ``--scales`` value (the
same seed everywhere, so conditions are paired), and reads both objects and their relation back
(``pipeline.evaluation.scene_readout.read_pair``). It measures models, not speed.

    python benchmarks/pair_following.py models/cfg.pt --base models/base.pt --captions 96 \
        --scales 1 2 4
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("cfg", help="the classifier-free guidance model file (models/cfg.pt)")
    parser.add_argument("--base", default="", help="the pretrained base model file (a row)")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--captions", type=int, default=96)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--steps", default="40")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--grid", default="", help="write the first 8 captions' samples here")
    args = parser.parse_args()

    import torch

    from pipeline.data.synthetic_scenes import COLOURS, SHAPES
    from pipeline.evaluation.module import sweep_conditions
    from pipeline.evaluation.pair_eval import pair_captions, pair_claim, pair_sweep, sweep_rows
    from pipeline.sampling import SamplerSettings, load_sampling_model

    torch.set_num_threads(args.threads)
    palette = {"colours": list(COLOURS), "shapes": list(SHAPES)}
    captions, why = pair_captions(args.shards, "val", args.captions, palette)
    if why:
        raise SystemExit(why)
    samplers = {"cfg": load_sampling_model(args.cfg)}
    if args.base:
        samplers["base"] = load_sampling_model(args.base)
    conditions = sweep_conditions({"guidance_scales": args.scales}, False, "base" in samplers)
    settings = SamplerSettings(steps=args.steps, seed=args.seed, batch_size=args.batch)
    started = time.perf_counter()
    swept = pair_sweep(samplers, captions, settings, conditions, palette)
    for row in sweep_rows(swept, 0.95):
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    part = {
        "captions": captions,
        "seed": args.seed,
        "rows": sweep_rows(swept, 0.95),
        "per_caption": {
            n: {k: v.tolist() for k, v in values.items() if k != "images"}
            for n, values in swept.items()
        },  # fmt: skip
    }
    uncertainty = {"confidence": 0.95, "bootstrap_replicates": 1000, "min_claim_samples": 10}
    claim = pair_claim({"pairs": part, "uncertainty": uncertainty})
    print(json.dumps({"claim": claim.verdict, "evidence": claim.evidence,
                      "seconds": round(time.perf_counter() - started, 1)}))  # fmt: skip
    if args.grid:
        import numpy as np

        from pipeline.sampling.grid import captioned_grid

        shown = min(8, len(captions))
        images = [v["images"][n] for n in range(shown) for v in swept.values()]
        labels = [f"{name}: {captions[n]}" for n in range(shown) for name in swept]
        captioned_grid(np.stack(images), labels, columns=len(swept), cell=96).save(args.grid)


if __name__ == "__main__":
    main()
