"""Noise schedules: the betas of a discrete-time Gaussian diffusion process.

All schedules are returned as float64 numpy arrays of shape [T]; everything derived from them is
precomputed in float64 (see `gaussian_diffusion.py`) so that tiny alpha_bar values near t = T
keep their precision.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

#: Largest beta a schedule may produce; avoids a singular final step (improved DDPM, Sec. 3.2).
MAX_BETA = 0.999

#: Offset of the cosine schedule so that beta_0 is not vanishingly small.
COSINE_OFFSET = 0.008


def cosine_alpha_bar(t: float | np.ndarray) -> float | np.ndarray:
    """alpha_bar of the cosine schedule at continuous time t in [0, 1]:
    cos^2(((t + s) / (1 + s)) * pi / 2) with s = 0.008."""
    return np.cos((t + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2


def betas_for_alpha_bar(
    num_diffusion_timesteps: int,
    alpha_bar: Callable[[float], float],
    max_beta: float = MAX_BETA,
) -> np.ndarray:
    """Discretise a continuous alpha_bar(t), t in [0, 1], into T betas.

    beta_i = min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta), so that the cumulative
    product of (1 - beta) follows alpha_bar at the grid points (until clipping kicks in).
    """
    steps = np.arange(num_diffusion_timesteps, dtype=np.float64)
    t1 = steps / num_diffusion_timesteps
    t2 = (steps + 1) / num_diffusion_timesteps
    betas = 1.0 - alpha_bar(t2) / alpha_bar(t1)
    return np.minimum(betas, max_beta).astype(np.float64)


def linear_betas(num_diffusion_timesteps: int) -> np.ndarray:
    """DDPM's linear schedule 1e-4 .. 0.02 for T = 1000, rescaled by 1000 / T so that other
    lengths describe (approximately) the same process (improved DDPM)."""
    scale = 1000.0 / num_diffusion_timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)


_SCHEDULES: dict[str, Callable[[int], np.ndarray]] = {
    "linear": linear_betas,
    "squaredcos_cap_v2": lambda steps: betas_for_alpha_bar(steps, cosine_alpha_bar),
}


def get_named_beta_schedule(name: str, num_diffusion_timesteps: int) -> np.ndarray:
    """Betas (float64, shape [num_diffusion_timesteps]) of a named schedule.

    Names: "squaredcos_cap_v2" (cosine schedule, GLIDE base model) and "linear" (GLIDE upsampler).
    """
    if num_diffusion_timesteps < 1:
        raise ValueError(f"num_diffusion_timesteps must be >= 1, got {num_diffusion_timesteps}")
    try:
        make = _SCHEDULES[name]
    except KeyError:
        known = ", ".join(sorted(_SCHEDULES))
        raise ValueError(f"unknown beta schedule {name!r}; known schedules: {known}") from None
    return make(num_diffusion_timesteps)
