"""Run the evaluation on Ray Train: Ray Data feeds the evaluation captions and real images to
every worker; each runs :class:`GlideEvaluationModule` under ``trainer.test``; the figures, reduced
across workers, and the grid images come back from rank 0."""

from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = "results.json"
GRIDS = "grids.npz"


@contextmanager
def announced(part: str) -> Iterator[None]:
    """A progress line before and after a part of the evaluation that prints nothing itself."""
    started = time.monotonic()
    print(f"[evaluate] {part} ...", flush=True)
    yield
    print(f"[evaluate] {part}: done in {time.monotonic() - started:.0f} s", flush=True)


class EvalFeed:
    """Batches of a Ray Train dataset shard: captions as strings, images and ids as tensors."""

    def __init__(self, shard: Any, batch_size: int) -> None:
        self.shard = shard
        self.batch_size = int(batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.shard.iter_batches(batch_size=self.batch_size, batch_format="numpy"):
            out: dict[str, Any] = {"caption": [str(c) for c in batch["caption"]]}
            for name in ("index", "base", "hires"):
                if name in batch:
                    out[name] = torch.from_numpy(np.array(batch[name]))  # writable copy
            yield out


def _eval_loop(config: dict[str, Any]) -> None:
    """Ray Train worker: load the models, test, report the figures (rank 0)."""
    import lightning.pytorch as pl
    import ray.train
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    from pipeline.data.ray_session import raise_priority
    from pipeline.evaluation.stage_models import build_evaluation_module
    from pipeline.text import collect_truncations

    raise_priority()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    settings = config["settings"]
    torch.set_num_threads(int(settings["torch_threads"]) or int(settings["cpus_per_worker"]))
    pl.seed_everything(int(settings["seed"]), workers=True, verbose=False)
    device = "cuda" if settings["use_gpu"] and torch.cuda.is_available() else "cpu"
    module = build_evaluation_module(config, device)
    trainer = pl.Trainer(
        accelerator="gpu" if settings["use_gpu"] else "cpu",
        devices="auto",
        strategy=RayDDPStrategy(),
        plugins=[RayLightningEnvironment()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,  # CLIP guidance takes gradients of the noised CLIP
    )
    trainer = prepare_trainer(trainer)
    feed = EvalFeed(ray.train.get_dataset_shard("eval"), int(settings["batch_size"]))
    with collect_truncations() as truncations:  # every condition samples the same captions
        trainer.test(module, dataloaders=feed, verbose=False)
    context = ray.train.get_context()
    if truncations.count:
        print(f"[evaluate] rank {context.get_world_rank()}: {truncations.summary()}", flush=True)
    if context.get_world_rank() == 0:
        if pair_captions := config.get("pair_captions"):
            from pipeline.evaluation.pair_eval import sweep_on_worker as pair_sweep

            with announced(f"two-object sweep, {len(pair_captions)} captions"):
                part, grid = pair_sweep(settings, module.sampling_models, pair_captions, device)
            module.results["pairs"], module.grids["pairs"] = part, grid
        if triples := config.get("edit_triples"):
            from pipeline.evaluation.edit_eval import sweep_on_worker

            with announced(f"instruction-editing sweep, {len(triples)} triples"):
                part, grid = sweep_on_worker(settings, config["paths"]["instruct"], triples, device)
            module.results["instruct"], module.grids["instruct"] = part, grid
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / RESULTS).write_text(json.dumps(module.results))
            np.savez_compressed(Path(tmp) / GRIDS, **module.grids)
            ray.train.report({"done": 1}, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report({"done": 1})


def evaluate_on_ray(
    settings: dict[str, Any],
    dataset: Any,
    model_paths: dict[str, str],
    work_dir: Path,
    edit_triples: list[dict[str, Any]] | None = None,
    pair_captions: list[str] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Evaluate on ``settings["num_workers"]`` Ray Train workers; return (figures, grids).

    ``model_paths``: ``cfg`` (required), ``upsampler``, ``inpaint``, ``noised_clip``,
    ``eval_clip``, ``instruct``, ``reference`` (a torch file of the cached reference features).
    ``edit_triples``: held-out edit triples that rank 0 edits with ``instruct`` afterwards.
    ``pair_captions``: held-out two-object captions that rank 0 samples at every cfg condition.
    ``settings["resource_timeout_s"]``: the longest wait for the workers to start.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipeline.data.ray_capacity import (
        evaluation_demand,
        fit_within_timeout,
        no_retry_failure_config,
    )

    resources = {"CPU": float(settings["cpus_per_worker"])}
    if settings["use_gpu"]:
        resources["GPU"] = 1.0
    trainer = TorchTrainer(
        _eval_loop,
        train_loop_config={
            "settings": settings,
            "paths": model_paths,
            "edit_triples": edit_triples or [],
            "pair_captions": pair_captions or [],
        },  # fmt: skip
        scaling_config=ray.train.ScalingConfig(
            num_workers=int(settings["num_workers"]),
            use_gpu=bool(settings["use_gpu"]),
            resources_per_worker=resources,
        ),
        run_config=ray.train.RunConfig(
            name=f"evaluate-{uuid.uuid4().hex[:8]}",
            storage_path=str(work_dir.resolve() / "ray_results"),
            failure_config=no_retry_failure_config(),
        ),
        datasets={"eval": dataset},
        dataset_config=ray.train.DataConfig(
            datasets_to_split="all" if int(settings["num_workers"]) > 1 else []
        ),
    )
    demand = evaluation_demand("evaluate", settings)
    result = fit_within_timeout(trainer, demand, float(settings["resource_timeout_s"]))
    if result.checkpoint is None:
        raise RuntimeError("evaluation ended without results")
    with result.checkpoint.as_directory() as folder:
        results = json.loads((Path(folder) / RESULTS).read_text())
        with np.load(Path(folder) / GRIDS) as stored:
            grids = {name: stored[name] for name in stored.files}
    return results, grids
