"""The model file every stage writes and every sampler reads (``models/*.pt``).

A plain dict saved with ``torch.save`` holding only tensors, strings, numbers, lists and dicts, so
that ``torch.load(..., weights_only=True)`` reads it and a file carrying arbitrary pickled objects
is refused. Contents: the EMA weights, the GLIDE model settings, the diffusion settings, the
tokenizer identity, the training step and the MLflow run that produced it.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from pipeline.models.factory import create_glide_model, resolve_config
from pipeline.models.glide_unet import Text2ImUNet

FORMAT = "glide-pipeline/model-v1"


class ModelFileError(ValueError):
    """A model file that is missing, unreadable, unsafe or incompatible."""


def _plain(value: Any) -> Any:
    """Tuples -> lists recursively (weights_only loading accepts lists and dicts)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def model_file_payload(
    state_dict: dict[str, torch.Tensor],
    model_config: dict[str, Any],
    *,
    diffusion: dict[str, Any],
    tokenizer: str,
    step: int,
    mlflow_run_id: str = "",
    stage: str = "",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The dict saved as a model file (weights moved to CPU and made contiguous)."""
    return {
        "format": FORMAT,
        "state_dict": {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()},
        "model_config": _plain(model_config),
        "diffusion": _plain(diffusion),
        "tokenizer": tokenizer,
        "step": int(step),
        "mlflow_run_id": mlflow_run_id,
        "stage": stage,
        "extra": _plain(extra or {}),
    }


def read_model_file(path: str | os.PathLike[str], *, mmap: bool = False) -> dict[str, Any]:
    """Load a model file's dict with ``weights_only=True``; clear errors for bad files.

    ``mmap=True`` maps the weights instead of reading them (cheap metadata checks).
    """
    where = Path(path)
    if not where.is_file():
        raise ModelFileError(f"model file not found: {where}")
    if not zipfile.is_zipfile(where):  # torch.save writes a zip archive
        raise ModelFileError(f"cannot read model file {where}: not a PyTorch file (truncated?)")
    try:
        payload = torch.load(where, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise ModelFileError(
            f"refusing {where}: it holds objects other than tensors and plain data ({err})"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise ModelFileError(f"cannot read model file {where}: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{where} is not a {FORMAT} model file")
    return payload


def load_model(
    path: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> tuple[Text2ImUNet, dict[str, Any]]:
    """Build the model described by a model file and load its weights (strict).

    Returns ``(model in eval mode, payload without the state dict)``.
    """
    payload = read_model_file(path)
    state = payload.pop("state_dict")
    model = create_glide_model(**payload["model_config"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelFileError(f"{path}: weights do not fit the model it describes: {err}") from err
    return model.to(device).eval(), payload


def require_compatible(
    payload: dict[str, Any],
    model_config: dict[str, Any],
    tokenizer: str,
    *,
    where: str | os.PathLike[str],
    ignore: tuple[str, ...] = (),
) -> None:
    """Raise ModelFileError naming every setting where a model file differs from the model a
    stage builds (``model_config``: resolved GLIDE kwargs) or from the stage's tokenizer.

    ``ignore``: keys allowed to differ (e.g. ``inpaint`` when widening a base model).
    """
    expected = _plain(resolve_config(**model_config))
    found = payload.get("model_config", {})
    differences = [
        f"{key}: file has {found.get(key)!r}, config has {expected[key]!r}"
        for key in sorted(expected)
        if key not in ignore and found.get(key) != expected[key]
    ]
    if payload.get("tokenizer") != tokenizer:
        differences.append(
            f"tokenizer: file has {payload.get('tokenizer')!r}, config has {tokenizer!r}"
        )
    if differences:
        raise ModelFileError(
            f"{where} does not match the configured model: " + "; ".join(differences)
        )
