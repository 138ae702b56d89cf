"""CLIP model files (``models/noised_clip.pt``, ``models/eval_clip.pt``).

The same safe container as the diffusion models (``model_file.py``: plain data and tensors,
read with ``weights_only=True``); ``model_config["architecture"]`` tells what it holds:

- ``noised_clip``: a :class:`NoisedCLIP` trained here (the noised one for guidance, or the
  clean one for evaluation, which was trained at t = 0 only: ``extra["noised"]`` is False);
- ``openai_clip``: no weights, a reference to OpenAI CLIP weights on the local disk (path and
  SHA-256), written when the user gives them for evaluation.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from pipeline.models.model_file import ModelFileError, model_file_payload, read_model_file
from pipeline.models.noised_clip import ARCHITECTURE, NoisedCLIP, check_clip_config

OPENAI_ARCHITECTURE = "openai_clip"
CLIP_TOKENIZER = "clip-bpe-49408-sot-eot"


def clip_file_payload(
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    *,
    diffusion: dict[str, Any],
    step: int,
    mlflow_run_id: str = "",
    stage: str = "",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The dict saved as a noised CLIP model file."""
    return model_file_payload(
        state_dict,
        {**config, "architecture": ARCHITECTURE},
        diffusion=diffusion,
        tokenizer=CLIP_TOKENIZER,
        step=step,
        mlflow_run_id=mlflow_run_id,
        stage=stage,
        extra=extra,
    )


def openai_reference_payload(weights: str, sha256: str, stage: str = "") -> dict[str, Any]:
    """A model file that points at OpenAI CLIP weights instead of holding weights."""
    return model_file_payload(
        {},
        {"architecture": OPENAI_ARCHITECTURE, "openai_weights": weights, "sha256": sha256},
        diffusion={},
        tokenizer="clip",
        step=0,
        stage=stage,
    )


def file_architecture(payload: dict[str, Any]) -> str:
    return str(payload.get("model_config", {}).get("architecture", "glide"))


def load_noised_clip(
    path: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> tuple[NoisedCLIP, dict[str, Any]]:
    """``(NoisedCLIP in eval mode, payload without the state dict)``; ModelFileError for a file
    that is not a CLIP trained here or whose weights do not fit its settings."""
    payload = read_model_file(path)
    found = file_architecture(payload)
    if found != ARCHITECTURE:
        raise ModelFileError(f"{path} holds a {found} model, not a noised CLIP")
    state = payload.pop("state_dict")
    config = {k: v for k, v in payload["model_config"].items() if k != "architecture"}
    try:
        check_clip_config(config)
    except ValueError as err:
        raise ModelFileError(f"{path}: {err}") from err
    model = NoisedCLIP(**config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelFileError(f"{path}: weights do not fit the model it describes: {err}") from err
    return model.to(device).eval(), payload
