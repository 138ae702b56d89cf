"""CLIP's symmetric contrastive loss and retrieval accuracy, aware of repeated captions.

Small synthetic datasets repeat captions ("a red circle"), so a batch may hold several pairs with
the same caption. Counting only the diagonal as a match would punish the model for scoring an
identical caption as high as the paired one; here every pair whose captions are equal is a
match: the target of each row is spread evenly over its matches. Without repeats this is
exactly CLIP's loss (cross-entropy with the diagonal as target, in both directions, averaged).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def same_caption(tokens: Tensor) -> Tensor:
    """Bool [B, B]: rows i, j of ``tokens`` [B, L] are the same caption."""
    return (tokens[:, None, :] == tokens[None, :, :]).all(dim=-1)


def captions_match(captions: Sequence[str]) -> Tensor:
    """Bool [N, N]: caption i equals caption j."""
    index = {caption: k for k, caption in enumerate(dict.fromkeys(captions))}
    ids = torch.tensor([index[c] for c in captions])
    return ids[:, None] == ids[None, :]


def contrastive_loss(logits: Tensor, matches: Tensor | None = None) -> Tensor:
    """Symmetric cross-entropy of ``logits`` [B_images, B_texts] (scaled similarities).

    ``matches`` [B, B] bool marks the matching pairs (default: the diagonal only).
    """
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"logits must be square [B, B], got {tuple(logits.shape)}")
    if matches is None:
        matches = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    targets = matches.to(logits.dtype)
    image_to_text = F.cross_entropy(logits, targets / targets.sum(dim=1, keepdim=True))
    text_to_image = F.cross_entropy(logits.T, targets.T / targets.T.sum(dim=1, keepdim=True))
    return (image_to_text + text_to_image) / 2


def retrieval_accuracy(z_image: Tensor, z_text: Tensor, matches: Tensor) -> dict[str, float]:
    """Top-1 retrieval among N pairs: a hit when the best-scoring item matches the query.

    ``z_image``, ``z_text`` [N, D] (normalised or not: cosine similarity is used);
    ``matches`` [N, N] bool. Returns ``text_to_image``, ``image_to_text`` and ``chance`` (the
    expected accuracy of a random pick: the mean share of matches per query).
    """
    similarity = F.normalize(z_image.float(), dim=-1) @ F.normalize(z_text.float(), dim=-1).T
    matches = matches.to(similarity.device)
    rows = torch.arange(similarity.shape[0], device=similarity.device)
    image_to_text = matches[rows, similarity.argmax(dim=1)].float().mean()
    text_to_image = matches[similarity.argmax(dim=0), rows].float().mean()
    chance = matches.float().mean(dim=1).mean()
    return {
        "text_to_image": float(text_to_image),
        "image_to_text": float(image_to_text),
        "chance": float(chance),
    }
