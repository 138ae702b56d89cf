"""Text-to-image sampling with classifier-free guidance (GLIDE Sec. 2.3).

One forward pass per step over the batch [conditional; unconditional] (x_t duplicated); the text
transformer runs once per sampling call, not once per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pipeline.diffusion import (
    ancestral_sample_loop,
    classifier_free_guidance_model,
    create_diffusion,
    ddim_sample_loop,
)
from pipeline.text import Tokenizer, empty_caption_tokens, tokenize_batch


def to_uint8(images: Tensor) -> Tensor:
    """[B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3] (8-bit quantisation, as GLIDE saves)."""
    scaled = ((images.float() + 1.0) * 127.5).round().clamp(0, 255)
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu()


def is_ddim(steps: str) -> bool:
    """ "ddimN" respacings use the DDIM sampler; every other respacing the ancestral sampler."""
    return str(steps).startswith("ddim")


@torch.no_grad()
def sample_text_to_image(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    *,
    guidance_scale: float = 3.0,
    steps: str = "100",
    diffusion_steps: int = 1000,
    noise_schedule: str = "squaredcos_cap_v2",
    seed: int = 0,
    batch_size: int = 0,
    device: torch.device | str | None = None,
    threshold: float | None = None,
    progress: bool = False,
) -> Tensor:
    """Sample one image per prompt; returns uint8 [N, H, W, 3].

    guidance_scale 1 samples the conditional model alone (no unconditional half). ``steps`` is a
    respacing ("100", "fast27", "ddim50", "10,10,3,2,2"). Prompts are processed in batches of
    ``batch_size`` (0 = all at once); the same seed gives the same images for the same batching.
    """
    if not prompts:
        raise ValueError("no prompts given")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    diffusion = create_diffusion(diffusion_steps, noise_schedule, steps)
    loop = ddim_sample_loop if is_ddim(steps) else ancestral_sample_loop
    size = int(model.image_size)
    text_ctx = int(model.text_ctx)
    batch_size = batch_size or len(prompts)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    outputs = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        tokens, mask = tokenize_batch(tokenizer, chunk, text_ctx)
        guided = float(guidance_scale) != 1.0
        if guided:
            empty_tokens, empty_mask = empty_caption_tokens(text_ctx, len(chunk))
            tokens = torch.cat([tokens, empty_tokens])
            mask = torch.cat([mask, empty_mask])
        text_outputs = model.encode_text(tokens.to(device), mask.to(device))
        model_fn = classifier_free_guidance_model(model, guidance_scale) if guided else model
        samples = loop(
            model_fn,
            diffusion,
            (tokens.shape[0], 3, size, size),
            generator=generator,
            model_kwargs={"text_outputs": text_outputs},
            threshold=threshold,
            progress=progress,
            device=device,
        )
        outputs.append(to_uint8(samples[: len(chunk)]))
    return torch.cat(outputs)
