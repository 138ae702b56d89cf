"""What each training stage contributes to the shared Ray Train loop (``train_worker.py``): its
LightningModule, callbacks, final metrics and extra outputs, built on every worker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

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


def diffusion_worker_parts(
    config: dict[str, Any], cfg: DictConfig, log_image: Callable[..., None] | None
) -> WorkerParts:
    """The diffusion stages' module (GlideDiffusionModule) and sample-grid callback."""
    from pipeline.training.callbacks import SampleGridCallback
    from pipeline.training.diffusion_module import GlideDiffusionModule
    from pipeline.training.model_setup import build_tokenizer

    stage, model_section = config["stage"], config["model_section"]
    train = cfg[stage]
    tokenizer = build_tokenizer(cfg[model_section])
    init_state = None
    if config.get("init_from"):
        from pipeline.models.model_file import read_model_file
        from pipeline.training.model_setup import starting_weights

        payload = read_model_file(config["init_from"])
        init_state = starting_weights(payload, config["model_kwargs"])
    module = GlideDiffusionModule(
        config["model_kwargs"],
        config["diffusion"],
        OmegaConf.to_container(train, resolve=True),
        tokenizer.identity,
        init_state_dict=init_state,
        seed=int(cfg.seed),
    )
    grids = SampleGridCallback(
        tokenizer,
        list(train.sample_prompts),
        list(train.sample_guidance),
        every_n_steps=int(train.sample_every_steps),
        steps=str(train.sample_steps),
        seed=int(cfg.seed),
        log_image=log_image,
        edit_sources=config.get("edit_sources"),
        upsample_sources=config.get("upsample_sources"),
        temperature=float(train.get("sample_temperature", 1.0)),
        aug_level=int(train.get("sample_aug_level", 0)),
    )

    def final_metrics() -> dict[str, Any]:
        metrics: dict[str, Any] = {"nonfinite_steps": module.nonfinite_total}
        metrics.update({f"final_{k}": v for k, v in module.final_losses().items()})
        return metrics

    def write_extras(folder: Path | None) -> None:
        grids.sample_now(module, folder is not None)  # resumed at max_steps: no train hooks ran
        if folder is not None and grids.last_grid is not None:
            grids.last_grid.save(folder / FINAL_GRID)

    return WorkerParts(module, [grids], final_metrics, write_extras)


def resolve_parts(name: str) -> Callable[..., WorkerParts]:
    """The worker-parts builder named ``"package.module:function"`` ("" = the diffusion one)."""
    if not name:
        return diffusion_worker_parts
    import importlib

    module_name, _, function = name.partition(":")
    return getattr(importlib.import_module(module_name), function)
