"""The library side of every diffusion training stage (``pretrain_base``, later ``finetune_cfg``,
``finetune_inpaint``, ``train_upsampler``): data -> Ray Train -> model file, metrics, MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pipeline.data import init_ray, read_manifest, training_dataset
from pipeline.io import atomic_write_text
from pipeline.tracking import StageRun
from pipeline.training.launcher import fit_on_ray, run_fingerprint
from pipeline.training.model_setup import build_tokenizer, diffusion_settings, glide_model_kwargs


def run_diffusion_stage(
    cfg: DictConfig,
    *,
    stage: str,
    model_section: str,
    run: StageRun | None,
    metrics_path: str | Path,
    grid_path: str | Path | None = None,
) -> dict[str, Any]:
    """Train the stage's model on the train shards; write its model file and metrics JSON."""
    train = cfg[stage]
    model_cfg = cfg[model_section]
    shard_dir = Path(cfg.shard.output_dir)
    manifest = read_manifest(shard_dir)
    tokenizer = build_tokenizer(model_cfg)
    init_ray(cfg.ray)
    dataset = training_dataset(
        shard_dir,
        "train",
        tokenizer=tokenizer,
        text_ctx=int(model_cfg.text_ctx),
        image_key="base",
        seed=int(cfg.seed),
        skip_corrupt=bool(train.skip_corrupt_samples),
    )
    data_id = manifest.get("fingerprint") or json.dumps(
        [s["sha256"] for s in manifest["splits"]["train"]["shards"]]
    )
    fingerprint = run_fingerprint(cfg, stage, model_section, data_id)
    metrics = fit_on_ray(
        cfg,
        stage=stage,
        model_section=model_section,
        dataset=dataset,
        model_kwargs=glide_model_kwargs(model_cfg, tokenizer.vocab_size),
        diffusion=diffusion_settings(model_cfg),
        fingerprint=fingerprint,
        run_id=run.run_id if run else "",
        tracking_uri=run.tracking_uri if run else "",
        init_from=str(train.init_from),
        shuffle_buffer=int(train.shuffle_buffer),
        grid_output=grid_path,
    )
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if run is not None:
        run.log_metrics({f"{stage}/{k}": v for k, v in metrics.items()})
        run.set_tags({"glide.output": str(train.output), "glide.fingerprint": fingerprint})
        if grid_path is not None and Path(grid_path).exists():
            run.log_artifact(grid_path, "samples")
    return metrics
