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
    steps = torch.arange(half, dtype=torch.float32, device=t.device)  # made on t's device: a
    freqs = torch.exp(-math.log(max_period) * steps / half)  # CPU tensor would bar CUDA graphs
    args = t.float()[:, None] * freqs[None]  # [B, half]
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


MAX_GROUPS, MIN_CHANNELS_PER_GROUP = 32, 4


def norm_groups(channels: int) -> int:
    """ADM's 32 groups, with at least 4 channels in each (ADM's narrowest models have 128
    channels: 32 groups of 4).

    A group of one channel would normalise away that channel's spatial mean, so a narrow network
    could not tell (nor predict) the per-channel mean of x_t: its epsilon misses the noise's mean
    colour and samples drift to a random colour cast. Every released GLIDE width (multiples of
    192) gets 32 groups, as in the released models.
    """
    for groups in range(min(MAX_GROUPS, channels), 0, -1):
        if channels % groups == 0 and channels // groups >= MIN_CHANNELS_PER_GROUP:
            return groups
    return 1


def normalization(channels: int) -> GroupNorm32:
    """ADM's normalization: GroupNorm (in float32) with :func:`norm_groups` groups."""
    return GroupNorm32(norm_groups(channels), channels)


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
