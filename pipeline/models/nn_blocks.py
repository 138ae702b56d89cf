"""Small building blocks shared by the UNet and the text transformer."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps.

    t [B] -> [B, dim] = [cos(t * f_0..f_{h-1}), sin(t * f_0..f_{h-1})], f_i = max_period^(-i/h),
    h = dim // 2 (cos first, as ADM); an odd dim gets one zero column. Always float32.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs.to(t.device)[None]  # [B, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # [B, 2*half]
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 (also under autocast / bf16), cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            w = None if self.weight is None else self.weight.float()
            b = None if self.bias is None else self.bias.float()
            y = F.group_norm(x.float(), self.num_groups, w, b, self.eps)
        return y.to(x.dtype)


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32, cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            w = None if self.weight is None else self.weight.float()
            b = None if self.bias is None else self.bias.float()
            y = F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)
        return y.to(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    """ADM's normalization: 32 groups (fewer when channels is small and not a multiple of 32)."""
    groups = math.gcd(32, channels)
    return GroupNorm32(groups, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of a module (output layers start as the identity of the residual)."""
    for p in module.parameters():
        p.detach().zero_()
    return module


class CheckpointedModule(nn.Module):
    """A module whose forward may recompute activations in backward (gradient checkpointing,
    non-reentrant). Subclasses implement `_forward`; `use_checkpoint` switches it on."""

    use_checkpoint: bool = False

    def forward(self, *args):
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, *args, use_reentrant=False)
        return self._forward(*args)

    def _forward(self, *args):  # pragma: no cover - abstract
        raise NotImplementedError
