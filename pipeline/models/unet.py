"""ADM UNet (Dhariwal & Nichol 2021) with attention layers that can also attend to an encoder
sequence (GLIDE's text): ResBlocks with scale-shift norm, resblock up/down-sampling.

Module names follow the released GLIDE/ADM checkpoints (input_blocks.N.M..., in_layers,
emb_layers, out_layers, skip_connection, op, norm, qkv, encoder_kv, proj_out, middle_block,
output_blocks, out), so those state dicts load with strict=True.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.nn_blocks import (
    CheckpointedModule,
    normalization,
    timestep_embedding,
    zero_module,
)


class Upsample(nn.Module):
    """Nearest x2, then an optional 3x3 conv ('conv')."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.use_conv = use_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C, 2H, 2W]
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """Strided 3x3 conv or 2x2 average pool ('op')."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = (
            nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C, H/2, W/2]
        return self.op(x)


class ResBlock(CheckpointedModule):
    """GroupNorm-SiLU-conv, + timestep embedding (as scale and shift of the second norm when
    use_scale_shift_norm, else added), GroupNorm-SiLU-dropout-zero conv, + skip.
    With up/down, both branches are resampled (no parameters) inside the block."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = True,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels),
        )
        self.out_layers = nn.Sequential(
            normalization(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        if out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # x [B, C, H, W], emb [B, E] -> [B, C_out, H', W']
        if self.updown:
            h = self.in_layers[:-1](x)
            h, x = self.h_upd(h), self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]  # [B, 2*C_out or C_out, 1, 1]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(CheckpointedModule):
    """Self-attention over pixels; with encoder_channels, the encoder sequence is mapped by a 1x1
    conv (encoder_kv) to keys/values placed in front of the pixels' keys/values. Queries come
    from pixels only. qkv channels are laid out per head: [heads, (q|k|v), head_ch], encoder_kv
    as [heads, (k|v), head_ch] (the released checkpoints' layout)."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        encoder_channels: int | None = None,
    ):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(
                    f"channels {channels} not divisible by num_head_channels {num_head_channels}"
                )
            self.num_heads = channels // num_head_channels
        if channels % self.num_heads:
            raise ValueError(f"channels {channels} not divisible by num_heads {self.num_heads}")
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        if encoder_channels is not None:
            self.encoder_kv = nn.Conv1d(encoder_channels, 2 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def _forward(self, x: torch.Tensor, encoder_out: torch.Tensor | None = None) -> torch.Tensor:
        # x [B, C, H, W], encoder_out [B, C_enc, L] -> [B, C, H, W]
        b, c, *spatial = x.shape
        heads = self.num_heads
        pixels = self.norm(x).flatten(2).transpose(1, 2)  # [B, T, C]; a view if channels_last
        q, k, v = _heads(_pointwise(self.qkv, pixels), heads, 3)  # each [B, heads, T, ch]
        if encoder_out is not None:
            text = encoder_out.transpose(1, 2).to(pixels.dtype)  # [B, L, C_enc]
            ek, ev = _heads(_pointwise(self.encoder_kv, text), heads, 2)  # [B, heads, L, ch]
            k, v = torch.cat([ek, k], dim=2), torch.cat([ev, v], dim=2)  # [B, heads, L+T, ch]
        # q/k/v have unit stride in ch: the fused (flash, memory-efficient, cuDNN) kernels take
        # them; a transposed layout would fall back to the math kernel and its [T, L+T] matrix.
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, T, ch]
        out = _pointwise(self.proj_out, out.transpose(1, 2).reshape(b, -1, c))  # [B, T, C]
        return x + out.transpose(1, 2).reshape(b, c, *spatial)


def _pointwise(conv: nn.Conv1d, tokens: torch.Tensor) -> torch.Tensor:
    """A 1x1 Conv1d applied to [B, N, C_in] token rows as a linear layer: [B, N, C_out]."""
    return F.linear(tokens, conv.weight.squeeze(-1), conv.bias)


def _heads(rows: torch.Tensor, heads: int, parts: int) -> tuple[torch.Tensor, ...]:
    """[B, N, heads * parts * ch] laid out per head as [heads, parts, ch] (the released layout)
    -> ``parts`` tensors [B, heads, N, ch], each with unit stride in ch."""
    b, n, width = rows.shape
    per_head = rows.reshape(b, n, heads, width // heads).transpose(1, 2)  # [B, heads, N, parts*ch]
    return per_head.split(width // (heads * parts), dim=-1)


class TimestepSequential(nn.Sequential):
    """Sequential that hands emb to ResBlocks and the encoder sequence to AttentionBlocks."""

    def forward(self, x, emb, encoder_out=None):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, AttentionBlock):
                x = layer(x, encoder_out)
            else:
                x = layer(x)
        return x


@dataclass(frozen=True)
class _Layout:
    """How a UNet's levels are laid out, and its block builders (``res``, ``attn``)."""

    model_channels: int
    num_res_blocks: int
    attention_ds: tuple[int, ...]
    channel_mult: tuple[int, ...]
    resblock_updown: bool
    conv_resample: bool
    res: Callable[..., nn.Module]
    attn: Callable[..., nn.Module]


class UNetModel(nn.Module):
    """ADM UNet. attention_ds holds downsample factors (image_size // resolution) with attention.

    forward(x [B, in_channels, H, W], timesteps [B], cond_emb [B, 4*model_channels] | None,
            encoder_out [B, encoder_channels, L] | None) -> [B, out_channels, H, W]
    """

    def __init__(
        self,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_ds: tuple[int, ...],
        dropout: float = 0.0,
        channel_mult: tuple[int, ...] = (1, 2, 4, 8),
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = True,
        use_checkpoint: bool = False,
        encoder_channels: int | None = None,
        conv_resample: bool = True,
    ):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.model_channels = model_channels
        emb_ch = 4 * model_channels
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch)
        )

        def res(cin, cout=None, **kw):
            return ResBlock(cin, emb_ch, dropout, cout, use_scale_shift_norm, **kw)

        def attn(c, heads):
            return AttentionBlock(c, heads, num_head_channels, encoder_channels)

        layout = _Layout(model_channels, num_res_blocks, tuple(attention_ds), tuple(channel_mult),
                         resblock_updown, conv_resample, res, attn)  # fmt: skip
        ch, skip_chans, ds = self._build_input_blocks(layout, in_channels, num_heads)
        self.middle_block = TimestepSequential(res(ch), attn(ch, num_heads), res(ch))
        ch = self._build_output_blocks(layout, ch, skip_chans, ds, num_heads_upsample)
        self.out = nn.Sequential(
            normalization(ch), nn.SiLU(), zero_module(nn.Conv2d(ch, out_channels, 3, padding=1))
        )
        self.set_checkpointing(use_checkpoint)

    def _build_input_blocks(
        self, layout: _Layout, in_channels: int, num_heads: int
    ) -> tuple[int, list[int], int]:
        """The encoder half: per level ``num_res_blocks`` res blocks (with attention at the
        attention resolutions), then a downsample. Returns (channels, skip channels, ds)."""
        ch = int(layout.channel_mult[0] * layout.model_channels)
        self.input_blocks = nn.ModuleList(
            [TimestepSequential(nn.Conv2d(in_channels, ch, 3, padding=1))]
        )
        skip_chans, ds = [ch], 1
        for level, mult in enumerate(layout.channel_mult):
            for _ in range(layout.num_res_blocks):
                layers = [layout.res(ch, mult * layout.model_channels)]
                ch = mult * layout.model_channels
                if ds in layout.attention_ds:
                    layers.append(layout.attn(ch, num_heads))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_chans.append(ch)
            if level != len(layout.channel_mult) - 1:
                down = (
                    layout.res(ch, down=True)
                    if layout.resblock_updown
                    else Downsample(ch, layout.conv_resample)
                )
                self.input_blocks.append(TimestepSequential(down))
                skip_chans.append(ch)
                ds *= 2
        return ch, skip_chans, ds

    def _build_output_blocks(
        self, layout: _Layout, ch: int, skip_chans: list[int], ds: int, num_heads: int
    ) -> int:
        """The decoder half, consuming the skip connections in reverse; returns its channels."""
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(layout.channel_mult))[::-1]:
            for i in range(layout.num_res_blocks + 1):
                layers = [layout.res(ch + skip_chans.pop(), mult * layout.model_channels)]
                ch = mult * layout.model_channels
                if ds in layout.attention_ds:
                    layers.append(layout.attn(ch, num_heads))
                if level and i == layout.num_res_blocks:
                    layers.append(
                        layout.res(ch, up=True)
                        if layout.resblock_updown
                        else Upsample(ch, layout.conv_resample)
                    )
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))
        return ch

    def set_checkpointing(self, enabled: bool) -> None:
        """Gradient checkpointing of every res/attention block (and text transformer block)."""
        for m in self.modules():
            if isinstance(m, CheckpointedModule):
                m.use_checkpoint = bool(enabled)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        cond_emb: torch.Tensor | None = None,
        encoder_out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))  # [B, 4C]
        if cond_emb is not None:
            emb = emb + cond_emb.to(emb.dtype)
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb, encoder_out)
            hs.append(h)
        h = self.middle_block(h, emb, encoder_out)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb, encoder_out)
        return self.out(h)  # [B, out_channels, H, W]
