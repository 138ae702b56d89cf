"""The CLIP that evaluation measures CLIP score with, never the CLIP that guided the samples.

Two kinds, one interface (:class:`EvalClip`):

- OpenAI CLIP weights from a local file (``clip.load(path, jit=False)``; nothing is downloaded):
  the standard CLIP score, ``metric_name == "clip_score"``;
- a clean CLIP trained by this pipeline on the training shards (``models/eval_clip.pt``, t = 0
  only, its own seed): ``metric_name == "clip_score_proxy"``, so that nobody mistakes it for the
  standard score. Every metric computed with it should carry that name.

``models/eval_clip.pt`` is one or the other (see ``clip_file.py``); :func:`load_eval_clip`
resolves it. The noised CLIP used for guidance is refused.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.io import sha256_file
from pipeline.models.clip_file import (
    OPENAI_ARCHITECTURE,
    file_architecture,
    load_noised_clip,
)
from pipeline.models.model_file import ModelFileError, read_model_file
from pipeline.text.clip_tokens import clip_text_tokens

OPENAI_METRIC = "clip_score"
PROXY_METRIC = "clip_score_proxy"
# OpenAI CLIP's input normalisation (RGB mean and std of its training images, in [0, 1]).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def images_to_unit_range(images: Tensor) -> Tensor:
    """uint8 [B, H, W, 3] or float [B, 3, H, W] in [-1, 1] -> float [B, 3, H, W] in [-1, 1]."""
    if images.dtype == torch.uint8:
        return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"images must be [B, 3, H, W] floats or [B, H, W, 3] uint8, got {tuple(images.shape)}"
        )
    return images.float()


class EvalClip:
    """``encode_image`` (clean images), ``encode_text`` (captions), ``similarity`` and ``score``.

    ``metric_name``: "clip_score" (OpenAI weights) or "clip_score_proxy" (a CLIP trained here).
    ``sha256``: of the weights file, so a caller can check it is not the guidance CLIP.
    """

    def __init__(
        self,
        image_fn: Callable[[Tensor], Tensor],
        text_fn: Callable[[list[str]], Tensor],
        *,
        metric_name: str,
        source: str,
        sha256: str,
        device: torch.device,
    ) -> None:
        self._image_fn = image_fn
        self._text_fn = text_fn
        self.metric_name = metric_name
        self.source = source
        self.sha256 = sha256
        self.device = device

    @torch.no_grad()
    def encode_image(self, images: Tensor) -> Tensor:
        """Clean images (uint8 [B, H, W, 3] or float [B, 3, H, W] in [-1, 1]) -> [B, D]."""
        return self._image_fn(images_to_unit_range(images).to(self.device)).float()

    @torch.no_grad()
    def encode_text(self, captions: Sequence[str]) -> Tensor:
        if isinstance(captions, str):
            raise TypeError("captions must be a list of strings, not a single string")
        return self._text_fn(list(captions)).float()

    def similarity(self, images: Tensor, captions: Sequence[str]) -> Tensor:
        """Cosine similarity [B] of each image with its caption."""
        if len(captions) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(captions)} captions")
        z_image = F.normalize(self.encode_image(images), dim=-1)
        z_text = F.normalize(self.encode_text(captions), dim=-1)
        return (z_image * z_text).sum(dim=-1)

    def score(self, images: Tensor, captions: Sequence[str]) -> Tensor:
        """CLIP score per image: 100 * max(cosine, 0) (the convention of torchmetrics)."""
        return 100.0 * self.similarity(images, captions).clamp(min=0)


def load_openai_clip(
    path: str | os.PathLike[str], device: torch.device | str = "cpu", sha256: str = ""
) -> EvalClip:
    """OpenAI CLIP weights from a local file (a TorchScript archive as OpenAI publishes them, or
    a state dict), loaded with ``clip.load(path, jit=False)``; never downloads."""
    where = Path(path)
    if not where.is_file():
        raise ModelFileError(f"OpenAI CLIP weights not found: {where} (give a local file path)")
    digest = sha256_file(where)
    if sha256 and digest != sha256:
        raise ModelFileError(
            f"{where} changed since models/eval_clip.pt was written (SHA-256 {digest[:12]}..., "
            f"recorded {sha256[:12]}...): run the train_noised_clip stage again"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import clip

    device = torch.device(device)
    try:  # a state dict is read with torch.load, whose default is weights_only=True (torch>=2.6)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation
            model, _ = clip.load(str(where), device=device, jit=False)
    except (RuntimeError, KeyError, ValueError, AttributeError) as err:
        raise ModelFileError(f"cannot load OpenAI CLIP weights from {where}: {err}") from err
    model = model.float().eval()
    size = int(model.visual.input_resolution)
    mean = torch.tensor(OPENAI_MEAN, device=device)[None, :, None, None]
    std = torch.tensor(OPENAI_STD, device=device)[None, :, None, None]

    def image_fn(images: Tensor) -> Tensor:
        unit = (images + 1.0) / 2.0
        if unit.shape[-1] != size or unit.shape[-2] != size:
            unit = F.interpolate(unit, size=(size, size), mode="bicubic", align_corners=False)
        return model.encode_image(((unit.clamp(0, 1) - mean) / std).float())

    def text_fn(captions: list[str]) -> Tensor:
        return model.encode_text(clip_text_tokens(captions, int(model.context_length)).to(device))

    return EvalClip(
        image_fn,
        text_fn,
        metric_name=OPENAI_METRIC,
        source=str(where),
        sha256=digest,
        device=device,
    )


def load_eval_clip(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> EvalClip:
    """The evaluation CLIP that ``models/eval_clip.pt`` names: OpenAI weights it points at, or the
    clean CLIP it holds. A noised (guidance) CLIP is refused."""
    payload: dict[str, Any] = read_model_file(path, mmap=True)
    if file_architecture(payload) == OPENAI_ARCHITECTURE:
        config = payload["model_config"]
        return load_openai_clip(config["openai_weights"], device, sha256=str(config["sha256"]))
    if payload.get("extra", {}).get("noised", True):
        raise ModelFileError(
            f"{path} is a noised CLIP (the kind used for guidance): CLIP score must be measured "
            "with a CLIP that did not guide the samples (models/eval_clip.pt)"
        )
    model, _ = load_noised_clip(path, device)
    device = torch.device(device)

    def image_fn(images: Tensor) -> Tensor:
        t = torch.zeros(images.shape[0], dtype=torch.long, device=device)
        return model.encode_image(images, t)

    def text_fn(captions: list[str]) -> Tensor:
        return model.encode_text(clip_text_tokens(captions, model.text_ctx).to(device))

    return EvalClip(
        image_fn,
        text_fn,
        metric_name=PROXY_METRIC,
        source=str(path),
        sha256=sha256_file(path),
        device=device,
    )
