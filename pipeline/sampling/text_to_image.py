"""Text-to-image sampling with classifier-free guidance (GLIDE Sec. 2.3).

One forward pass per step over the batch [conditional; unconditional] (x_t duplicated); the text
transformer runs once per sampling call, not once per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

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


def _batch_input(name: str, value: Tensor, start: int, count: int, total: int) -> Tensor:
    """The rows of a per-prompt input for the prompts ``start:start+count`` (a batch-1 input is
    repeated)."""
    if value.shape[0] == 1:
        return value.expand(count, *value.shape[1:])
    if value.shape[0] != total:
        raise ValueError(f"{name} has batch {value.shape[0]}; expected 1 or {total} (one a prompt)")
    return value[start : start + count]


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
    image_kwargs: dict[str, Tensor] | None = None,
    denoised_fn: Callable[[Tensor], Tensor] | None = None,
    as_float: bool = False,
    init_noise_scale: float = 1.0,
    make_cond_fn: Callable[[list[str]], Callable[..., Tensor]] | None = None,
) -> Tensor:
    """Sample one image per prompt; returns uint8 [N, H, W, 3].

    guidance_scale 1 samples the conditional model alone (no unconditional half). ``steps`` is a
    respacing ("100", "fast27", "ddim50", "10,10,3,2,2"). Prompts are processed in batches of
    ``batch_size`` (0 = all at once); the same seed gives the same images for the same batching.

    ``image_kwargs``: extra model inputs with batch size 1 (e.g. ``inpaint_image`` [1, 3, H, W],
    ``inpaint_mask`` [1, 1, H, W]), repeated over the batch, or one per prompt (e.g. an
    upsampler's ``low_res`` [N, 3, h, w]). ``denoised_fn`` post-processes
    every x0 prediction (e.g. pastes the known region). ``as_float`` returns the samples in
    [-1, 1] as float [N, 3, H, W] instead. ``init_noise_scale``: x_T = scale * noise (the
    sampling temperature; GLIDE's upsampler uses 0.997). ``make_cond_fn(prompts)`` returns
    the sampler's gradient hook for a batch of prompts (CLIP guidance, ``clip_guided.py``); it
    needs ``guidance_scale`` 1 (no doubled classifier-free batch).
    """
    if not prompts:
        raise ValueError("no prompts given")
    if make_cond_fn is not None and float(guidance_scale) != 1.0:
        raise ValueError("a cond_fn (CLIP guidance) needs guidance_scale 1 (no classifier-free)")
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
        model_kwargs: dict[str, Any] = {"text_outputs": text_outputs}
        for name, value in (image_kwargs or {}).items():
            model_kwargs[name] = _batch_input(name, value, start, len(chunk), len(prompts))
            model_kwargs[name] = model_kwargs[name].to(device)
            if model_kwargs[name].shape[0] != tokens.shape[0]:  # the unconditional half
                model_kwargs[name] = torch.cat([model_kwargs[name]] * 2)
        samples = loop(
            model_fn,
            diffusion,
            (tokens.shape[0], 3, size, size),
            generator=generator,
            model_kwargs=model_kwargs,
            denoised_fn=denoised_fn,
            threshold=threshold,
            init_noise_scale=init_noise_scale,
            progress=progress,
            device=device,
            cond_fn=make_cond_fn(chunk) if make_cond_fn is not None else None,
        )
        samples = samples[: len(chunk)]
        outputs.append(samples.float().cpu() if as_float else to_uint8(samples))
    return torch.cat(outputs)
