"""Small deterministic stand-ins for a GLIDE model: callables x_t, t -> [B, 2C, H, W]."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


class ToyModel(nn.Module):
    """eps = tanh(a x + t / 1000 + cond), v = tanh(b x - cond): smooth, depends on x, t and an
    optional per-example `cond` [B] keyword."""

    def __init__(self, a: float = 0.7, b: float = 0.3) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.b = nn.Parameter(torch.tensor(b))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        shift = t.to(x.dtype).reshape(-1, 1, 1, 1) / 1000.0
        if cond is not None:
            shift = shift + cond.to(x.dtype).reshape(-1, 1, 1, 1)
        c = -cond.to(x.dtype).reshape(-1, 1, 1, 1) if cond is not None else 0.0
        eps = torch.tanh(self.a * x + shift)
        v = torch.tanh(self.b * x + c)
        return torch.cat([eps, v], dim=1)


class RecordingModel:
    """Wraps a model and records every (x, t, kwargs) it is called with."""

    def __init__(self, model=None) -> None:
        self.model = model or ToyModel()
        self.calls: list[tuple[Tensor, Tensor, dict]] = []

    def __call__(self, x: Tensor, t: Tensor, **kwargs) -> Tensor:
        self.calls.append((x.clone(), t.clone(), dict(kwargs)))
        return self.model(x, t, **kwargs)

    @property
    def timesteps(self) -> list[int]:
        """The (first-example) timestep of every call, in call order."""
        return [int(t[0]) for _, t, _ in self.calls]


def oracle_model(x0: Tensor, original_alphas_cumprod: np.ndarray):
    """A model that knows the data point x0: it predicts the exact noise of x_t given x0, using
    alpha_bar of the ORIGINAL schedule at the timesteps it receives; v = 0."""
    table = torch.as_tensor(original_alphas_cumprod, dtype=torch.float64)

    def model(x: Tensor, t: Tensor, **_) -> Tensor:
        alpha_bar = table[t].to(x.dtype).reshape(-1, 1, 1, 1)
        eps = (x - alpha_bar.sqrt() * x0) / (1.0 - alpha_bar).sqrt()
        return torch.cat([eps, torch.zeros_like(x)], dim=1)

    return model
