"""An instruction-editing model on held-out edit triples: edit success, clean edits, other objects
kept and preservation error per (s_I, s_T) with intervals, the same per edit kind, and
InstructPix2Pix's two trade-off claims. Prints one JSON object per line.

    python benchmarks/instruct_edit_readout.py models/instruct.pt data/edit_shards --triples 48
"""

from __future__ import annotations

import argparse
import json
import time

import torch

SCALES = [(1.5, 7.5), (1.0, 7.5), (3.0, 7.5), (1.5, 1.0), (1.5, 3.0)]


def scale_pair(text: str) -> tuple[float, float]:
    """'1.5:7.5' -> (1.5, 7.5), the (s_I, s_T) of one setting."""
    try:
        image_scale, text_scale = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected S_I:S_T such as 1.5:7.5, got {text!r}"
        ) from None
    return image_scale, text_scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("shards")
    parser.add_argument("--triples", type=int, default=48)
    parser.add_argument("--steps", default="ddim25")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--scale",
        action="append",
        default=[],
        type=scale_pair,
        metavar="S_I:S_T",
        help="an (image, instruction) guidance setting, repeatable (default: five around 1.5:7.5)",
    )
    args = parser.parse_args()

    from pipeline.evaluation.edit_eval import PAPER_SCALES, edit_triples
    from pipeline.evaluation.edit_sweep import edit_sweep, instruct_claims, kind_rows, sweep_rows
    from pipeline.sampling import SamplerSettings, load_sampling_model

    torch.set_num_threads(args.threads)
    triples, why = edit_triples(args.shards, args.triples)
    if why:
        raise SystemExit(why)
    sampler = load_sampling_model(args.model, expect="instruct")
    began = time.perf_counter()
    scales = args.scale or SCALES
    swept = edit_sweep(sampler, triples, SamplerSettings(steps=args.steps, seed=0), scales)
    for row in sweep_rows(swept, 0.95, 200, 0):
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    for (image_scale, text_scale), values in swept.items():
        for row in kind_rows(values, triples, 0.95, 200, 0):
            print(json.dumps({"s_I": image_scale, "s_T": text_scale,
                              **{k: round(v, 3) if isinstance(v, float) else v
                                 for k, v in row.items()}}))  # fmt: skip
    for claim in instruct_claims(swept, 0.95, 200, 0, 10, prefer=PAPER_SCALES):
        print(json.dumps(claim.__dict__))
    print(json.dumps({"seconds": round(time.perf_counter() - began, 1)}))


if __name__ == "__main__":
    main()
