"""CLIP score of images against their captions, with any CLIP-like encoder.

``100 * max(cos(E_image, E_caption), 0)`` averaged over images (Hessel et al.'s CLIPScore with
w = 100, as torchmetrics' CLIPScore defines it). torchmetrics' own metric is tied to Hugging Face
CLIP checkpoints; this one takes an encoder object, so the evaluation can use a CLIP model that
was not used for guidance (GLIDE's requirement) and name the figure after it.

The encoder needs:

- ``encode_image(images)``: float images in [-1, 1], [B, 3, H, W] -> embeddings [B, D];
- ``encode_text(captions)``: list of B strings -> embeddings [B, D];
- ``metric_name``: the name the figure is reported under (e.g. ``"clip_score"`` for a real
  CLIP, ``"clip_score_proxy"`` for a stand-in).

The clamp at 0 is applied per image, as in the formula; torchmetrics' implementation clamps the
mean instead, which differs only when some cosine is negative.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

_REQUIRED = ("encode_image", "encode_text", "metric_name")


class ClipScore(Metric):
    """Mean CLIP score of (image, caption) pairs; states are sums reduced across workers."""

    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    score_sum: Tensor
    num_samples: Tensor

    def __init__(self, encoder: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        missing = [name for name in _REQUIRED if not hasattr(encoder, name)]
        if missing:
            raise TypeError(
                f"the CLIP score encoder {type(encoder).__name__} lacks {', '.join(missing)} "
                "(it needs encode_image, encode_text and metric_name)"
            )
        if not isinstance(encoder.metric_name, str) or not encoder.metric_name:
            raise TypeError(
                f"encoder.metric_name must be a non-empty string, got {encoder.metric_name!r}"
            )
        self.encoder = encoder
        self.add_state("score_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_samples", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @property
    def name(self) -> str:
        """The name to report the score under (the encoder's ``metric_name``)."""
        return self.encoder.metric_name

    def per_image(self, images: Tensor, captions: list[str]) -> Tensor:
        """float64 [B]: each image's CLIP score against its caption (not added to the state)."""
        if isinstance(captions, str):
            captions = [captions]
        if not images.is_floating_point() or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"CLIP score expects float images [B, 3, H, W] in [-1, 1], got "
                f"{images.dtype} {tuple(images.shape)}"
            )
        if len(captions) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(captions)} captions")
        with torch.no_grad():
            image_emb = self.encoder.encode_image(images)
            text_emb = self.encoder.encode_text(list(captions))
        cos = F.cosine_similarity(
            image_emb.double(), text_emb.double().to(image_emb.device), dim=-1
        )
        return 100.0 * cos.clamp(min=0.0)

    def update(self, images: Tensor, captions: list[str]) -> None:
        """images: float [B, 3, H, W] in [-1, 1]; captions: B strings."""
        self.add_scores(self.per_image(images, captions))

    def add_scores(self, scores: Tensor) -> None:
        """Add per-image scores computed by :meth:`per_image`."""
        self.score_sum += scores.sum().to(self.score_sum.device)
        self.num_samples += scores.shape[0]

    def compute(self) -> Tensor:
        if self.num_samples == 0:
            raise RuntimeError("CLIP score: no images were added")
        return (self.score_sum / self.num_samples).float()


def clip_retrieval(image_emb: Tensor, text_emb: Tensor) -> dict[str, float]:
    """Image -> caption retrieval of a CLIP on real pairs: for each image, is the closest of the
    set's captions its own? Identical captions (equal embeddings) count as its own, and the
    chance rate is the mean share of the set's captions that equal the image's."""
    if image_emb.shape[0] != text_emb.shape[0] or image_emb.shape[0] < 2:
        raise ValueError(
            f"retrieval needs matching pairs, got {image_emb.shape[0]} images and "
            f"{text_emb.shape[0]} captions"
        )
    images = F.normalize(image_emb.double(), dim=-1)
    texts = F.normalize(text_emb.double(), dim=-1)
    same_caption = torch.cdist(texts, texts) < 1e-6  # [N, N]: caption j equals caption i
    best = (images @ texts.T).argmax(dim=1)
    hits = same_caption[torch.arange(len(best)), best]
    return {
        "pairs": int(len(best)),
        "hits": int(hits.sum()),
        "accuracy": float(hits.double().mean()),
        "chance": float(same_caption.double().mean(dim=1).mean()),
    }
