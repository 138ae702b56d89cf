"""Inception features of a real (reference) image set, computed once and cached by content hash.

The reference side of FID/KID depends only on the images and on the feature extractor, so it is
cached under ``<cache_dir>/<key>.pt`` where the key hashes the images' content hash (given by the
caller, e.g. the shards' manifest hash, or computed from the pixels), the Inception weights'
sha256, the feature dimension and the resize mode. A changed image, weights file or setting
gives another key; a second evaluation of the same set reads the file instead of running the
network. Files are written atomically and read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from pipeline.io import atomic_output_path

CACHE_FORMAT = 1


@dataclass(frozen=True)
class ReferenceFeatures:
    """Features [N, D] (float32) of a reference image set with their mean and covariance
    (float64, unbiased). ``from_cache`` says whether they were read from the cache."""

    features: Tensor
    mean: Tensor
    cov: Tensor
    key: str
    content_hash: str
    from_cache: bool

    @property
    def num_samples(self) -> int:
        return int(self.features.shape[0])


def images_content_hash(images: Tensor | Iterable[Tensor]) -> str:
    """sha256 over the shape and bytes of each uint8 image, in order; the same images give the
    same hash however they are batched (one tensor or an iterable of batches)."""
    digest = hashlib.sha256()
    for batch in [images] if isinstance(images, Tensor) else images:
        if batch.dtype != torch.uint8:
            raise TypeError(f"reference images must be uint8, got {batch.dtype}")
        for image in batch.detach().cpu():
            digest.update(repr(tuple(image.shape)).encode())
            digest.update(image.contiguous().numpy().tobytes())
    return digest.hexdigest()


def reference_cache_key(content_hash: str, extractor: nn.Module) -> str:
    """The cache key of a reference set's features under ``extractor``."""
    weights = getattr(extractor, "weights_sha256", None)
    if not weights:
        raise ValueError(
            "the feature extractor has no weights_sha256 attribute: load it with "
            "load_fid_inception() so cached reference features can be tied to its weights"
        )
    parts = [
        f"format={CACHE_FORMAT}",
        f"content={content_hash}",
        f"weights={weights}",
        f"features={getattr(extractor, 'num_features', '?')}",
        f"resize={getattr(extractor, 'resize', '?')}",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def extract_features(extractor: nn.Module, batches: Iterable[Tensor]) -> Tensor:
    """Run ``extractor`` over uint8 batches; float32 features [N, D] on the CPU."""
    device = next(extractor.parameters()).device
    out = [extractor(batch.to(device)).float().cpu() for batch in batches]
    if not out:
        raise ValueError("the reference image set is empty")
    return torch.cat(out)


def _statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    if features.shape[0] < 2:
        raise ValueError(f"reference statistics need at least 2 images, got {features.shape[0]}")
    feats = features.double()
    return feats.mean(dim=0), torch.cov(feats.T)


def reference_features(
    extractor: nn.Module,
    cache_dir: str | os.PathLike[str],
    content_hash: str,
    batches: Callable[[], Iterable[Tensor]],
) -> ReferenceFeatures:
    """Cached features of the reference set identified by ``content_hash``.

    ``batches`` is called (and the network run) only on a cache miss; it yields uint8
    [B, 3, H, W] batches of the set.
    """
    key = reference_cache_key(content_hash, extractor)
    path = Path(cache_dir) / f"{key}.pt"
    if path.is_file():
        stored = torch.load(path, map_location="cpu", weights_only=True)
        return ReferenceFeatures(
            stored["features"], stored["mean"], stored["cov"], key, content_hash, True
        )
    features = extract_features(extractor, batches())
    mean, cov = _statistics(features)
    record = {"features": features, "mean": mean, "cov": cov, "content_hash": content_hash}
    with atomic_output_path(path) as tmp:
        torch.save(record, tmp)
    return ReferenceFeatures(features, mean, cov, key, content_hash, False)


def reference_features_of_images(
    images: Tensor,
    extractor: nn.Module,
    cache_dir: str | os.PathLike[str],
    batch_size: int = 64,
) -> ReferenceFeatures:
    """Cached features of uint8 images [N, 3, H, W], keyed by their pixels' content hash."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return reference_features(
        extractor,
        cache_dir,
        images_content_hash(images),
        lambda: images.split(batch_size),
    )
