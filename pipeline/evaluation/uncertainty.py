"""Uncertainty of the evaluation's figures: bootstrap over samples, binomial (Wilson) intervals.

Every figure is a statistic of per-sample values (Inception features, CLIP scores, PSNRs), so its
sampling uncertainty is estimated by recomputing it on resampled index sets. The same index sets
are used for every condition measured on the same captions (a paired bootstrap): a difference
between two conditions is then judged by its own interval, not by two overlapping ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def normal_quantile(confidence: float) -> float:
    """z such that a standard normal lies in [-z, z] with probability ``confidence``."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return math.sqrt(2.0) * float(torch.erfinv(torch.tensor(confidence, dtype=torch.float64)))


def wilson_interval(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a binomial rate (sensible at 0 and at ``trials``)."""
    if trials <= 0:
        return (float("nan"), float("nan"))
    if not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes out of {trials} trials")
    z = normal_quantile(confidence)
    rate = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, min(rate, centre - half)), min(1.0, max(rate, centre + half)))  # rounding


def bootstrap_indices(num_samples: int, replicates: int, seed: int) -> Tensor:
    """[replicates, num_samples] indices drawn with replacement (seeded, CPU)."""
    if num_samples < 1 or replicates < 1:
        raise ValueError(f"bootstrap needs samples and replicates, got {num_samples}, {replicates}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(num_samples, (replicates, num_samples), generator=generator)


def percentile_interval(
    values: Sequence[float] | np.ndarray, confidence: float
) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap replicates (NaNs ignored)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return (float(low), float(high))


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """FID between feature sets real [M, D] and fake [N, D] (float64).

    tr sqrt(S_r S_f) is the sum of the singular values of (F - mu_f)(R - mu_r)^T / sqrt((N-1)(M-1))
    when a set is smaller than the feature width (an [N, M] problem instead of [D, D]), else it
    comes from the symmetric form S_r^1/2 S_f S_r^1/2.
    """
    real, fake = real.double(), fake.double()
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError("FID needs at least two samples on each side")
    real_centred, fake_centred = real - real.mean(0), fake - fake.mean(0)
    m, n = real.shape[0] - 1, fake.shape[0] - 1
    trace_real = real_centred.square().sum() / m
    trace_fake = fake_centred.square().sum() / n
    if min(m, n) + 1 <= real.shape[1]:
        cross = torch.linalg.svdvals(fake_centred @ real_centred.T).sum() / math.sqrt(m * n)
    else:
        cov_real = real_centred.T @ real_centred / m
        cov_fake = fake_centred.T @ fake_centred / n
        values, vectors = torch.linalg.eigh(cov_real)
        root = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
        cross = torch.linalg.eigvalsh(root @ cov_fake @ root).clamp(min=0).sqrt().sum()
    mean_term = (real.mean(0) - fake.mean(0)).square().sum()
    return float(mean_term + trace_real + trace_fake - 2 * cross)


def bootstrap_fid(real: Tensor, fake: Tensor, indices: Tensor) -> np.ndarray:
    """FID on each resampled pair (real[idx], fake[idx]): real and fake are paired by sample."""
    if real.shape[0] != fake.shape[0]:
        raise ValueError(f"paired bootstrap needs equal counts, got {len(real)} and {len(fake)}")
    return np.array([frechet_distance(real[idx], fake[idx]) for idx in indices])


def bootstrap_mean(values: Tensor, indices: Tensor) -> np.ndarray:
    """The mean of ``values`` [N] on each resampled index set [B, N] (NaNs ignored)."""
    picked = values.double()[indices]
    return torch.nanmean(picked, dim=1).numpy()


def centred_interval(
    point: float, replicates: Sequence[float] | np.ndarray, confidence: float
) -> tuple[float, float]:
    """The bootstrap spread placed around the estimate: [point - (median - q_low),
    point + (q_high - median)]. Small-sample FID is biased upwards and resampling (which repeats
    samples) adds to that bias, so raw percentiles would sit above the estimate; the spread alone
    is what says how far the figure would move with other samples of the same count."""
    low, high = percentile_interval(replicates, confidence)
    finite = np.asarray(replicates, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    median = float(np.median(finite))
    return (point - (median - low), point + (high - median))
