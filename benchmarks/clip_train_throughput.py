"""CLIP training cost per step at a profile's sizes, in process CPU seconds (robust on a shared
CPU) and wall seconds: the noised CLIP's forward (x_t at uniform t), contrastive loss, backward
and AdamW step on a random batch, in process (no Ray).

    python benchmarks/clip_train_throughput.py --profile mini --steps 20

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pipeline.config import load_config
from pipeline.text.clip_tokens import clip_text_tokens
from pipeline.training.clip_module import ClipModule, step_generator
from pipeline.training.clip_stage import clip_model_kwargs
from pipeline.training.contrastive import contrastive_loss, same_caption


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    cfg = load_config([f"profile={args.profile}"], params_path=None)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train = cfg.train_noised_clip
    module = ClipModule(
        clip_model_kwargs(cfg),
        {k: cfg.noised_clip[k] for k in ("diffusion_steps", "noise_schedule")},
        {**dict(train), "noised": True},
    )
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=1e-4)
    size, batch = int(cfg.noised_clip.image_size), int(train.batch_size)
    images = torch.rand(batch, 3, size, size) * 2 - 1
    tokens = clip_text_tokens([f"caption {i}" for i in range(batch)], int(cfg.noised_clip.text_ctx))

    def step(index: int) -> None:
        x_t, t = module.noised_inputs(images, step_generator(0, index, 0))
        loss = contrastive_loss(module.model.logits(x_t, t, tokens), same_caption(tokens))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(0)  # warm-up
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for index in range(1, args.steps + 1):
        step(index)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    params = sum(p.numel() for p in module.model.parameters())
    print(
        json.dumps(
            {
                "profile": args.profile,
                "threads": args.threads,
                "batch_size": batch,
                "parameters": params,
                "image_parameters": sum(p.numel() for p in module.model.visual.parameters()),
                "cpu_s_per_step": round(cpu / args.steps, 4),
                "wall_s_per_step": round(wall / args.steps, 4),
                "steps_configured": {
                    "train_noised_clip": int(cfg.train_noised_clip.max_steps),
                    "eval_clip": int(cfg.eval_clip.max_steps),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
