"""Training and sampling throughput of a profile's base model. Prints one JSON object.

Training is timed twice with the same Lightning module and Trainer: fed by the real input
pipeline (WebDataset shards -> Ray Data decode + tokenize -> iter_torch_batches) and fed by
tensors already in memory. Their ratio is the cost of the input pipeline. Ray Train's fixed
start-up is not part of either (it does not scale with steps). Sampling is timed with
classifier-free guidance.

    python benchmarks/train_throughput.py --profile mini --steps 40
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback


class StepTimer(Callback):
    """Wall time of each training step, batch fetch included."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._last = None

    def on_train_batch_end(self, *args) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now


def time_training(module_factory, batches, steps: int, warmup: int) -> dict:
    module = module_factory()
    timer = StepTimer()
    trainer = pl.Trainer(
        max_steps=steps + warmup,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        precision=module.train_cfg["precision"],
    )
    trainer.fit(module, train_dataloaders=batches)
    per_step = timer.times[warmup:]
    return {"median_step_s": statistics.median(per_step), "steps_timed": len(per_step)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--sample-steps", default="ddim25")
    parser.add_argument(
        "overrides", nargs="*", help="config dotlist, e.g. pretrain_base.batch_size=16"
    )
    args = parser.parse_args()

    from omegaconf import OmegaConf

    from pipeline.config import load_config
    from pipeline.data import init_ray, tokenize_captions, training_dataset
    from pipeline.data.sharding import build_shards
    from pipeline.sampling import SamplerSettings, SamplingModel, sample_text_to_image
    from pipeline.training.diffusion_module import GlideDiffusionModule
    from pipeline.training.model_setup import (
        build_tokenizer,
        diffusion_settings,
        glide_model_kwargs,
        tokenizer_spec,
    )

    work = Path(tempfile.mkdtemp(prefix="glide-bench-"))
    batch_size_probe = load_config([f"profile={args.profile}", *args.overrides], params_path=None)
    needed = (args.steps + args.warmup + 2) * batch_size_probe.pretrain_base.batch_size
    cfg = load_config(
        [
            f"profile={args.profile}",
            f"shard.output_dir={work / 'shards'}",
            f"shard.num_samples={max(needed * 2, 256)}",
            *args.overrides,
        ],
        params_path=None,
    )
    train = cfg.pretrain_base
    torch.set_num_threads(int(train.torch_threads) or int(train.cpus_per_worker))
    init_ray(cfg.ray)
    t0 = time.perf_counter()
    manifest = build_shards(cfg)
    shard_seconds = time.perf_counter() - t0

    tokenizer = build_tokenizer(cfg.base_model)
    model_kwargs = glide_model_kwargs(cfg.base_model, tokenizer.vocab_size)
    settings = OmegaConf.to_container(train, resolve=True)

    def factory():
        pl.seed_everything(0, verbose=False)
        return GlideDiffusionModule(
            model_kwargs, diffusion_settings(cfg.base_model), settings, tokenizer.identity
        )

    def ray_stream():
        ds = training_dataset(work / "shards", "train", seed=0, num_epochs=4, manifest=manifest)
        ds = tokenize_captions(
            ds, tokenizer_spec(cfg.base_model), cfg.base_model.text_ctx, keep_text=False
        )
        return ds.iter_torch_batches(batch_size=int(train.batch_size), drop_last=True)

    in_memory = list(itertools.islice(iter(ray_stream()), 4))
    fed_by_ray = time_training(factory, ray_stream(), args.steps, args.warmup)
    fed_in_memory = time_training(factory, itertools.cycle(in_memory), args.steps, args.warmup)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    model = factory().model.eval()
    sampler = SamplingModel.of_network(model, tokenizer, diffusion_settings(cfg.base_model))
    prompts = list(train.sample_prompts) or ["a red circle"]
    t0 = time.perf_counter()
    sample_settings = SamplerSettings(steps=args.sample_steps)
    sample_text_to_image(sampler, prompts, sample_settings, guidance_scale=3.0)
    sample_seconds = time.perf_counter() - t0

    batch = int(train.batch_size)
    ray_ips = batch / fed_by_ray["median_step_s"]
    mem_ips = batch / fed_in_memory["median_step_s"]
    print(
        json.dumps(
            {
                "profile": args.profile,
                "device": "cuda" if torch.cuda.is_available() else "cpu",
                "torch_threads": torch.get_num_threads(),
                "image_size": int(cfg.base_model.image_size),
                "batch_size": batch,
                "parameters": sum(p.numel() for p in model.parameters()),
                "train_images_per_s_ray_data": round(ray_ips, 2),
                "train_images_per_s_in_memory": round(mem_ips, 2),
                "input_pipeline_overhead": round(1.0 - ray_ips / mem_ips, 4),
                "median_step_s": {
                    "ray_data": fed_by_ray["median_step_s"],
                    "in_memory": fed_in_memory["median_step_s"],
                },
                "steps_timed": fed_by_ray["steps_timed"],
                "peak_rss_mb_driver": round(peak_rss_mb, 1),
                "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
                if torch.cuda.is_available()
                else None,
                "sampling_images_per_s": round(len(prompts) / sample_seconds, 3),
                "sampling": {"steps": args.sample_steps, "guidance": 3.0, "images": len(prompts)},
                "shard_seconds": round(shard_seconds, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
