"""The library side of the ``evaluate`` stage: evaluation set -> Ray Train evaluation ->
``metrics/eval.json``, DVC plots, sample grids, the report; all also on the pipeline's MLflow run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from pipeline.evaluation import edit_eval, pair_eval
from pipeline.io import atomic_output_path, atomic_write_text

READOUT_KEYS = ("colour_accuracy", "shape_accuracy", "both_accuracy")
PLOT_FILES = {"cfg": "guidance_sweep_cfg.json", "clip": "guidance_sweep_clip.json"}


def data_dir(cfg: DictConfig) -> Path:
    """Where the evaluation captions and images are: ``evaluate.shard_dir`` or the pipeline's."""
    return Path(cfg.evaluate.shard_dir or cfg.shard.output_dir)


def evaluation_examples(cfg: DictConfig) -> tuple[list[dict[str, Any]], str, str]:
    """The evaluation set: the first ``evaluate.num_samples`` samples of ``evaluate.split``, at
    both resolutions, where they come from, and the shards' source ("synthetic", "folder", ...).
    Fewer samples than configured is an error: sample counts are fixed per profile, so figures
    stay comparable."""
    from pipeline.data import read_manifest
    from pipeline.data.examples import held_out_examples

    ev = cfg.evaluate
    shard_dir = data_dir(cfg)
    manifest = read_manifest(shard_dir)
    examples = held_out_examples(
        shard_dir,
        int(ev.num_samples),
        split=str(ev.split),
        images=("base", "hires"),
        manifest=manifest,
    )
    if len(examples) < int(ev.num_samples):
        raise ValueError(
            f"evaluate.num_samples is {ev.num_samples} but split {ev.split!r} of {shard_dir} has "
            f"only {len(examples)} samples: lower evaluate.num_samples or shard more data"
        )
    return examples, f"{shard_dir}/{ev.split}", str(manifest.get("source", ""))


def scene_readout_palette(cfg: DictConfig, source: str) -> dict[str, list[str]] | None:
    """The colours and shapes the captions can name, when the evaluation data are the embedded
    synthetic scenes (their samples' caption following is read out directly); else None."""
    if source != "synthetic":
        return None
    synthetic = cfg.shard.synthetic
    return {"colours": list(synthetic.colours), "shapes": list(synthetic.shapes)}


def reference_features(cfg: DictConfig, examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Inception features of the real images at both resolutions, cached by content hash."""
    from pipeline.evaluation.inception_weights import load_fid_inception
    from pipeline.evaluation.reference_stats import reference_features_of_images

    ev = cfg.evaluate
    network = load_fid_inception(ev.inception_weights or None).eval()
    references = {}
    for name in ("base", "hires"):
        images = torch.from_numpy(np.stack([e[name] for e in examples])).permute(0, 3, 1, 2)
        with torch.no_grad():
            references[name] = reference_features_of_images(
                images.contiguous(), network, ev.reference_cache_dir, int(ev.batch_size)
            )
    return references


def evaluation_dataset(examples: list[dict[str, Any]]) -> Any:
    """The evaluation captions and real images as a Ray Dataset (one row each, with its index:
    the index fixes the sampling seed and whether the row joins the cascade and inpainting)."""
    import ray

    rows = [
        {"index": i, "caption": e["caption"], "base": e["base"], "hires": e["hires"]}
        for i, e in enumerate(examples)
    ]
    return ray.data.from_items(rows)


def model_paths(cfg: DictConfig) -> dict[str, str]:
    return {
        "base": str(cfg.pretrain_base.output),
        "cfg": str(cfg.finetune_cfg.output),
        "upsampler": str(cfg.train_upsampler.output),
        "inpaint": str(cfg.finetune_inpaint.output),
        "noised_clip": str(cfg.train_noised_clip.output),
        "eval_clip": str(cfg.eval_clip.output),
        "instruct": str(cfg.finetune_instruct.output),
    }


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``cfg_3/fid``-style scalars for MLflow."""
    clip = results["clip_metric"]
    out: dict[str, float] = {}
    for row in results["sweeps"]:
        name = f"{row['guidance']}_{row['scale']:g}"
        for key in ("fid", "kid", clip, *READOUT_KEYS):
            for suffix in ("", "_low", "_high"):
                if key + suffix in row:
                    out[f"{name}/{key}{suffix}"] = float(row[key + suffix])
    for part in ("cascade", "inpainting"):
        for key, value in results.get(part, {}).items():
            out[f"{part}/{key}"] = float(value)
    return {**out, **edit_eval.flat_metrics(results), **pair_eval.flat_metrics(results)}


def write_plots(results: dict[str, Any], plots_dir: Path) -> list[Path]:
    """DVC plot data: one JSON file per guidance kind (rows: scale, FID, KID, CLIP score), the
    instruction-editing trade-off and the two-object rates."""
    written = []
    for kind, name in PLOT_FILES.items():
        rows = [
            {k: v for k, v in r.items() if k not in ("guidance",)}
            for r in results["sweeps"]
            if r["guidance"] == kind
        ]
        path = plots_dir / name
        atomic_write_text(path, json.dumps(rows, indent=2) + "\n")
        written.append(path)
    for name, rows in ((edit_eval.PLOT_FILE, edit_eval.plot_rows(results)),
                       (pair_eval.PLOT_FILE, pair_eval.plot_rows(results))):  # fmt: skip
        path = plots_dir / name
        atomic_write_text(path, json.dumps(rows, indent=2) + "\n")
        written.append(path)
    return written


def grid_images(grids: dict[str, np.ndarray], results: dict[str, Any]) -> dict[str, Any]:
    """Captioned PIL grids: real images and every sweep condition, one row each."""
    from pipeline.sampling.grid import captioned_grid

    out = {}
    order = ["real"] + [f"{r['guidance']}_{r['scale']:g}" for r in results["sweeps"]]
    sweep = [(name, grids[name]) for name in order if name in grids]
    if sweep:
        columns = min(len(images) for _, images in sweep)
        images = np.concatenate([images[:columns] for _, images in sweep])
        captions = [name for name, _ in sweep for _ in range(columns)]
        out["sweep"] = captioned_grid(images, captions, columns=columns, cell=64, caption_lines=1)
    if "instruct" in grids and "instruct" in results:
        settings = [f"s_I {r['image_guidance']:g} s_T {r['text_guidance']:g}"
                    for r in results["instruct"]["rows"]]  # fmt: skip
        captions = [cell for instruction in results["instruct"]["shown"]
                    for cell in (instruction, "wanted", *settings)]  # fmt: skip
        out["instruct"] = captioned_grid(
            grids["instruct"], captions, columns=2 + len(settings), cell=96, caption_lines=4
        )  # the whole instruction
    if "pairs" in grids and "pairs" in results:
        names = [f"{r['guidance']}_{r['scale']:g}" for r in results["pairs"]["rows"]]
        shown = results["pairs"]["captions"][: len(grids["pairs"]) // len(names)]
        captions = [f"{name}: {caption}" for caption in shown for name in names]
        out["pairs"] = captioned_grid(grids["pairs"], captions, columns=len(names), cell=64,
                                      caption_lines=3)  # fmt: skip
    for name in ("cascade", "inpaint_finetuned", "inpaint_replace"):
        if name in grids and len(grids[name]):
            images = grids[name]
            out[name] = captioned_grid(
                images, [name] * len(images), columns=len(images), cell=64, caption_lines=1
            )
    return out


def edit_inputs(cfg: DictConfig, paths: dict[str, str]) -> tuple[list[dict[str, Any]], str]:
    """(held-out edit triples for the instruction-editing sweep, "") or ([], why none)."""
    if "instruct" not in paths:
        return [], f"no {cfg.finetune_instruct.output} (run the finetune_instruct stage)"
    return edit_eval.edit_triples(cfg.shard_edits.output_dir, int(cfg.evaluate.edit_triples))


def metrics_record(
    cfg: DictConfig, results: dict[str, Any], claims: list[Any], data: str, models: list[str]
) -> dict[str, Any]:
    """``metrics/eval.json``: the figures without bootstrap replicates or per-triple values,
    the verdicts (their statements and evidence are in the report)."""
    record = {k: v for k, v in results.items() if k not in ("replicates", "instruct", "pairs")}
    if "instruct" in results:
        record["instruct"] = edit_eval.metrics_record(results["instruct"])
    if "pairs" in results:
        record["pairs"] = pair_eval.metrics_record(results["pairs"])
    record.update(num_samples=int(cfg.evaluate.num_samples), data=data, models=models,
                  claims={c.key: c.verdict for c in claims})  # fmt: skip
    return record


def write_grids(grids: dict[str, Any], results: dict[str, Any], plots_dir: Path) -> list[Path]:
    """Each sample grid as ``<plots_dir>/eval_<name>.png``; returns the paths."""
    paths = []
    for name, image in grid_images(grids, results).items():
        path = plots_dir / f"eval_{name}.png"
        with atomic_output_path(path) as out:
            image.save(out, format="PNG")
        paths.append(path)
    return paths


def run_evaluation(cfg: DictConfig, run: Any = None) -> dict[str, Any]:
    """Evaluate the pipeline's models; write metrics, plots, grids and the report."""
    from pipeline.data import init_ray
    from pipeline.data.ray_capacity import evaluation_demand, require_capacity
    from pipeline.evaluation.launcher import evaluate_on_ray
    from pipeline.evaluation.report import check_claims, markdown_report
    from pipeline.evaluation.stage_models import existing_model_paths, save_reference

    ev = cfg.evaluate
    settings = OmegaConf.to_container(ev, resolve=True)
    init_ray(cfg.ray)
    require_capacity(cfg.ray, evaluation_demand("evaluate", settings))  # before any work
    examples, data, source = evaluation_examples(cfg)
    references = reference_features(cfg, examples)
    paths = existing_model_paths(model_paths(cfg))
    settings["scene_readout"] = scene_readout_palette(cfg, source)
    settings["resource_timeout_s"] = int(cfg.ray.resource_timeout_s)
    triples, no_edits = edit_inputs(cfg, paths)
    pairs, no_pairs = pair_eval.pair_captions(data_dir(cfg), str(ev.split),
                                              int(ev.pair_captions), settings["scene_readout"])  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="glide-eval-") as tmp:
        reference_file = Path(tmp) / "reference.pt"
        save_reference(references, reference_file)
        paths["reference"] = str(reference_file)
        results, grids = evaluate_on_ray(
            settings, evaluation_dataset(examples), paths, Path(tmp), triples, pairs
        )
    if no_edits:
        results["instruct_skipped"] = no_edits
    if no_pairs:
        results["pairs_skipped"] = no_pairs
    claims = check_claims(results) + [pair_eval.pair_claim(results)]
    claims += edit_eval.edit_claims(results)
    record = metrics_record(
        cfg, results, claims, data, sorted(k for k in paths if k != "reference")
    )
    record["mlflow_run_id"] = run.run_id if run else ""
    atomic_write_text(ev.metrics, json.dumps(record, indent=2, sort_keys=True) + "\n")
    plot_files = write_plots(results, Path(ev.plots_dir))
    context = {
        "profile": cfg.profile,
        "num_samples": int(ev.num_samples),
        "data": data,
        "steps": ev.sample_steps,
        "seed": int(ev.seed),
        "source": source,
        "mlflow_run_id": run.parent_run_id if run else "",
    }
    sections = pair_eval.report_lines(results) + edit_eval.report_lines(results)
    report = markdown_report(results, claims, context, sections)
    atomic_write_text(ev.report, report)
    grid_files = write_grids(grids, results, Path(ev.plots_dir))
    if run is not None:
        log_to_mlflow(run, results, [Path(ev.metrics), Path(ev.report), *plot_files, *grid_files])
    return record


def log_to_mlflow(run: Any, results: dict[str, Any], files: list[Path]) -> None:
    """Figures and files on the evaluate stage's run and on the pipeline's parent run (where
    reviewers compare pipelines)."""
    metrics = flat_metrics(results)
    run.log_metrics(metrics)
    for path in files:
        run.log_artifact(path, "evaluation")
    parent = run.parent_run_id
    if parent:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, 0) for k, v in metrics.items() if np.isfinite(v)]
        run.client.log_batch(parent, metrics=items)
        for path in files:
            run.client.log_artifact(parent, str(path), "evaluation")
        run.client.set_tag(parent, "glide.eval_report", "evaluation/" + Path(files[1]).name)
