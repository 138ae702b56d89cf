"""How much an instruction-editing model reads the image it edits. Prints one JSON object per line.

On held-out triples, the target is noised to step t and the model predicts x0 three ways: with
the triple's own source image, with the source dropped (zeros, as in training) and with another
triple's source. A model that reads its source predicts x0 better with its own than with none
(the gain is largest at high t, where x_t no longer shows the layout); one that ignores it scores
the same three times. For scale: the error of copying the source unedited as x0, and the mean
absolute first-layer weight of each input segment (the source's start at zero). Errors are mean absolute x0 errors in [0, 1], 95% bootstrap interval
of the paired difference (none minus own source).

    python benchmarks/instruct_source_use.py models/instruct.pt data/edit_shards --triples 64
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="an instruct model file (models/instruct.pt)")
    parser.add_argument("shards", help="edit-triple shards (data/edit_shards)")
    parser.add_argument("--triples", type=int, default=64)
    parser.add_argument("--timesteps", default="200,600,800,900,950")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from pipeline.data.edit_shards import EDIT_MANIFEST_FORMAT
    from pipeline.data.examples import held_out_examples
    from pipeline.data.manifest import read_manifest
    from pipeline.evaluation.uncertainty import bootstrap_indices, bootstrap_mean, centred_interval
    from pipeline.models.factory import input_slices
    from pipeline.sampling import load_sampling_model
    from pipeline.text.tokenizer import tokenize_batch
    from pipeline.training.diffusion_module import images_to_model_range

    torch.set_num_threads(args.threads)
    sampler = load_sampling_model(args.model, expect="instruct")
    model, config = sampler.model, sampler.model.config
    diffusion = sampler.diffusion()
    manifest = read_manifest(args.shards, expected_format=EDIT_MANIFEST_FORMAT)
    triples = held_out_examples(
        args.shards, args.triples, images=("source", "edited"), manifest=manifest
    )
    source, target = (
        images_to_model_range(torch.from_numpy(np.stack([t[role] for t in triples])))
        for role in ("source", "edited")
    )
    tokens, mask = tokenize_batch(
        sampler.tokenizer, [t["caption"] for t in triples], int(config["text_ctx"])
    )
    indices = bootstrap_indices(len(triples), 1000, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    sources = {"own": source, "none": torch.zeros_like(source), "other": source.roll(1, 0)}
    for step in (int(s) for s in args.timesteps.split(",")):
        t = torch.full((len(triples),), step)
        x_t = diffusion.q_sample(target, t, torch.randn(target.shape, generator=generator))
        errors = {}
        with torch.no_grad():
            for name, image in sources.items():
                out = diffusion.call_model(model, x_t, t, tokens=tokens, mask=mask,
                                           source_image=image)  # fmt: skip
                x0, _ = diffusion.xstart_and_eps(x_t, t, out[:, :3])
                errors[name] = (x0.clamp(-1, 1) - target).abs().mean(dim=(1, 2, 3)) / 2
        gain = errors["none"] - errors["own"]
        point = float(gain.mean())
        low, high = centred_interval(point, bootstrap_mean(gain, indices), 0.95)
        row = {f"x0_error_{name}_source": round(float(e.mean()), 4) for name, e in errors.items()}
        print(json.dumps({"t": step, **row, "gain_of_own_source": round(point, 4),
                          "gain_95": [round(low, 4), round(high, 4)]}))  # fmt: skip
    weight = model.input_blocks[0][0].weight.detach()
    weights = {
        name: round(float(weight[:, where].abs().mean()), 5)
        for name, where in input_slices(config).items()
    }
    copy_error = round(float((source - target).abs().mean() / 2), 4)  # x0 = the source, unedited
    print(json.dumps({"mean_abs_first_layer_weight": weights, "x0_error_copying_source": copy_error,
                      "triples": len(triples)}))  # fmt: skip


if __name__ == "__main__":
    main()
