"""Respacing: sample with a subset of the original timesteps.

A respaced diffusion keeps steps S = [s_0 < s_1 < ... < s_K-1] of the original T-step process and
recomputes its betas so that its alpha_bar at step k equals the original alpha_bar at s_k:
    beta'_k = 1 - alpha_bar(s_k) / alpha_bar(s_{k-1}),  alpha_bar(s_{-1}) = 1.
The model is still called with the original timesteps s_k (see `GaussianDiffusion.timestep_map`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .gaussian_diffusion import GaussianDiffusion
from .schedules import get_named_beta_schedule

#: GLIDE's upsampler schedule: these sections, with the last step T-1 replaced by T-3.
FAST27_SECTIONS = (10, 10, 3, 2, 2)


def _evenly_strided(start: int, size: int, count: int) -> list[int]:
    """`count` steps spread evenly over [start, start + size), first and last included.

    Summing the stride (rather than rounding ``i * stride``) picks a different step for 278 of
    the counts 1..1000 at T = 1000; it is what GLIDE's released samplers use."""
    if count < 1:
        raise ValueError(f"a section needs at least one step, got {count}")
    if count > size:
        raise ValueError(f"cannot take {count} steps from a section of {size} steps")
    if count == 1:
        return [start]
    stride = (size - 1) / (count - 1)
    steps, position = [], 0.0
    for _ in range(count):  # GLIDE's rule: the stride accumulated in floating point, then rounded
        steps.append(start + round(position))
        position += stride
    return steps


def _ddim_stride(num_timesteps: int, desired: int) -> list[int]:
    """range(0, T, stride) for the integer stride that yields exactly `desired` steps."""
    for stride in range(1, num_timesteps + 1):
        steps = list(range(0, num_timesteps, stride))
        if len(steps) == desired:
            return steps
    raise ValueError(
        f"cannot create exactly {desired} steps from {num_timesteps} with an integer stride"
    )


def space_timesteps(num_timesteps: int, section_counts: str | Sequence[int]) -> list[int]:
    """Sorted original timesteps to keep.

    section_counts:
        "100" or [100]: 100 evenly strided steps over the whole process (0, 10, 20, ..., 989, 999).
        "10,10,3,2,2" or a list: the process is cut into equal sections (the first ones one step
            longer when T does not divide) and each is strided evenly with its count.
        "ddimN": range(0, T, stride) with the integer stride giving exactly N steps.
        "fast27": sections 10,10,3,2,2 with step T-1 replaced by T-3 (GLIDE upsampler).
        "" : every step.
    """
    if isinstance(section_counts, str):
        spec = section_counts.strip()
        if spec == "":
            return list(range(num_timesteps))
        if spec == "fast27":
            steps = space_timesteps(num_timesteps, FAST27_SECTIONS)
            steps.remove(num_timesteps - 1)
            return sorted({*steps, num_timesteps - 3})
        if spec.startswith("ddim"):
            try:
                desired = int(spec[len("ddim") :])
            except ValueError:
                raise ValueError(f"bad respacing {section_counts!r}: expected 'ddimN'") from None
            return _ddim_stride(num_timesteps, desired)
        try:
            counts = [int(part) for part in spec.split(",")]
        except ValueError:
            raise ValueError(
                f"bad respacing {section_counts!r}: expected '', 'N', 'N1,N2,...', 'ddimN' or 'fast27'"
            ) from None
    else:
        counts = [int(c) for c in section_counts]
    if not counts:
        raise ValueError("section_counts is empty")

    size_per, extra = divmod(num_timesteps, len(counts))
    steps: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        steps.extend(_evenly_strided(start, size, count))
        start += size
    return steps


class SpacedDiffusion(GaussianDiffusion):
    """A GaussianDiffusion over the kept original steps `use_timesteps` of `base_betas`.

    Step k of this diffusion is original timestep `timestep_map[k]`; every model call made through
    it (training losses, p_mean_variance, samplers) receives original timesteps.
    """

    def __init__(
        self, use_timesteps: Sequence[int], base_betas: np.ndarray, **parameterisation: Any
    ) -> None:
        kept = sorted(set(int(s) for s in use_timesteps))
        base_betas = np.asarray(base_betas, dtype=np.float64)
        if not kept:
            raise ValueError("use_timesteps is empty")
        if kept[0] < 0 or kept[-1] >= len(base_betas):
            raise ValueError(f"use_timesteps must lie in [0, {len(base_betas)})")
        alphas_cumprod = np.cumprod(1.0 - base_betas)
        kept_alpha_bar = alphas_cumprod[kept]
        previous = np.append(1.0, kept_alpha_bar[:-1])
        new_betas = 1.0 - kept_alpha_bar / previous
        self.original_num_steps = len(base_betas)
        super().__init__(new_betas, timestep_map=kept, **parameterisation)


def create_diffusion(
    steps: int,
    noise_schedule: str,
    timestep_respacing: str | Sequence[int] = "",
    prediction_type: str = "epsilon",
    low_res_residual: bool = False,
    sigma_data: float = 1.0,
) -> GaussianDiffusion:
    """The diffusion GLIDE uses: named schedule over `steps`, optionally respaced. Both come
    from the model (its file or config): there is no default schedule. ``prediction_type`` and
    ``low_res_residual``, ``sigma_data``: what the network predicts (parameterisation.py; GLIDE:
    epsilon).

    "" gives the full process; any other respacing (see `space_timesteps`) a SpacedDiffusion.
    """
    betas = get_named_beta_schedule(noise_schedule, steps)
    kinds = {
        "prediction_type": prediction_type,
        "low_res_residual": low_res_residual,
        "sigma_data": sigma_data,
    }
    if isinstance(timestep_respacing, str) and timestep_respacing.strip() == "":
        return GaussianDiffusion(betas, **kinds)
    return SpacedDiffusion(space_timesteps(steps, timestep_respacing), betas, **kinds)
