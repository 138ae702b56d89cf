"""The library side of the ``train_noised_clip`` stage: the noised CLIP that guides sampling and
the evaluation CLIP that measures CLIP score, both trained on the train shards through the shared
Ray Train launcher (resume, MLflow, NaN guard) with :class:`ClipModule`.

The evaluation CLIP is a second, independent run in the same stage: clean images only (t = 0), its
own seed (network initialisation and data order), its own resume checkpoints. When the user gives
OpenAI CLIP weights (``eval_clip.openai_weights``), nothing is trained: ``models/eval_clip.pt``
records the weights' path and SHA-256 and evaluation loads them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from pipeline.config import load_config, save_config
from pipeline.data import init_ray, read_manifest, training_dataset
from pipeline.data.examples import held_out_examples
from pipeline.data.ray_capacity import require_capacity, training_demand
from pipeline.data.train_input import samples_per_epoch
from pipeline.io import atomic_output_path, atomic_write_text
from pipeline.models.clip_file import openai_reference_payload
from pipeline.models.eval_clip import load_openai_clip
from pipeline.models.noised_clip import CLIP_KEYS
from pipeline.text.clip_tokens import clip_text_tokens, clip_vocab_size
from pipeline.tracking import StageRun, stage_run
from pipeline.training.data_feed import stream_window
from pipeline.training.diffusion_stage import manifest_digest
from pipeline.training.launcher import fit_on_ray, run_fingerprint
from pipeline.training.train_job import LogImage, TrainJob
from pipeline.training.worker_parts import WorkerParts

MODEL_SECTION = "noised_clip"
STAGE = "train_noised_clip"
EVAL_STAGE = "eval_clip"


@dataclass(frozen=True)
class ClipWorkerData:
    """The CLIP stages' own part of a :class:`TrainJob`: held-out (image, caption) pairs for
    retrieval validation (:func:`validation_pairs`, None without enough), the prefix of the
    run's metric names."""

    val: dict[str, Any] | None
    log_prefix: str


def clip_worker_parts(job: TrainJob, log_image: LogImage | None) -> WorkerParts:
    """The CLIP stages' module on a Ray Train worker (a job's ``build_parts``)."""
    from pipeline.training.clip_module import ClipModule

    data: ClipWorkerData = job.worker_data
    module = ClipModule(
        job.model_kwargs,
        job.diffusion,
        OmegaConf.to_container(job.train, resolve=True),
        val=data.val,
        seed=int(job.cfg.seed),
        log_prefix=data.log_prefix,
    )
    return WorkerParts(module, [], module.final_metrics)


def add_clip_tokens(batch: dict[str, np.ndarray], *, text_ctx: int) -> dict[str, np.ndarray]:
    """Ray Data worker: captions -> CLIP tokens [B, text_ctx]; string columns dropped."""
    out = {name: value for name, value in batch.items() if value.dtype != object}
    out["tokens"] = clip_text_tokens([str(c) for c in batch["caption"]], text_ctx).numpy()
    return out


def clip_model_kwargs(cfg: DictConfig) -> dict[str, Any]:
    model = cfg[MODEL_SECTION]
    return {
        **{k: int(model[k]) for k in CLIP_KEYS if k != "vocab_size"},
        "vocab_size": clip_vocab_size(),
    }


def validation_pairs(
    shard_dir: Path, manifest: dict[str, Any], count: int
) -> dict[str, Any] | None:
    """Up to ``count`` held-out (image, caption) pairs from the val shards, or None if none."""
    examples = held_out_examples(shard_dir, count, manifest=manifest)
    if len(examples) < 2:
        print("note: fewer than 2 validation samples: no retrieval accuracy", file=sys.stderr)
        return None
    return {
        "images": np.stack([ex["base"] for ex in examples]),
        "captions": [str(ex["caption"]) for ex in examples],
    }


def train_clip(
    cfg: DictConfig,
    *,
    stage: str,
    run: StageRun | None,
    shard_dir: Path,
    manifest: dict[str, Any],
    log_prefix: str = "",
) -> dict[str, Any]:
    """Train one CLIP (section ``stage``: ``train_noised_clip`` or ``eval_clip``) on Ray Train;
    write its model file to ``cfg[stage].output``; return its metrics. ``log_prefix`` starts
    the names of its metrics in the MLflow run."""
    job = clip_job(cfg, stage, run, shard_dir, manifest, log_prefix)
    return fit_on_ray(job, _clip_stream_builder(cfg, stage, shard_dir, manifest))


def clip_job(
    cfg: DictConfig,
    stage: str,
    run: StageRun | None,
    shard_dir: Path,
    manifest: dict[str, Any],
    log_prefix: str,
) -> TrainJob:
    """The training job of one CLIP (section ``stage``) on the train shards."""
    model_cfg = cfg[MODEL_SECTION]
    inputs = [s["sha256"] for s in manifest["splits"]["train"]["shards"]]
    val = validation_pairs(shard_dir, manifest, int(cfg[stage].val_samples))
    return TrainJob(
        cfg=cfg,
        stage=stage,
        model_section=MODEL_SECTION,
        model_kwargs=clip_model_kwargs(cfg),
        diffusion={k: model_cfg[k] for k in ("diffusion_steps", "noise_schedule")},
        fingerprint=run_fingerprint(cfg, stage, MODEL_SECTION, json.dumps(inputs)),
        build_parts=clip_worker_parts,
        run_id=run.run_id if run else "",
        tracking_uri=run.tracking_uri if run else "",
        provenance={"data_manifest_sha256": manifest_digest(shard_dir)},
        worker_data=ClipWorkerData(val, log_prefix),
    )


def _clip_stream_builder(
    cfg: DictConfig, stage: str, shard_dir: Path, manifest: dict[str, Any]
) -> Callable[[int, int, int, int], Any]:
    """The ``make_dataset`` of :func:`fit_on_ray`: worker ``rank``'s window of the seeded
    multi-epoch order of the train shards, captions as CLIP tokens."""
    train, model_cfg = cfg[stage], cfg[MODEL_SECTION]
    epoch_size = samples_per_epoch(manifest, "train")
    seed = int(cfg.seed)

    def make_dataset(first_sample: int, batch: int, rank: int, world_size: int) -> Any:
        window = stream_window(first_sample, int(train.max_steps), batch, epoch_size, world_size)
        dataset = training_dataset(
            shard_dir,
            "train",
            image_key="base",
            **window,
            rank=rank,
            seed=seed,
            skip_corrupt=bool(train.skip_corrupt_samples),
            manifest=manifest,
        )
        dataset = dataset.map_batches(
            add_clip_tokens, batch_size=256, fn_kwargs={"text_ctx": int(model_cfg.text_ctx)}
        )
        dataset.context.execution_options.preserve_order = True
        return dataset

    return make_dataset


def write_openai_reference(cfg: DictConfig) -> dict[str, Any]:
    """Check that the user's OpenAI CLIP weights load; point ``eval_clip.output`` at them."""
    weights = str(Path(cfg.eval_clip.openai_weights).resolve())
    loaded = load_openai_clip(weights)
    with atomic_output_path(cfg.eval_clip.output) as tmp:
        torch.save(openai_reference_payload(weights, loaded.sha256, stage=STAGE), tmp)
    return {"kind": "openai", "metric_name": loaded.metric_name, "openai_weights": weights}


def run_clip_stage(
    cfg: DictConfig, *, run: StageRun | None, metrics_path: str | Path
) -> dict[str, Any]:
    """Train the noised CLIP, then the evaluation CLIP (or record the OpenAI weights); write both
    model files and the metrics JSON ``{"noised_clip": {...}, "eval_clip": {...}}``."""
    init_ray(cfg.ray)
    for section in (STAGE, EVAL_STAGE):  # before any work
        require_capacity(cfg.ray, training_demand(section, cfg[section]))
    shard_dir = Path(cfg.shard.output_dir).resolve()  # Ray workers may run in another folder
    manifest = read_manifest(shard_dir)
    common = {"run": run, "shard_dir": shard_dir, "manifest": manifest}
    record: dict[str, Any] = {"noised_clip": train_clip(cfg, stage=STAGE, **common)}
    if cfg.eval_clip.openai_weights:
        record["eval_clip"] = write_openai_reference(cfg)
    else:
        eval_cfg = OmegaConf.merge(cfg, {"seed": int(cfg.eval_clip.seed)})
        eval_metrics = train_clip(eval_cfg, stage=EVAL_STAGE, log_prefix="eval_clip/", **common)
        record["eval_clip"] = {"kind": "trained", "metric_name": "clip_score_proxy", **eval_metrics}
    record["mlflow_run_id"] = run.run_id if run else ""
    atomic_write_text(metrics_path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    if run is not None:
        numbers = {
            f"{STAGE}/{name}/{key}": value
            for name in ("noised_clip", "eval_clip")
            for key, value in record[name].items()
            if isinstance(value, int | float)
        }
        run.log_metrics(numbers)
        run.set_tags(
            {
                "glide.output": str(cfg[STAGE].output),
                "glide.eval_clip": record["eval_clip"]["metric_name"],
            }
        )
    return record


def clip_stage_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``train_noised_clip``: config (``key=value`` overrides), MLflow run,
    both CLIPs; writes the model files, their config and metrics/train_noised_clip.json."""
    cfg = load_config(list(sys.argv[1:] if argv is None else argv))
    with stage_run(cfg, STAGE) as run:
        run_clip_stage(cfg, run=run, metrics_path=Path("metrics") / f"{STAGE}.json")
        save_config(cfg, Path(cfg[STAGE].output).with_suffix(".config.yaml"))
    return 0
