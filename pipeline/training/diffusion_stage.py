"""The library side of every diffusion training stage (``pretrain_base``, later ``finetune_cfg``,
``finetune_inpaint``, ``finetune_instruct``, ``train_upsampler``): data -> Ray Train -> model
file, metrics, MLflow."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pipeline.config import load_config, save_config
from pipeline.data import init_ray, read_manifest, tokenize_captions, training_dataset
from pipeline.data.edit_shards import EDIT_MANIFEST_FORMAT
from pipeline.data.examples import held_out_examples
from pipeline.data.manifest import MANIFEST_NAME
from pipeline.data.ray_capacity import require_capacity, training_demand
from pipeline.data.train_input import caption_tally, samples_per_epoch
from pipeline.io import atomic_write_text, sha256_file
from pipeline.models.model_file import read_model_file, require_compatible
from pipeline.tracking import StageRun, stage_run
from pipeline.training.data_feed import stream_window
from pipeline.training.launcher import fit_on_ray, run_fingerprint
from pipeline.training.model_setup import (
    build_tokenizer,
    diffusion_settings,
    glide_model_kwargs,
    tokenizer_spec,
)
from pipeline.training.train_job import TrainJob
from pipeline.training.worker_parts import diffusion_worker_parts

WIDENINGS = ("inpaint", "instruct")  # inputs a fine-tuning stage adds to the model it starts from


def manifest_digest(shard_dir: Path) -> str:
    """SHA-256 of the shard manifest: which data a model was trained on."""
    return sha256_file(shard_dir / MANIFEST_NAME)


def check_init_model(
    path: str | Path,
    model_kwargs: dict[str, Any],
    tokenizer_identity: str,
    ignore: tuple[str, ...] = (),
) -> str:
    """Fail before any training when the model file a stage starts from is missing or does not
    match the configured model; return its SHA-256 (part of the run's fingerprint, so a new
    starting model never resumes checkpoints made from the old one)."""
    payload = read_model_file(path, mmap=True)
    require_compatible(payload, model_kwargs, tokenizer_identity, where=path, ignore=ignore)
    return sha256_file(path)


def edit_sources(shard_dir: Path, manifest: dict[str, Any], train: DictConfig) -> list[Any]:
    """Held-out images (uint8 HWC) that an inpainting stage's sample grids edit."""
    count = max(1, len(train.sample_prompts))
    return [ex["base"] for ex in held_out_examples(shard_dir, count, manifest=manifest)]


def grid_examples(
    shard_dir: Path, manifest: dict[str, Any], count: int, images: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The first ``count`` held-out ``{<images>, "caption"}`` that a stage's grids start from:
    ``("base", "hires")`` for super-resolution, ``("source",)`` for instruction editing."""
    examples = held_out_examples(shard_dir, count, images=images, manifest=manifest)
    return [{k: ex[k] for k in (*images, "caption")} for ex in examples]


def input_images(model_kwargs: dict[str, Any], train: DictConfig) -> dict[str, Any]:
    """Which shard images a model trains on: the base image; for a super-resolution model the
    high-res image with the base image as its low-res input, in aligned random crops; for an
    instruction-editing model the edited image with the image to edit beside it."""
    if model_kwargs.get("instruct"):
        return {"image_key": "edited", "extra_images": ("source",)}
    if model_kwargs.get("super_res"):
        return {"image_key": "hires", "low_res_key": "base", "crop_size": int(train.crop_size)}
    return {"image_key": "base"}


def report_truncations(stage: str, tally: Any) -> None:
    """One line for the stage's truncated training captions (a :func:`caption_tally`)."""
    import ray

    count, line = ray.get(tally.summary.remote())
    if count:
        print(f"[{stage}] training samples: {line}", flush=True)


def run_diffusion_stage(
    cfg: DictConfig,
    *,
    stage: str,
    model_section: str,
    run: StageRun | None,
    metrics_path: str | Path,
    grid_path: str | Path | None = None,
    model_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the stage's model on the train shards; write its model file and metrics JSON.

    ``model_overrides``: GLIDE keys that set the stage's variant on top of the model section
    (``{"inpaint": True}`` for inpainting fine-tuning). A ``super_res`` model trains on the
    high-res images with the base images as low-res inputs (``train.crop_size`` crops).
    """
    train = cfg[stage]
    init_ray(cfg.ray)
    require_capacity(cfg.ray, training_demand(stage, train))  # before any work
    shard_dir, manifest = training_shards(cfg, model_overrides or {})
    job = diffusion_job(cfg, stage, model_section, run, shard_dir, manifest, model_overrides)
    images = input_images(job.model_kwargs, train)
    truncations = caption_tally()
    make_dataset = _stream_builder(
        cfg, stage, model_section, shard_dir, manifest, images, truncations
    )
    metrics = fit_on_ray(job, make_dataset, grid_output=grid_path)
    report_truncations(stage, truncations)
    _record_results(metrics, stage, train, run, job.fingerprint, metrics_path, grid_path)
    return metrics


def training_shards(cfg: DictConfig, model_overrides: dict[str, Any]) -> tuple[Path, dict]:
    """(the shard folder a stage trains on, its manifest): the edit triples for an
    instruction-editing model, else the caption shards. Absolute: Ray workers may run in
    another folder."""
    if model_overrides.get("instruct"):
        shard_dir = Path(cfg.shard_edits.output_dir).resolve()
        return shard_dir, read_manifest(shard_dir, expected_format=EDIT_MANIFEST_FORMAT)
    shard_dir = Path(cfg.shard.output_dir).resolve()
    return shard_dir, read_manifest(shard_dir)


def diffusion_job(
    cfg: DictConfig,
    stage: str,
    model_section: str,
    run: StageRun | None,
    shard_dir: Path,
    manifest: dict[str, Any],
    model_overrides: dict[str, Any] | None = None,
) -> TrainJob:
    """The training job of a diffusion stage on the train shards in ``shard_dir`` (its model
    section's network with ``model_overrides``, its grids' held-out images, its MLflow run)."""
    train, model_cfg = cfg[stage], cfg[model_section]
    tokenizer = build_tokenizer(model_cfg)
    model_kwargs = {
        **glide_model_kwargs(model_cfg, tokenizer.vocab_size),
        **(model_overrides or {}),
    }
    fingerprint, provenance = _run_identity(
        cfg, stage, model_section, shard_dir, manifest, model_kwargs, tokenizer.identity
    )
    return TrainJob(
        cfg=cfg,
        stage=stage,
        model_section=model_section,
        model_kwargs=model_kwargs,
        diffusion=diffusion_settings(model_cfg),
        fingerprint=fingerprint,
        build_parts=diffusion_worker_parts,
        run_id=run.run_id if run else "",
        tracking_uri=run.tracking_uri if run else "",
        init_from=str(train.init_from),
        provenance=provenance,
        **_grid_sources(shard_dir, manifest, train, model_kwargs),
    )


def _stream_builder(
    cfg: DictConfig,
    stage: str,
    model_section: str,
    shard_dir: Path,
    manifest: dict[str, Any],
    images: dict[str, Any],
    truncations: Any,
) -> Callable[[int, int, int, int], Any]:
    """The ``make_dataset`` of :func:`fit_on_ray`: worker ``rank``'s window of the seeded
    multi-epoch order of the train shards (``images``: :func:`input_images`), captions
    tokenized (truncated ones counted by ``truncations``, a :func:`caption_tally`)."""
    train, model_cfg = cfg[stage], cfg[model_section]
    epoch_size = samples_per_epoch(manifest, "train")

    def make_dataset(first_sample: int, batch: int, rank: int, world_size: int) -> Any:
        window = stream_window(first_sample, int(train.max_steps), batch, epoch_size, world_size)
        dataset = training_dataset(
            shard_dir,
            "train",
            **images,
            **window,
            rank=rank,
            seed=int(cfg.seed),
            skip_corrupt=bool(train.skip_corrupt_samples),
            manifest=manifest,
        )
        return tokenize_captions(
            dataset,
            tokenizer_spec(model_cfg),
            int(model_cfg.text_ctx),
            keep_text=False,
            tally=truncations,
        )

    return make_dataset


def _run_identity(
    cfg: DictConfig,
    stage: str,
    model_section: str,
    shard_dir: Path,
    manifest: dict[str, Any],
    model_kwargs: dict[str, Any],
    tokenizer_identity: str,
) -> tuple[str, dict[str, Any]]:
    """(the run's fingerprint, the provenance its model file records): the train shards and,
    when the stage starts from a model file, that file (checked against the model first)."""
    train = cfg[stage]
    inputs = [s["sha256"] for s in manifest["splits"]["train"]["shards"]]
    provenance = {"data_manifest_sha256": manifest_digest(shard_dir)}
    if train.init_from:
        widening = tuple(flag for flag in WIDENINGS if model_kwargs.get(flag))
        init_sha256 = check_init_model(
            train.init_from, model_kwargs, tokenizer_identity, ignore=widening
        )
        inputs.append(init_sha256)
        provenance.update(init_from=str(train.init_from), init_from_sha256=init_sha256)
    return run_fingerprint(cfg, stage, model_section, json.dumps(inputs)), provenance


def _grid_sources(
    shard_dir: Path, manifest: dict[str, Any], train: DictConfig, model_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The held-out images the sample grids edit (inpainting, instruction editing) or upsample
    (super-resolution), as the :class:`TrainJob`'s ``*_sources`` (empty where unused)."""
    return {
        "edit_sources": edit_sources(shard_dir, manifest, train)
        if model_kwargs.get("inpaint")
        else [],
        "upsample_sources": grid_examples(
            shard_dir, manifest, int(train.sample_images), ("base", "hires")
        )
        if model_kwargs.get("super_res")
        else [],
        "instruct_sources": grid_examples(
            shard_dir, manifest, int(train.sample_images), ("source",)
        )
        if model_kwargs.get("instruct")
        else [],
    }


def _record_results(
    metrics: dict[str, Any],
    stage: str,
    train: DictConfig,
    run: StageRun | None,
    fingerprint: str,
    metrics_path: str | Path,
    grid_path: str | Path | None,
) -> None:
    """Write the metrics JSON (with the MLflow run id); log the metrics, the output's tags and
    the final grid to the stage's run."""
    record = {**metrics, "mlflow_run_id": run.run_id if run else ""}
    atomic_write_text(metrics_path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    if run is None:
        return
    run.log_metrics({f"{stage}/{k}": v for k, v in metrics.items()})
    run.set_tags({"glide.output": str(train.output), "glide.fingerprint": fingerprint})
    if grid_path is not None and Path(grid_path).exists():
        run.log_artifact(grid_path, "samples")


def stage_main(
    stage: str,
    model_section: str,
    argv: Sequence[str] | None = None,
    model_overrides: dict[str, Any] | None = None,
) -> int:
    """Entry point of a diffusion training stage: config (with ``key=value`` overrides from
    ``argv``), MLflow run, training; writes the model file, its config, metrics and sample grid."""
    cfg = load_config(list(sys.argv[1:] if argv is None else argv))
    with stage_run(cfg, stage) as run:
        run_diffusion_stage(
            cfg,
            stage=stage,
            model_section=model_section,
            run=run,
            metrics_path=Path("metrics") / f"{stage}.json",
            grid_path=Path("samples") / f"{stage}.png",
            model_overrides=model_overrides,
        )
        save_config(cfg, Path(cfg[stage].output).with_suffix(".config.yaml"))
    return 0
