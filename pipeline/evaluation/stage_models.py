"""Load what the evaluation compares: the model files of the earlier stages, the two CLIPs and the
cached reference features; build the evaluation module from them on a worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.evaluation.reference_stats import ReferenceFeatures


def existing_model_paths(settings_paths: dict[str, str]) -> dict[str, str]:
    """The model files that exist, resolved to absolute paths (workers run elsewhere); the CFG
    model and the evaluation CLIP are required."""
    found = {}
    for name, path in settings_paths.items():
        if path and Path(path).is_file():
            found[name] = str(Path(path).resolve())
        elif name in ("cfg", "eval_clip"):
            raise FileNotFoundError(
                f"the evaluation needs {path or name!r} ({name}): run the stage that writes it"
            )
    return found


def save_reference(references: dict[str, ReferenceFeatures], path: Path) -> None:
    """Reference features as plain tensors (read back with ``weights_only=True``)."""
    torch.save(
        {
            name: {
                "features": ref.features,
                "mean": ref.mean,
                "cov": ref.cov,
                "key": ref.key,
                "content_hash": ref.content_hash,
            }
            for name, ref in references.items()
        },
        path,
    )


def load_reference(path: str) -> dict[str, ReferenceFeatures]:
    stored = torch.load(path, map_location="cpu", weights_only=True)
    return {
        name: ReferenceFeatures(
            r["features"], r["mean"], r["cov"], r["key"], r["content_hash"], True
        )
        for name, r in stored.items()
    }


def build_evaluation_module(config: dict[str, Any], device: str) -> Any:
    """The evaluation module with every model the paths name (on ``device``)."""
    from pipeline.evaluation.module import GlideEvaluationModule
    from pipeline.models.clip_file import load_noised_clip
    from pipeline.models.eval_clip import load_eval_clip
    from pipeline.sampling.loading import load_sampling_model

    paths, settings = config["paths"], config["settings"]
    expected = {"base": "text2im", "cfg": "text2im", "upsampler": "upsample", "inpaint": "inpaint"}
    models = {
        name: load_sampling_model(
            paths[name],
            device=device,
            expect=variant,
            compile=bool(settings["compile"]),
            compile_backend=str(settings["compile_backend"]),
            precision=str(settings["precision"]),
        )
        for name, variant in expected.items()
        if name in paths
    }
    noised_clip = None
    if "noised_clip" in paths:
        noised_clip, _ = load_noised_clip(paths["noised_clip"], device)
    eval_clip = load_eval_clip(paths["eval_clip"], device)
    return GlideEvaluationModule(
        settings,
        models,
        eval_clip,
        load_reference(paths["reference"]),
        noised_clip=noised_clip,
    )
