"""Run a training stage on Ray Train: TorchTrainer + Lightning, fed by Ray Data.

Every stage shares this loop (checkpoints, resume, MLflow, progress log, final model); what
differs is its LightningModule and callbacks (``worker_parts.WorkerParts``): the diffusion stages
use ``worker_parts.diffusion_worker_parts``, the CLIP stage ``clip_stage.clip_worker_parts``.

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
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
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
from pipeline.training.worker_parts import FINAL_GRID

FINAL_MODEL = "model.pt"


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


def _raise_priority() -> None:
    """Run the training worker at normal priority (Ray starts workers at nice 15).

    Ray's service actors and Ray Data's decoding tasks stay at nice 15, so on a small machine
    they yield to training instead of the other way round (measured on 2 cores, mini profile:
    7.8 img/s at nice 15, 21.6 img/s at nice 0). Lowering niceness needs privileges; without
    them the worker keeps Ray's default.
    """
    task_dir = Path("/proc/self/task")  # Linux niceness is per thread: set every thread's
    threads = [int(tid) for tid in os.listdir(task_dir)] if task_dir.is_dir() else [0]
    try:
        for tid in threads:
            os.setpriority(os.PRIO_PROCESS, tid, 0)
    except (PermissionError, ProcessLookupError, OSError):
        print("note: cannot raise the training worker's priority (needs CAP_SYS_NICE)", flush=True)


def _trainer_callbacks(train: DictConfig, stage: str, ckpt_dir: Path, seed: int) -> list[Any]:
    """The callbacks every stage trains with: resume checkpoints, per-worker randomness, the
    progress log."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from pipeline.training.callbacks import StepProgressLog
    from pipeline.training.replicas import RankRandomness

    return [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="last",
            every_n_train_steps=int(train.checkpoint_every_steps),
            save_top_k=1,
            enable_version_counter=False,
        ),
        RankRandomness(seed),
        StepProgressLog(int(train.log_every_steps), int(train.batch_size), stage),
    ]


def _strategy(train: DictConfig) -> Any:
    """Data parallel (``ddp``: each worker holds the whole model) or sharded (``fsdp``)."""
    from ray.train.lightning import RayDDPStrategy

    from pipeline.training.fsdp import RayFSDP2Strategy

    return RayFSDP2Strategy() if train.strategy == "fsdp" else RayDDPStrategy()


def _finish(config: dict[str, Any], parts: Any, metrics: dict[str, Any], rank: int) -> None:
    """Every worker: build the final model file (sharded weights are gathered by all); rank 0
    reports it, with the extra outputs and metrics, as a Ray Train checkpoint."""
    import ray.train

    payload = parts.module.model_file(
        mlflow_run_id=config.get("run_id") or "",
        stage=config["stage"],
        extra=config.get("provenance") or {},
    )
    if rank != 0:
        if parts.write_extras is not None:
            parts.write_extras(None)
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(payload, Path(tmp) / FINAL_MODEL)
        if parts.write_extras is not None:
            parts.write_extras(Path(tmp))
        (Path(tmp) / "metrics.json").write_text(json.dumps(metrics))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _replica_metrics(module: Any, stage: str, world: int) -> dict[str, Any]:
    """``workers``, ``nodes`` (how many cluster nodes they ran on) and, for data-parallel
    (unsharded) workers, ``replicas_identical`` after checking that all of them hold the same
    weights and EMA (raises otherwise). Every worker calls it."""
    import ray

    from pipeline.training.replicas import check_replicas, count_nodes
    from pipeline.training.sharded_tensors import is_sharded

    metrics = {"workers": world, "nodes": count_nodes(ray.get_runtime_context().get_node_id())}
    tensors = dict(module.state_dict())
    ema = getattr(module, "ema", None)
    if ema is not None:
        tensors.update({f"ema.{name}": t for name, t in ema.shadow.items()})
    if world > 1 and not any(is_sharded(t) for t in tensors.values()):
        metrics["replicas_identical"] = int(check_replicas(tensors, stage) == world)
    return metrics


def _require_planned_checkpoint(last: Path, planned_step: int) -> None:
    """The data streams start where the checkpoint the driver read left off: refuse another one
    (a run of the same stage still writing checkpoints, e.g. workers of a killed driver)."""
    found = checkpoint_step(last)
    if found != planned_step:
        raise RuntimeError(
            f"{last} is at step {found}, but this run was planned from step {planned_step}: "
            "another run of this stage is still writing there; let it end, then run again"
        )


def _train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker: the stage's module (``config["worker_parts"]``, default the diffusion
    one), its data stream and a Lightning Trainer; fit; report the final model."""
    import lightning.pytorch as pl
    import ray.train
    from lightning.pytorch.loggers import MLFlowLogger
    from ray.train.lightning import RayLightningEnvironment, prepare_trainer

    from pipeline.data.ray_session import configure_data_context
    from pipeline.training.checkpoint_io import AtomicCheckpointIO
    from pipeline.training.data_feed import StepFeed
    from pipeline.training.worker_parts import resolve_parts

    _raise_priority()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banner per worker
    configure_data_context()  # the worker runs its stream's Ray Data executor: quiet it too
    cfg = OmegaConf.create(config["cfg"])
    stage = config["stage"]
    train = cfg[stage]
    torch.set_num_threads(int(train.torch_threads) or int(train.cpus_per_worker))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()

    logger: Any = False
    log_image = None
    if config.get("tracking_uri") and config.get("run_id"):
        logger = MLFlowLogger(tracking_uri=config["tracking_uri"], run_id=config["run_id"])
        if rank == 0:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=config["tracking_uri"])

            def log_image(image: Any, artifact_file: str) -> None:
                client.log_image(config["run_id"], image, artifact_file=artifact_file)

    parts = resolve_parts(config.get("worker_parts") or "")(config, cfg, log_image)
    module = parts.module
    feed = StepFeed(
        ray.train.get_dataset_shard(stream_name(rank)),
        int(train.batch_size) // world,
        timeout_s=float(cfg.ray.resource_timeout_s),
        starved_hint=config["starved_hint"],
    )
    ckpt_dir = Path(config["checkpoint_dir"])
    callbacks = _trainer_callbacks(train, stage, ckpt_dir, int(cfg.seed))
    trainer = pl.Trainer(
        max_steps=int(train.max_steps),
        accelerator="gpu" if train.use_gpu else "cpu",
        devices="auto",
        strategy=_strategy(train),
        plugins=[RayLightningEnvironment(), AtomicCheckpointIO()],
        precision=str(train.precision),
        gradient_clip_val=float(train.grad_clip) or None,
        logger=logger,
        callbacks=[callbacks[0], *parts.callbacks, *callbacks[1:]],
        log_every_n_steps=int(train.log_every_steps),
        num_sanity_val_steps=0,
        limit_val_batches=0,
        enable_model_summary=False,
        enable_progress_bar=False,
        max_epochs=-1,
    )
    trainer = prepare_trainer(trainer)
    last = ckpt_dir / "last.ckpt"
    _require_planned_checkpoint(last, int(config["resumed_step"]))
    trainer.fit(module, train_dataloaders=feed, ckpt_path=str(last) if last.exists() else None)

    metrics = {"step": int(module.global_step), **parts.final_metrics()}
    metrics.update(_replica_metrics(module, stage, world))
    _finish(config, parts, metrics, rank)


def _starved_hint(demand: Demand) -> str:
    s = demand.section
    return (
        f"Give the cluster CPUs beside the training workers: change ray.num_cpus (or add "
        f"nodes), {s}.num_workers or {s}.cpus_per_worker."
    )


def _torch_trainer(
    train: DictConfig, loop_config: dict, datasets: dict, ingest: Any, name: str
) -> Any:
    """The Ray Train trainer of a stage: its workers, no retries, one stream per worker
    (``ingest``: the streams' Ray Data options)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    resources = {"CPU": float(train.cpus_per_worker)}
    if train.use_gpu:
        resources["GPU"] = 1.0
    ckpt_dir = Path(loop_config["checkpoint_dir"])
    return TorchTrainer(
        _train_loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=int(train.num_workers),
            use_gpu=bool(train.use_gpu),
            resources_per_worker=resources,
        ),
        run_config=ray.train.RunConfig(
            name=f"{name}-{uuid.uuid4().hex[:8]}",
            storage_path=str(ckpt_dir.parent / "ray_results"),
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
    cfg: DictConfig,
    *,
    stage: str,
    model_section: str,
    make_dataset: Callable[[int, int, int, int], Any],
    model_kwargs: dict[str, Any],
    diffusion: dict[str, Any],
    fingerprint: str,
    run_id: str = "",
    tracking_uri: str = "",
    init_from: str = "",
    provenance: dict[str, Any] | None = None,
    edit_sources: list[Any] | None = None,
    upsample_sources: list[dict[str, Any]] | None = None,
    grid_output: str | Path | None = None,
    worker_parts: str = "",
    worker_data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train on Ray Train; write the EMA model file to ``cfg[stage].output``; return metrics.

    ``provenance`` (plain data) is recorded in the model file's ``extra``. ``edit_sources``
    (inpainting) and ``upsample_sources`` (super-resolution: ``{"base", "hires", "caption"}``)
    are the held-out images of the sample grids.
    ``worker_parts`` ("package.module:function", called as ``function(loop_config, cfg,
    log_image)``) builds the stage's module on each worker (default
    ``worker_parts.diffusion_worker_parts``); ``worker_data`` (plain data, e.g. validation
    examples) reaches it as ``loop_config["worker_data"]``.
    ``make_dataset(first_sample, batch, rank, world_size)`` builds worker ``rank``'s stream of
    ``batch``-sample steps (its share of the global batch) starting at sample ``first_sample`` of
    its part of the seeded multi-epoch order (0, or where a resumed run left off).
    Raises ``InsufficientResourcesError`` (naming the settings to change) when the cluster
    cannot run the workers and their input pipeline.
    """
    train = cfg[stage]
    world = int(train.num_workers)
    global_batch = int(train.batch_size)
    if global_batch % world:
        raise ValueError(
            f"{stage}.batch_size {global_batch} is not divisible by num_workers {world}"
        )
    demand = training_demand(stage, train)
    capacity = require_capacity(cfg.ray, demand)
    ckpt_dir = resume_checkpoint_dir(cfg, stage, fingerprint)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    batch = global_batch // world
    resumed_step = checkpoint_step(ckpt_dir / "last.ckpt")
    datasets = {
        stream_name(rank): make_dataset(resumed_step * batch, batch, rank, world)
        for rank in range(world)
    }
    loop_config = {
        "cfg": OmegaConf.to_container(cfg, resolve=True),
        "stage": stage,
        "model_section": model_section,
        "model_kwargs": model_kwargs,
        "diffusion": diffusion,
        "checkpoint_dir": str(ckpt_dir),
        "run_id": run_id,
        "tracking_uri": tracking_uri,
        "init_from": str(Path(init_from).resolve()) if init_from else "",
        "provenance": provenance or {},
        "edit_sources": edit_sources or [],
        "upsample_sources": upsample_sources or [],
        "worker_parts": worker_parts,
        "worker_data": worker_data or {},
        "starved_hint": _starved_hint(demand),
        "resumed_step": resumed_step,
    }
    ingest = ingest_options(int(train.data_buffer_mb), input_cpus_per_stream(capacity, demand))
    trainer = _torch_trainer(train, loop_config, datasets, ingest, name=f"{stage}-{fingerprint}")
    result = fit_within_timeout(trainer, demand, float(cfg.ray.resource_timeout_s))
    if result.checkpoint is None:
        raise RuntimeError(f"stage {stage}: training ended without a final model")
    with result.checkpoint.as_directory() as folder:
        metrics = _copy_outputs(Path(folder), Path(train.output), grid_output)
    metrics["resumed_from_step"] = resumed_step
    return metrics
