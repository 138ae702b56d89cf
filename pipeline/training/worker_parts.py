"""What each training stage contributes to the shared Ray Train loop (``train_worker.py``): its
LightningModule, callbacks, final metrics and extra outputs, built on every worker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipeline.training.train_job import LogImage, TrainJob

FINAL_GRID = "samples.png"


@dataclass
class WorkerParts:
    """What a stage contributes to the shared training loop on each Ray Train worker.

    ``module``: the LightningModule (with ``model_file(mlflow_run_id=, stage=, extra=)``, the
    payload of the final model file); ``callbacks``: the stage's own Lightning callbacks;
    ``final_metrics()``: metrics reported besides ``step``; ``write_extras(folder)``: extra
    outputs (e.g. the final sample grid) beside the model file, called on every worker (sharded
    weights are gathered by all of them) with ``folder`` None except on rank 0, which writes.
    """

    module: Any
    callbacks: list[Any]
    final_metrics: Callable[[], dict[str, Any]]
    write_extras: Callable[[Path | None], None] | None = None


def diffusion_worker_parts(job: TrainJob, log_image: LogImage | None) -> WorkerParts:
    """The diffusion stages' module (GlideDiffusionModule) and sample-grid callback."""
    from pipeline.training.diffusion_module import GlideDiffusionModule
    from pipeline.training.model_setup import build_tokenizer

    tokenizer = build_tokenizer(job.model)
    module = GlideDiffusionModule(
        job.model_kwargs,
        job.diffusion,
        OmegaConf.to_container(job.train, resolve=True),
        tokenizer.identity,
        init_state_dict=_starting_state(job),
        seed=int(job.cfg.seed),
    )
    grids = _sample_grids(job, tokenizer, log_image)

    def final_metrics() -> dict[str, Any]:
        metrics: dict[str, Any] = {"nonfinite_steps": module.nonfinite_total}
        metrics.update({f"final_{k}": v for k, v in module.final_losses().items()})
        return metrics

    def write_extras(folder: Path | None) -> None:
        grids.sample_now(module, folder is not None)  # resumed at max_steps: no train hooks ran
        if folder is not None and grids.last_grid is not None:
            grids.last_grid.save(folder / FINAL_GRID)

    return WorkerParts(module, [grids], final_metrics, write_extras)


def _starting_state(job: TrainJob) -> dict[str, Any] | None:
    """The weights of the model file the job starts from (``init_from``), or None."""
    if not job.init_from:
        return None
    from pipeline.models.model_file import read_model_file
    from pipeline.training.model_setup import starting_weights

    return starting_weights(read_model_file(job.init_from), job.model_kwargs)


def _grid_tiling(evaluate: Any) -> Any:
    """The upsampler's grids sample on the evaluation's tiles (pipeline/sampling/tiles.py)."""
    from pipeline.sampling.tiles import Tiling

    return Tiling(
        int(evaluate.upsample_tile_size),
        int(evaluate.upsample_tile_stride),
        int(evaluate.upsample_tile_below_t),
    )


def _sample_grids(job: TrainJob, tokenizer: Any, log_image: LogImage | None) -> Any:
    """The callback sampling the stage's grids: text-to-image, or editing the job's
    ``edit_sources`` (inpainting), or upsampling its ``upsample_sources`` (super-resolution,
    with the temperature and augmentation level of its config section, on the evaluation's
    tiles and low-res projection)."""
    from pipeline.training.callbacks import InstructGrid, SampleGridCallback, UpsampleGrid

    train = job.train
    upsample = None
    if job.upsample_sources:
        upsample = UpsampleGrid(
            job.upsample_sources,
            float(train.sample_temperature),
            int(train.sample_aug_level),
            _grid_tiling(job.cfg.evaluate),
            bool(job.cfg.evaluate.upsample_projection),
        )
    instruct = None
    if job.instruct_sources:
        instruct = InstructGrid(job.instruct_sources, list(train.sample_image_guidance))
    return SampleGridCallback(
        tokenizer,
        list(train.sample_prompts),
        list(train.sample_guidance),
        every_n_steps=int(train.sample_every_steps),
        steps=str(train.sample_steps),
        seed=int(job.cfg.seed),
        log_image=log_image,
        edit_sources=job.edit_sources,
        upsample=upsample,
        instruct=instruct,
    )
