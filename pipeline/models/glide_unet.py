"""GLIDE's text-conditional UNet and its variants (super-resolution, inpainting, instruction
editing, combinations).

The caption is encoded by a transformer once per forward (or once per sampling call through
`encode_text`): its last-position output, projected to 4*num_channels, is added to the timestep
embedding; the whole sequence is attended to by every attention layer of the UNet.

Input channels, in this order (the released checkpoints' order):
    x_t (3) | inpaint_image * inpaint_mask (3), inpaint_mask (1) if inpaint
        | source_image (3) if instruct (InstructPix2Pix: the image to edit)
        | upsampled low_res (3) if super_res
Output: 6 channels = epsilon (3) + variance interpolation v (3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.nn_blocks import LayerNorm32, timestep_embedding
from pipeline.models.text_transformer import Transformer
from pipeline.models.unet import UNetModel

# GLIDE's defaults by image size; 32 and 16 are this project's choices for small experiments.
DEFAULT_CHANNEL_MULT = {
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
    32: (1, 2, 2, 2),
    16: (1, 2, 2),
}
IMAGE_CHANNELS, OUT_CHANNELS = 3, 6


def default_channel_mult(image_size: int) -> tuple[int, ...]:
    if image_size not in DEFAULT_CHANNEL_MULT:
        raise ValueError(
            f"no default channel_mult for image_size {image_size} "
            f"(known: {sorted(DEFAULT_CHANNEL_MULT)}); pass channel_mult explicitly"
        )
    return DEFAULT_CHANNEL_MULT[image_size]


def input_layout(inpaint: bool, super_res: bool, instruct: bool = False) -> list[tuple[str, int]]:
    """The input channels' segments in order: (name, channel count)."""
    segments = [("x_t", IMAGE_CHANNELS)]
    segments += [("inpaint", IMAGE_CHANNELS + 1)] if inpaint else []
    segments += [("source_image", IMAGE_CHANNELS)] if instruct else []
    return segments + ([("low_res", IMAGE_CHANNELS)] if super_res else [])


def input_channels(inpaint: bool, super_res: bool, instruct: bool = False) -> int:
    return sum(n for _, n in input_layout(inpaint, super_res, instruct))


def _unet_arguments(config: dict) -> dict:
    """The ADM UNet's arguments for a GLIDE config (checkpointing is set once the text
    transformer exists)."""
    return dict(
        in_channels=input_channels(config["inpaint"], config["super_res"], config["instruct"]),
        model_channels=config["num_channels"],
        out_channels=OUT_CHANNELS,
        num_res_blocks=config["num_res_blocks"],
        attention_ds=tuple(config["image_size"] // r for r in config["attention_resolutions"]),
        dropout=config["dropout"],
        channel_mult=config["channel_mult"],
        num_heads=config["num_heads"],
        num_head_channels=config["num_head_channels"],
        num_heads_upsample=config["num_heads_upsample"],
        use_scale_shift_norm=config["use_scale_shift_norm"],
        resblock_updown=config["resblock_updown"],
        use_checkpoint=False,
        encoder_channels=config["xf_width"] or None,
    )


class Text2ImUNet(UNetModel):
    """All keyword arguments use GLIDE's names; build through factory.create_glide_model, which
    validates them and fills defaults. `self.config` keeps the resolved arguments."""

    def __init__(
        self,
        *,
        image_size: int,
        num_channels: int,
        num_res_blocks: int,
        channel_mult: tuple[int, ...],
        attention_resolutions: tuple[int, ...],
        num_heads: int,
        num_head_channels: int,
        num_heads_upsample: int,
        dropout: float,
        text_ctx: int,
        xf_width: int,
        xf_layers: int,
        xf_heads: int,
        xf_final_ln: bool,
        xf_padding: bool,
        use_scale_shift_norm: bool,
        resblock_updown: bool,
        use_checkpoint: bool,
        inpaint: bool,
        super_res: bool,
        vocab_size: int,
        noise_cond_aug: bool = False,
        instruct: bool = False,
    ):
        channel_mult = tuple(channel_mult) or default_channel_mult(image_size)
        self.config = dict(
            image_size=image_size, num_channels=num_channels, num_res_blocks=num_res_blocks,
            channel_mult=channel_mult, attention_resolutions=tuple(attention_resolutions),
            num_heads=num_heads, num_head_channels=num_head_channels,
            num_heads_upsample=num_heads_upsample, dropout=dropout, text_ctx=text_ctx,
            xf_width=xf_width, xf_layers=xf_layers, xf_heads=xf_heads, xf_final_ln=xf_final_ln,
            xf_padding=xf_padding, use_scale_shift_norm=use_scale_shift_norm,
            resblock_updown=resblock_updown, use_checkpoint=use_checkpoint, inpaint=inpaint,
            super_res=super_res, vocab_size=vocab_size, noise_cond_aug=noise_cond_aug,
            instruct=instruct,
        )  # fmt: skip
        super().__init__(**_unet_arguments(self.config))
        self.image_size, self.text_ctx, self.xf_width = image_size, text_ctx, xf_width
        self.xf_padding, self.inpaint, self.super_res = xf_padding, inpaint, super_res
        self.noise_cond_aug, self.instruct = noise_cond_aug, instruct
        if xf_width:
            self._build_text_encoder(xf_layers, xf_heads, xf_final_ln, vocab_size, num_channels)
        if noise_cond_aug:  # Imagen's augmentation level, embedded like a second timestep
            self.aug_embed = nn.Sequential(
                nn.Linear(num_channels, 4 * num_channels),
                nn.SiLU(),
                nn.Linear(4 * num_channels, 4 * num_channels),
            )
        self.set_checkpointing(use_checkpoint)

    def _build_text_encoder(
        self, layers: int, heads: int, final_ln: bool, vocab_size: int, num_channels: int
    ) -> None:
        """The caption transformer, its embeddings and the projection into the timestep
        embedding (``self.xf_width`` wide, ``self.text_ctx`` tokens)."""
        width, ctx = self.xf_width, self.text_ctx
        self.transformer = Transformer(width, layers, heads)
        self.final_ln = LayerNorm32(width) if final_ln else None
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(ctx, width))
        if self.xf_padding:
            self.padding_embedding = nn.Parameter(torch.empty(ctx, width))
        self.transformer_proj = nn.Linear(width, 4 * num_channels)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if self.xf_padding:
            nn.init.normal_(self.padding_embedding, std=0.01)

    TEXT_ENCODER_PREFIXES = (
        "token_embedding.",
        "positional_embedding",
        "padding_embedding",
        "transformer.",
        "final_ln.",
        "transformer_proj.",
    )

    def text_encoder_parameters(self) -> list[nn.Parameter]:
        """The parameters `encode_text` uses (embeddings, transformer, final LayerNorm, the
        projection into the timestep embedding); empty without a text transformer."""
        return [p for n, p in self.named_parameters() if n.startswith(self.TEXT_ENCODER_PREFIXES)]

    def encode_text(
        self, tokens: torch.Tensor, mask: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """tokens LongTensor[B, text_ctx], mask BoolTensor[B, text_ctx] ->
        {"xf_proj": [B, 4*num_channels], "xf_out": [B, xf_width, text_ctx]}."""
        if not self.xf_width:
            raise ValueError("this model has no text transformer (xf_width=0)")
        if tokens.ndim != 2 or tokens.shape[1] != self.text_ctx:
            raise ValueError(f"tokens must be [B, {self.text_ctx}], got {list(tokens.shape)}")
        xf_in = self.token_embedding(tokens.long()) + self.positional_embedding[None]  # [B, L, W]
        if self.xf_padding:
            if mask is None or mask.shape != tokens.shape:
                raise ValueError(f"mask [B, {self.text_ctx}] is required with xf_padding")
            pad = self.padding_embedding[None].to(xf_in.dtype)  # [1, L, W]
            xf_in = torch.where(mask.bool()[..., None], xf_in, pad)
        xf_out = self.transformer(xf_in)  # [B, L, W]
        if self.final_ln is not None:
            xf_out = self.final_ln(xf_out)
        xf_proj = self.transformer_proj(xf_out[:, -1])  # [B, 4C]
        return {"xf_proj": xf_proj, "xf_out": xf_out.permute(0, 2, 1)}  # xf_out [B, W, L]

    def _model_input(self, x, low_res, inpaint_image, inpaint_mask, source_image) -> torch.Tensor:
        """Concatenate x_t [B, 3, H, W] with the variant's conditioning channels."""
        parts = [x]
        if self.inpaint:
            if inpaint_image is None or inpaint_mask is None:
                raise ValueError("an inpainting model needs inpaint_image and inpaint_mask")
            if inpaint_mask.ndim != 4 or inpaint_mask.shape[1] != 1:
                raise ValueError(
                    f"inpaint_mask must be [B, 1, H, W], got {list(inpaint_mask.shape)}"
                )
            parts += [inpaint_image * inpaint_mask, inpaint_mask]  # mask: 1 = keep, 0 = generate
        elif inpaint_image is not None or inpaint_mask is not None:
            raise ValueError("inpaint_image/inpaint_mask given to a model built with inpaint=False")
        if self.instruct:
            if source_image is None or source_image.shape != x.shape:
                shape = None if source_image is None else list(source_image.shape)
                raise ValueError(
                    f"an instruct model needs source_image {list(x.shape)}, got {shape}"
                )
            parts.append(source_image)  # zeros: the image condition dropped
        elif source_image is not None:
            raise ValueError("source_image given to a model built with instruct=False")
        if self.super_res:
            if low_res is None:
                raise ValueError("a super-resolution model needs low_res [B, 3, h, w]")
            upsampled = F.interpolate(
                low_res, size=x.shape[-2:], mode="bilinear", align_corners=False
            )  # [B, 3, H, W]
            parts.append(upsampled)
        elif low_res is not None:
            raise ValueError("low_res given to a model built with super_res=False")
        return torch.cat([p.to(x.dtype) for p in parts], dim=1)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        tokens: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        text_outputs: dict[str, torch.Tensor] | None = None,
        low_res: torch.Tensor | None = None,
        inpaint_image: torch.Tensor | None = None,
        inpaint_mask: torch.Tensor | None = None,
        aug_level: torch.Tensor | None = None,
        source_image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, 3, H, W], timesteps [B] -> [B, 6, H, W].

        Text: tokens/mask (encoded here) or text_outputs from `encode_text` (encode once per
        sampling call). The unconditional input is the empty caption (pipeline.text.
        empty_caption_tokens). aug_level [B] (timestep units) only with noise_cond_aug.
        """
        h = self._model_input(
            x, low_res, inpaint_image, inpaint_mask, source_image
        )  # [B, C_in, H, W]
        cond_emb = encoder_out = None
        if self.xf_width:
            if text_outputs is None:
                if tokens is None:
                    raise ValueError(
                        "pass tokens and mask (the empty caption for unconditional) or text_outputs"
                    )
                text_outputs = self.encode_text(tokens, mask)
            elif tokens is not None:
                raise ValueError("pass either tokens/mask or text_outputs, not both")
            cond_emb, encoder_out = text_outputs["xf_proj"], text_outputs["xf_out"]
            if cond_emb.shape[0] != x.shape[0]:
                raise ValueError(f"text batch {cond_emb.shape[0]} != image batch {x.shape[0]}")
        if self.noise_cond_aug:
            if aug_level is None:
                raise ValueError("a noise_cond_aug model needs aug_level [B]")
            aug = self.aug_embed(timestep_embedding(aug_level, self.model_channels))  # [B, 4C]
            cond_emb = aug if cond_emb is None else cond_emb + aug.to(cond_emb.dtype)
        elif aug_level is not None:
            raise ValueError("aug_level given to a model built with noise_cond_aug=False")
        return super().forward(h, timesteps, cond_emb, encoder_out)
