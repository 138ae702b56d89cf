"""The noised CLIP of GLIDE's CLIP guidance: a CLIP whose image encoder reads (x_t, t).

Built from clip-anytorch's blocks (``clip.model.Transformer``, its pre-LayerNorm residual
attention blocks and ``LayerNorm``). The image tower is CLIP's vision transformer with one
change: where CLIP prepends a learned class token, this one prepends a learned embedding of the
diffusion timestep t (an index of the original 1000-step schedule), so one network scores images
at every noise level (GLIDE Sec. 2.2). The text tower is CLIP's causal transformer over
``pipeline.text.clip_tokens`` rows, read at the <|endoftext|> position. Parameter names follow
OpenAI CLIP's state dict (``visual.conv1``, ``transformer.resblocks``, ``text_projection``,
``logit_scale``), with ``visual.timestep_embedding`` in place of ``visual.class_embedding``.

A clean CLIP (the evaluation CLIP trained here) is the same network always called at t = 0.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn

CLIP_KEYS = (
    "image_size",
    "patch_size",
    "width",
    "layers",
    "heads",
    "embed_dim",
    "text_ctx",
    "text_width",
    "text_layers",
    "text_heads",
    "vocab_size",
    "diffusion_steps",
)
ARCHITECTURE = "noised_clip"
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps exp(logit_scale) at 100


def _clip_blocks() -> Any:
    """clip.model, imported without the deprecation warning its package __init__ triggers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import clip.model

    return clip.model


def check_clip_config(config: dict[str, Any]) -> None:
    """Raise ValueError naming the first setting a NoisedCLIP cannot be built with."""
    missing = [key for key in CLIP_KEYS if key not in config]
    if missing:
        raise ValueError(f"noised CLIP settings are missing {missing}")
    unknown = sorted(set(config) - set(CLIP_KEYS))
    if unknown:
        raise ValueError(f"unknown noised CLIP settings {unknown}; expected {list(CLIP_KEYS)}")
    for key in CLIP_KEYS:
        if int(config[key]) < 1:
            raise ValueError(f"noised_clip.{key} must be positive, got {config[key]}")
    if config["image_size"] % config["patch_size"]:
        raise ValueError(
            f"noised_clip.image_size {config['image_size']} is not a multiple of "
            f"patch_size {config['patch_size']}"
        )
    for width, heads in (("width", "heads"), ("text_width", "text_heads")):
        if config[width] % config[heads]:
            raise ValueError(
                f"noised_clip.{width} {config[width]} is not divisible by {heads} {config[heads]}"
            )
    if config["text_ctx"] < 2:
        raise ValueError("noised_clip.text_ctx must hold at least the start and end tokens")


class NoisedImageEncoder(nn.Module):
    """ViT over patches of x_t [B, 3, H, W]; a timestep embedding takes the class token's place."""

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        out: int,
        steps: int,
    ) -> None:
        super().__init__()
        blocks = _clip_blocks()
        self.input_resolution = image_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.timestep_embedding = nn.Embedding(steps, width)
        nn.init.normal_(self.timestep_embedding.weight, std=scale)
        grid = image_size // patch_size
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = blocks.LayerNorm(width)
        self.transformer = blocks.Transformer(width, layers, heads)
        self.ln_post = blocks.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, out))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.shape[-1] != self.input_resolution or x.shape[-2] != self.input_resolution:
            raise ValueError(
                f"the noised CLIP reads {self.input_resolution}x{self.input_resolution} images, "
                f"got {tuple(x.shape[-2:])}"
            )
        patches = self.conv1(x).flatten(2).transpose(1, 2)  # [B, grid^2, width]
        first = self.timestep_embedding(t.long().to(x.device))[:, None].to(patches.dtype)
        h = torch.cat([first, patches], dim=1) + self.positional_embedding.to(patches.dtype)
        h = self.transformer(self.ln_pre(h).permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(h[:, 0]) @ self.proj


class NoisedCLIP(nn.Module):
    """CLIP with a timestep-aware image encoder: ``encode_image(x_t, t)``, ``encode_text(tokens)``
    and a learned ``logit_scale`` (log of the inverse temperature, initialised at log(1/0.07))."""

    def __init__(self, **config: Any) -> None:
        super().__init__()
        check_clip_config(config)
        self.config = {key: int(config[key]) for key in CLIP_KEYS}
        c = self.config
        blocks = _clip_blocks()
        self.visual = NoisedImageEncoder(
            c["image_size"],
            c["patch_size"],
            c["width"],
            c["layers"],
            c["heads"],
            c["embed_dim"],
            c["diffusion_steps"],
        )
        causal = torch.full((c["text_ctx"], c["text_ctx"]), float("-inf")).triu_(1)
        self.transformer = blocks.Transformer(
            c["text_width"], c["text_layers"], c["text_heads"], attn_mask=causal
        )
        self.token_embedding = nn.Embedding(c["vocab_size"], c["text_width"])
        self.positional_embedding = nn.Parameter(torch.empty(c["text_ctx"], c["text_width"]))
        self.ln_final = blocks.LayerNorm(c["text_width"])
        self.text_projection = nn.Parameter(torch.empty(c["text_width"], c["embed_dim"]))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self._initialise()

    def _initialise(self) -> None:
        """CLIP's initialisation of the text tower; the residual projections of both towers
        are scaled down with depth."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=self.config["text_width"] ** -0.5)
        for tower in (self.transformer, self.visual.transformer):
            width, depth = tower.width, tower.layers
            for block in tower.resblocks:
                nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5)
                nn.init.normal_(block.attn.out_proj.weight, std=width**-0.5 * (2 * depth) ** -0.5)
                nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
                nn.init.normal_(block.mlp.c_proj.weight, std=width**-0.5 * (2 * depth) ** -0.5)

    @property
    def image_size(self) -> int:
        return self.config["image_size"]

    @property
    def text_ctx(self) -> int:
        return self.config["text_ctx"]

    def encode_image(self, x_t: Tensor, t: Tensor) -> Tensor:
        """x_t [B, 3, H, W] (noised image, model range), t [B] original timesteps -> [B, D]."""
        if t.ndim != 1 or t.shape[0] != x_t.shape[0]:
            raise ValueError(f"t must hold one timestep per image, got {tuple(t.shape)}")
        if bool((t < 0).any()) or bool((t >= self.config["diffusion_steps"]).any()):
            raise ValueError(
                f"timesteps must be in [0, {self.config['diffusion_steps']}), got {t.tolist()}"
            )
        return self.visual(x_t, t)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """tokens [B, text_ctx] from ``clip_text_tokens`` -> [B, D], read at <|endoftext|>."""
        if tokens.ndim != 2 or tokens.shape[1] > self.text_ctx:
            raise ValueError(f"tokens must be [B, <= {self.text_ctx}], got {tuple(tokens.shape)}")
        n = tokens.shape[1]
        h = self.token_embedding(tokens) + self.positional_embedding[:n]
        h = self.transformer(h.permute(1, 0, 2)).permute(1, 0, 2)
        h = self.ln_final(h)
        return (
            h[torch.arange(h.shape[0], device=h.device), tokens.argmax(dim=-1)]
            @ self.text_projection
        )

    def clamped_logit_scale(self) -> Tensor:
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE)

    def logits(self, x_t: Tensor, t: Tensor, tokens: Tensor) -> Tensor:
        """[B_images, B_texts] = exp(logit_scale) * cosine similarities."""
        z_image = nn.functional.normalize(self.encode_image(x_t, t), dim=-1)
        z_text = nn.functional.normalize(self.encode_text(tokens), dim=-1)
        return self.clamped_logit_scale().exp() * z_image @ z_text.T


def create_noised_clip(**config: Any) -> NoisedCLIP:
    return NoisedCLIP(**config)
