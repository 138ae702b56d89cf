"""GLIDE's text transformer: pre-LayerNorm residual blocks (attention, GELU MLP at 4x width),
bidirectional, no attention mask. Names follow the released checkpoints
(resblocks.N.attn.c_qkv / c_proj, mlp.c_fc / c_proj, ln_1, ln_2).

Token / positional / padding embeddings and the final LayerNorm live on the GLIDE model itself
(their checkpoint keys are top-level); see glide_unet.Text2ImUNet.encode_text.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.nn_blocks import CheckpointedModule, LayerNorm32


class MultiheadAttention(nn.Module):
    """c_qkv output is laid out per head: [heads, (q|k|v), head_ch] (released layout)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"xf_width {width} not divisible by xf_heads {heads}")
        self.heads = heads
        self.c_qkv = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, W] -> [B, L, W]
        b, n, w = x.shape
        ch = w // self.heads
        qkv = self.c_qkv(x).reshape(b, n, self.heads, 3 * ch)  # [B, L, heads, 3ch]
        q, k, v = qkv.transpose(1, 2).split(ch, dim=-1)  # each [B, heads, L, ch]
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, L, ch]
        return self.c_proj(out.transpose(1, 2).reshape(b, n, w))


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, W] -> [B, L, W]
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(CheckpointedModule):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm32(width)
        self.mlp = MLP(width)
        self.ln_2 = LayerNorm32(width)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, W] -> [B, L, W]
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Linear weights N(0, 0.02), residual output projections scaled by 1/sqrt(2 * layers)
        (GPT-2 style), biases zero; LayerNorms at identity."""
        proj_std = 0.02 * (2 * max(len(self.resblocks), 1)) ** -0.5
        for block in self.resblocks:
            for lin, std in (
                (block.attn.c_qkv, 0.02),
                (block.attn.c_proj, proj_std),
                (block.mlp.c_fc, 0.02),
                (block.mlp.c_proj, proj_std),
            ):
                nn.init.normal_(lin.weight, std=std)
                nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, W] -> [B, L, W]
        for block in self.resblocks:
            x = block(x)
        return x
