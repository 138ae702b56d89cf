"""The Ray Train worker's side of every training stage (the driver's side: ``launcher.py``).

:func:`train_loop` runs on each worker: it prepares the process, builds the stage's module and
callbacks (``job.build_parts``), the worker's stream of steps and a Lightning Trainer, fits
(resuming from the stage's ``last.ckpt``), then builds the final model file, which rank 0
reports as a Ray Train checkpoint for the driver to copy.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig

from pipeline.training.data_feed import checkpoint_step, stream_name
from pipeline.training.train_job import LogImage, ResumePlan, TrainJob

if TYPE_CHECKING:
    from pipeline.training.worker_parts import WorkerParts

FINAL_MODEL = "model.pt"


def loop_config(job: TrainJob, plan: ResumePlan) -> dict[str, Any]:
    """Ray Train's ``train_loop_config`` for :func:`train_loop`: the job and its plan."""
    return {"job": job, "plan": plan}


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker: run the job of a :func:`loop_config`."""
    run_job(config["job"], config["plan"])


def run_job(job: TrainJob, plan: ResumePlan) -> None:
    """On a Ray Train worker: the stage's module (``job.build_parts``), its data stream and a
    Lightning Trainer; fit (resuming from the plan's ``last.ckpt``); report the final model."""
    import lightning.pytorch as pl
    import ray.train

    _prepare_worker_process()
    cfg, stage, train = job.cfg, job.stage, job.train
    torch.set_num_threads(int(train.torch_threads) or int(train.cpus_per_worker))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()

    logger, log_image = _mlflow_logging(job, rank)
    parts = job.build_parts(job, log_image)
    feed = _step_feed(job, plan, rank, world)
    trainer = _lightning_trainer(cfg, stage, plan.checkpoint_dir, logger, parts.callbacks)
    _fit_from_last_checkpoint(trainer, parts.module, feed, plan.checkpoint_dir, plan.resumed_step)

    metrics = {"step": int(parts.module.global_step), **parts.final_metrics()}
    metrics.update(_replica_metrics(parts.module, stage, world))
    _finish(job, parts, metrics, rank)


def _prepare_worker_process() -> None:
    """Normal priority; no Lightning banner per worker; a quiet Ray Data executor for the
    worker's stream."""
    from pipeline.data.ray_session import configure_data_context, raise_priority

    raise_priority()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    configure_data_context()


def _mlflow_logging(job: TrainJob, rank: int) -> tuple[Any, LogImage | None]:
    """(Lightning's logger for the job's MLflow run, or False without a run; on rank 0, a
    function logging an image to the run, else None)."""
    from lightning.pytorch.loggers import MLFlowLogger

    if not job.tracked:
        return False, None
    logger = MLFlowLogger(tracking_uri=job.tracking_uri, run_id=job.run_id)
    if rank != 0:
        return logger, None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=job.tracking_uri)

    def log_image(image: Any, artifact_file: str) -> None:
        client.log_image(job.run_id, image, artifact_file=artifact_file)

    return logger, log_image


def _step_feed(job: TrainJob, plan: ResumePlan, rank: int, world: int) -> Any:
    """Worker ``rank``'s steps: its own Ray Data stream, in batches of its share of the global
    batch."""
    import ray.train

    from pipeline.training.data_feed import StepFeed

    return StepFeed(
        ray.train.get_dataset_shard(stream_name(rank)),
        int(job.train.batch_size) // world,
        timeout_s=float(job.cfg.ray.resource_timeout_s),
        starved_hint=plan.starved_hint,
    )


def _lightning_trainer(
    cfg: DictConfig, stage: str, ckpt_dir: Path, logger: Any, stage_callbacks: list[Any]
) -> Any:
    """The Lightning Trainer of every stage, prepared for Ray Train: step-counted, no
    validation loop, atomic checkpoints; the stage's callbacks run after the checkpoint one."""
    import lightning.pytorch as pl
    from ray.train.lightning import RayLightningEnvironment, prepare_trainer

    from pipeline.training.checkpoint_io import AtomicCheckpointIO

    train = cfg[stage]
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
        callbacks=[callbacks[0], *stage_callbacks, *callbacks[1:]],
        log_every_n_steps=int(train.log_every_steps),
        num_sanity_val_steps=0,
        limit_val_batches=0,
        enable_model_summary=False,
        enable_progress_bar=False,
        max_epochs=-1,
    )
    return prepare_trainer(trainer)


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


def _fit_from_last_checkpoint(
    trainer: Any, module: Any, feed: Any, ckpt_dir: Path, planned_step: int
) -> None:
    """Fit, resuming from ``last.ckpt`` when there is one (the one the driver planned from)."""
    last = ckpt_dir / "last.ckpt"
    _require_planned_checkpoint(last, planned_step)
    trainer.fit(module, train_dataloaders=feed, ckpt_path=str(last) if last.exists() else None)


def _require_planned_checkpoint(last: Path, planned_step: int) -> None:
    """The data streams start where the checkpoint the driver read left off: refuse another one
    (a run of the same stage still writing checkpoints, e.g. workers of a killed driver)."""
    found = checkpoint_step(last)
    if found != planned_step:
        raise RuntimeError(
            f"{last} is at step {found}, but this run was planned from step {planned_step}: "
            "another run of this stage is still writing there; let it end, then run again"
        )


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


def _finish(job: TrainJob, parts: WorkerParts, metrics: dict[str, Any], rank: int) -> None:
    """Every worker: build the final model file (sharded weights are gathered by all); rank 0
    reports it, with the extra outputs and metrics, as a Ray Train checkpoint."""
    import ray.train

    payload = parts.module.model_file(
        mlflow_run_id=job.run_id, stage=job.stage, extra=job.provenance
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
