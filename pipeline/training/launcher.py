"""Run a training stage on Ray Train: TorchTrainer + Lightning, fed by Ray Data.

This is the driver's side; each worker runs ``train_worker.train_loop``. A stage describes its
run as a ``train_job.TrainJob`` and every stage shares this loop (checkpoints, resume, MLflow,
progress log, final model); what differs is the LightningModule and callbacks its job's
``build_parts`` makes (``worker_parts.WorkerParts``): ``worker_parts.diffusion_worker_parts``
for the diffusion stages, ``clip_stage.clip_worker_parts`` for the CLIP stage.

The same code runs on one CPU worker (CI, laptops) and on many GPU workers of a cluster
(``ray.address``, ``num_workers``, ``use_gpu``, ``cpus_per_worker`` from the stage's config).
Checkpoints for resuming go to ``<checkpoint_dir>/<stage>/<fingerprint>/last.ckpt``, where the
fingerprint covers everything that determines the result (config sections, seed, input data), so
a changed config never resumes a stale run. The final model (EMA for diffusion) comes back to the driver as a Ray
Train checkpoint and is written atomically to the stage's ``output``.

With several workers (data parallel, ``strategy: ddp`` or sharded ``fsdp``) ``batch_size`` is the
global batch and each worker reads its own stream (see ``data_feed``); the stage first checks
that the cluster has CPUs for the workers and for their input pipeline, and every wait for
resources ends after ``ray.resource_timeout_s`` with an error naming the settings to change.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.data.ray_capacity import (
    Demand,
    fit_within_timeout,
    input_cpus_per_stream,
    no_retry_failure_config,
    require_capacity,
    training_demand,
)
from pipeline.io import atomic_output_path
from pipeline.training.data_feed import checkpoint_step, ingest_options, stream_name
from pipeline.training.train_job import ResumePlan, TrainJob
from pipeline.training.train_worker import FINAL_MODEL, loop_config, train_loop
from pipeline.training.worker_parts import FINAL_GRID


def run_fingerprint(cfg: DictConfig, stage: str, model_section: str, data_id: str) -> str:
    """A short hash of what determines a stage's result: its section, the model, seed, data."""
    relevant = {
        "stage": stage,
        "train": OmegaConf.to_container(cfg[stage], resolve=True),
        "model": OmegaConf.to_container(cfg[model_section], resolve=True),
        "seed": int(cfg.seed),
        "data": data_id,
    }
    for volatile in (
        "sample_every_steps",
        "sample_prompts",
        "sample_steps",
        "sample_guidance",
        "log_every_steps",
        "checkpoint_every_steps",
        "output",
        "checkpoint_dir",
        "sample_images",
        "sample_temperature",
        "sample_aug_level",
        "val_every_steps",
    ):
        relevant["train"].pop(volatile, None)
    blob = json.dumps(relevant, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def resume_checkpoint_dir(cfg: DictConfig, stage: str, fingerprint: str) -> Path:
    return Path(cfg[stage].checkpoint_dir).resolve() / stage / fingerprint


def _starved_hint(demand: Demand) -> str:
    s = demand.section
    return (
        f"Give the cluster CPUs beside the training workers: change ray.num_cpus (or add "
        f"nodes), {s}.num_workers or {s}.cpus_per_worker."
    )


def _torch_trainer(job: TrainJob, plan: ResumePlan, datasets: dict, ingest: Any) -> Any:
    """The Ray Train trainer of a job: its workers (each runs ``train_loop`` on the job and its
    plan), no retries, one stream per worker (``ingest``: the streams' Ray Data options)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    train = job.train
    resources = {"CPU": float(train.cpus_per_worker)}
    if train.use_gpu:
        resources["GPU"] = 1.0
    return TorchTrainer(
        train_loop,
        train_loop_config=loop_config(job, plan),
        scaling_config=ray.train.ScalingConfig(
            num_workers=int(train.num_workers),
            use_gpu=bool(train.use_gpu),
            resources_per_worker=resources,
        ),
        run_config=ray.train.RunConfig(
            name=f"{job.stage}-{job.fingerprint}-{uuid.uuid4().hex[:8]}",
            storage_path=str(plan.checkpoint_dir.parent / "ray_results"),
            failure_config=no_retry_failure_config(),
        ),
        datasets=datasets,
        # Each worker iterates its own stream (no split coordinator: an actor that polls a CPU
        # core, a third of a 2-core machine's training throughput, and splits by timing).
        dataset_config=ray.train.DataConfig(datasets_to_split=[], execution_options=ingest),
    )


def _copy_outputs(folder: Path, output: Path, grid_output: str | Path | None) -> dict[str, Any]:
    """Write the model file (and the final grid) reported by rank 0; return its metrics."""
    with atomic_output_path(output) as tmp:
        shutil.copyfile(folder / FINAL_MODEL, tmp)
    if grid_output is not None and (folder / FINAL_GRID).exists():
        with atomic_output_path(grid_output) as tmp:
            shutil.copyfile(folder / FINAL_GRID, tmp)
    return json.loads((folder / "metrics.json").read_text())


def fit_on_ray(
    job: TrainJob,
    make_dataset: Callable[[int, int, int, int], Any],
    grid_output: str | Path | None = None,
) -> dict[str, Any]:
    """Train ``job`` on Ray Train; write its model file to the stage's ``output`` (and the
    final sample grid to ``grid_output``, when given and made); return its metrics.

    ``make_dataset(first_sample, batch, rank, world_size)`` builds worker ``rank``'s stream of
    ``batch``-sample steps (its share of the global batch) starting at sample ``first_sample`` of
    its part of the seeded multi-epoch order (0, or where a resumed run left off).
    Raises ``InsufficientResourcesError`` (naming the settings to change) when the cluster
    cannot run the workers and their input pipeline.
    """
    cfg, stage, train = job.cfg, job.stage, job.train
    batch = _worker_batch(stage, train)
    demand = training_demand(stage, train)
    capacity = require_capacity(cfg.ray, demand)
    ckpt_dir, resumed_step = _resume_point(cfg, stage, job.fingerprint)
    plan = ResumePlan(ckpt_dir, resumed_step, _starved_hint(demand))
    datasets = _worker_streams(make_dataset, resumed_step * batch, batch, int(train.num_workers))
    ingest = ingest_options(int(train.data_buffer_mb), input_cpus_per_stream(capacity, demand))
    trainer = _torch_trainer(job, plan, datasets, ingest)
    result = fit_within_timeout(trainer, demand, float(cfg.ray.resource_timeout_s))
    metrics = _copy_final_model(result, stage, Path(train.output), grid_output)
    metrics["resumed_from_step"] = resumed_step
    return metrics


def _resume_point(cfg: DictConfig, stage: str, fingerprint: str) -> tuple[Path, int]:
    """(the run's checkpoint folder, created if new; the step of its ``last.ckpt``, 0 if none)."""
    ckpt_dir = resume_checkpoint_dir(cfg, stage, fingerprint)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    return ckpt_dir, checkpoint_step(ckpt_dir / "last.ckpt")


def _worker_batch(stage: str, train: DictConfig) -> int:
    """Each worker's share of the global ``batch_size`` (which ``num_workers`` must divide)."""
    world, global_batch = int(train.num_workers), int(train.batch_size)
    if global_batch % world:
        raise ValueError(
            f"{stage}.batch_size {global_batch} is not divisible by num_workers {world}"
        )
    return global_batch // world


def _worker_streams(
    make_dataset: Callable[[int, int, int, int], Any], first_sample: int, batch: int, world: int
) -> dict[str, Any]:
    """One Ray Dataset per worker, named for its rank, each starting at ``first_sample``."""
    return {
        stream_name(rank): make_dataset(first_sample, batch, rank, world) for rank in range(world)
    }


def _copy_final_model(
    result: Any, stage: str, output: Path, grid_output: str | Path | None
) -> dict[str, Any]:
    """Write the model file (and grid) of the Ray Train result's checkpoint; return its
    metrics. Raises RuntimeError when the training reported no final model."""
    if result.checkpoint is None:
        raise RuntimeError(f"stage {stage}: training ended without a final model")
    with result.checkpoint.as_directory() as folder:
        return _copy_outputs(Path(folder), output, grid_output)
