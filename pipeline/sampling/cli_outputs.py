"""What ``glide-sample`` writes: each image as PNG, the captioned grid and samples.json (the
prompts, files, settings and the model's MLflow run), all atomically."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline.io import atomic_output_path, atomic_write_text
from pipeline.sampling.cli_instruct import grid_rows
from pipeline.sampling.grid import captioned_grid


def write_outputs(
    images: torch.Tensor,
    args: argparse.Namespace,
    info: dict[str, Any],
    usage_error: type[Exception] = OSError,
) -> list[Path]:
    """Each image as PNG, the captioned grid and samples.json, all written atomically."""
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise usage_error(f"cannot write the output folder {out}: {err.strerror or err}") from err
    files, records = _write_images(images, args, info, out)
    captions = [record["prompt"] for record in records]
    _write_grid(images, captions, args, info, out / "grid.png")
    summary = {**_settings(args, info), "seed": args.seed, "images": records}
    atomic_write_text(out / "samples.json", json.dumps(summary, indent=2) + "\n")
    return [*files, out / "grid.png"]


def _save_png(image: np.ndarray, path: Path) -> None:
    with atomic_output_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _write_images(
    images: torch.Tensor, args: argparse.Namespace, info: dict[str, Any], out: Path
) -> tuple[list[Path], list[dict[str, str]]]:
    """``<prompt>_<image>.png`` per image (and ``..._base.png`` for a cascade): the files and
    their samples.json records."""
    files, records = [], []
    base_images = info.get("base_images")
    for index, image in enumerate(images.numpy()):
        prompt_index, image_index = divmod(index, args.batch)
        path = out / f"{prompt_index:03d}_{image_index:03d}.png"
        _save_png(image, path)
        files.append(path)
        records.append({"file": path.name, "prompt": args.prompt[prompt_index]})
        if base_images is not None:
            base_path = path.with_name(f"{path.stem}_base.png")
            _save_png(base_images[index].numpy(), base_path)
            records[-1]["base_file"] = base_path.name
    return files, records


def _write_grid(
    images: torch.Tensor, captions: list[str], args: argparse.Namespace, info: dict, path: Path
) -> None:
    """The captioned grid: a row per prompt, or for instruction edits (input | edits)."""
    grid_images, columns = np.asarray(images), max(args.batch, 1)
    if info.get("source_image") is not None:
        grid_images, captions, columns = grid_rows(
            grid_images, captions, info["source_image"].numpy(), args.batch
        )
    grid = captioned_grid(grid_images, captions, columns=columns)
    with atomic_output_path(path) as tmp:
        grid.save(tmp, format="PNG")


def _settings(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    """samples.json's record of the model and every setting of the mode that ran."""

    def when(on: Any, record: dict[str, Any]) -> dict[str, Any] | None:
        return record if on else None

    return {
        "model": str(args.model),
        "model_stage": info.get("stage", ""),
        "model_step": info.get("step"),
        "model_mlflow_run_id": info.get("mlflow_run_id", ""),
        "guidance": args.guidance,
        "edit": when(args.image, {
            "image": args.image, "mask": args.mask, "invert_mask": args.invert_mask,
            "baseline_replace": args.baseline_replace,
        }),
        "steps": args.steps,
        "precision": args.precision,
        "upsample": when(args.upsample, {
            "model": str(args.upsampler_model),
            "model_step": info.get("upsampler", {}).get("step"),
            "model_mlflow_run_id": info.get("upsampler", {}).get("mlflow_run_id", ""),
            "steps": args.upsample_steps, "temperature": args.upsample_temp,
            "aug_level": args.upsample_aug_level,
            "tile": [args.upsample_tile, args.upsample_tile_stride, args.upsample_tile_below_t],
            "projection": args.upsample_projection,
        }),
        "clip_guidance": when(
            args.clip_guidance is not None,
            {"scale": args.clip_guidance, "clip_model": str(args.clip_model)},
        ),
        "instruct_edit": when(args.edit, {"image": args.edit, "image_guidance": args.image_guidance}),
    }  # fmt: skip
