"""FID and KID as torchmetrics metrics on the FID Inception-v3, with cached reference features.

The metrics are torchmetrics' own (their states are sums and feature lists reduced across
workers); this module only builds them around :class:`FIDInceptionV3`, puts cached reference
features into their "real" side, and makes KID usable with small, fixed sample counts.
:class:`FidKid` runs the network once per image for both figures (two separate metrics would
each run it).

Reference features must be added on one worker only (global rank 0): the metric states are
summed/gathered over workers, so adding them on every worker would count them once per worker.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from pipeline.evaluation.reference_stats import ReferenceFeatures


class SampleCountError(ValueError):
    """Too few images for the metric's settings."""


class FixedSubsetKID(KernelInceptionDistance):
    """torchmetrics' KID with a clear error when a side has fewer images than ``subset_size``,
    and subsets drawn from its own seeded generator (``seed=None``: the global RNG, as
    torchmetrics does) so the same features always give the same KID."""

    def __init__(
        self,
        feature: nn.Module,
        subset_size: int,
        subsets: int = 100,
        seed: int | None = 0,
        reset_real_features: bool = True,
    ) -> None:
        if subset_size < 2:
            raise SampleCountError(f"KID subset_size must be >= 2, got {subset_size}")
        if subsets < 1:
            raise SampleCountError(f"KID subsets must be >= 1, got {subsets}")
        super().__init__(
            feature=feature,
            subsets=subsets,
            subset_size=subset_size,
            reset_real_features=reset_real_features,
        )
        self.seed = seed

    def compute(self) -> tuple[Tensor, Tensor]:
        counts = {"real": _count(self.real_features), "fake": _count(self.fake_features)}
        for side, count in counts.items():
            if count < self.subset_size:
                raise SampleCountError(
                    f"KID needs at least subset_size={self.subset_size} {side} images, got "
                    f"{count}: lower the KID subset size or evaluate more samples"
                )
        if self.seed is None:
            return super().compute()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return super().compute()


def _count(features: list[Tensor] | Tensor) -> int:
    if isinstance(features, Tensor):
        return int(features.shape[0])
    return sum(int(f.shape[0]) for f in features)


def fid_metric(
    extractor: nn.Module, reference: ReferenceFeatures | None = None
) -> FrechetInceptionDistance:
    """torchmetrics FID on ``extractor``; ``reference`` (if given) becomes its real side, kept
    across ``reset()``."""
    metric = FrechetInceptionDistance(feature=extractor, reset_real_features=reference is None)
    if reference is not None:
        add_reference(metric, reference)
    return metric


def kid_metric(
    extractor: nn.Module,
    subset_size: int,
    subsets: int = 100,
    reference: ReferenceFeatures | None = None,
    seed: int | None = 0,
) -> FixedSubsetKID:
    """KID on ``extractor``; ``reference`` as for FID."""
    metric = FixedSubsetKID(
        extractor,
        subset_size=subset_size,
        subsets=subsets,
        seed=seed,
        reset_real_features=reference is None,
    )
    if reference is not None:
        add_reference(metric, reference)
    return metric


def add_reference(
    metric: FrechetInceptionDistance | KernelInceptionDistance, reference: ReferenceFeatures
) -> None:
    """Put cached reference features into the metric's real side (as ``update(real=True)`` on
    the reference images would, without running the network)."""
    features = reference.features.to(metric.device)
    if isinstance(metric, FrechetInceptionDistance):
        width = metric.real_features_sum.shape[0]
        _check_width(features, width)
        feats = features.double()
        metric.real_features_sum += feats.sum(dim=0)
        metric.real_features_cov_sum += feats.T @ feats
        metric.real_features_num_samples += feats.shape[0]
    elif isinstance(metric, KernelInceptionDistance):
        _check_width(features, int(getattr(metric.inception, "num_features", features.shape[1])))
        metric.real_features.append(features)
    else:
        raise TypeError(f"cannot add reference features to {type(metric).__name__}")


def _check_width(features: Tensor, width: int) -> None:
    if features.shape[1] != width:
        raise ValueError(
            f"reference features are {features.shape[1]}-d but the metric's extractor gives "
            f"{width}-d features: they were computed with another feature setting"
        )


def sample_counts(metric: FrechetInceptionDistance | KernelInceptionDistance) -> dict[str, int]:
    """How many real and fake images a FID/KID figure rests on (to write next to it)."""
    if isinstance(metric, FrechetInceptionDistance):
        return {
            "num_real": int(metric.real_features_num_samples),
            "num_fake": int(metric.fake_features_num_samples),
        }
    return {"num_real": _count(metric.real_features), "num_fake": _count(metric.fake_features)}


class FeaturePassthrough(nn.Module):
    """Takes the extractor's place inside FID/KID when the features are computed outside:
    ``update`` then receives float features [B, num_features] instead of images."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(
                f"expected features [B, {self.num_features}], got {tuple(features.shape)}"
            )
        return features


class FidKid:
    """FID and KID of generated images against a reference set, the network run once per image.

    ``fid`` and ``kid`` are ordinary torchmetrics metrics over features (their states reduce
    across workers in ``compute``); the extractor is held here, outside their states, so a
    checkpoint of the metrics does not carry the 87 MB of Inception weights.
    """

    def __init__(
        self,
        extractor: nn.Module,
        kid_subset_size: int,
        kid_subsets: int = 100,
        reference: ReferenceFeatures | None = None,
        seed: int | None = 0,
    ) -> None:
        self.extractor = extractor
        width = int(extractor.num_features)
        self.fid = fid_metric(FeaturePassthrough(width), reference=reference)
        self.kid = kid_metric(
            FeaturePassthrough(width),
            subset_size=kid_subset_size,
            subsets=kid_subsets,
            reference=reference,
            seed=seed,
        )

    def to(self, device: torch.device | str) -> FidKid:
        self.extractor.to(device)
        self.fid.to(device)
        self.kid.to(device)
        return self

    def update(self, images: Tensor, real: bool = False) -> None:
        """uint8 images [B, 3, H, W] in [0, 255]; ``real=False`` for generated samples."""
        features = self.extractor(images)
        self.fid.update(features, real=real)
        self.kid.update(features, real=real)

    def compute(self) -> dict[str, float | int]:
        """``fid``, ``kid`` (mean over subsets), ``kid_std`` and the sample counts."""
        kid_mean, kid_std = self.kid.compute()
        return {
            "fid": float(self.fid.compute()),
            "kid": float(kid_mean),
            "kid_std": float(kid_std),
            **sample_counts(self.fid),
            "kid_subset_size": int(self.kid.subset_size),
        }

    def reset(self) -> None:
        """Drop the generated side (a reference given at construction stays)."""
        self.fid.reset()
        self.kid.reset()
