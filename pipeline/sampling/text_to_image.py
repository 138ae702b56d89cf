"""Text-to-image sampling with classifier-free guidance (GLIDE Sec. 2.3), and the one sampling
call every other mode (editing, upsampling, CLIP guidance) goes through.

One forward pass per step over the batch [conditional; unconditional] (x_t duplicated); the text
transformer runs once per batch of prompts, not once per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from pipeline.diffusion import (
    SamplerSettings,
    StepHooks,
    classifier_free_guidance_model,
    final_step,
    instruct_guidance_model,
    sample_loop_progressive,
)
from pipeline.sampling.loading import SamplingModel
from pipeline.sampling.low_res_projection import low_res_projection
from pipeline.sampling.tiles import Tiling
from pipeline.text import empty_caption_tokens, tokenize_batch

CondFnFor = Callable[[list[str]], Callable[..., Tensor]]
DEFAULT_SETTINGS = SamplerSettings()


@dataclass(frozen=True)
class Conditioning:
    """What a sampling call conditions on besides the captions.

    guidance_scale: classifier-free guidance scale (1 = the conditional model alone, no
        unconditional half).
    image_inputs: extra network inputs, batch 1 (repeated over the prompts, e.g.
        ``inpaint_image`` [1, 3, H, W]) or one per prompt (e.g. an upsampler's ``low_res``).
    denoised_fn: post-processes every x0 prediction (e.g. pastes an edit's known region).
    cond_fn_for: the sampler's gradient hook for a batch of prompts (CLIP guidance); needs
        guidance_scale 1.
    image_guidance_scale: set for instruction editing (InstructPix2Pix): the batch is tripled,
        [(image, text); (image, empty); (zeros, empty)], and ``guidance_scale`` is the text scale.
    tiling: run the network on overlapping tiles (an upsampler trained on crops; tiles.py).
    project_onto: an upsampler's clean low-res inputs, one per prompt (float [N, 3, h, w] in
        [-1, 1]): every x0 prediction is projected onto the images with these block averages
        (low_res_projection.py) before ``denoised_fn``.
    """

    guidance_scale: float = 1.0
    image_inputs: Mapping[str, Tensor] = field(default_factory=dict)
    denoised_fn: Callable[[Tensor], Tensor] | None = None
    cond_fn_for: CondFnFor | None = None
    image_guidance_scale: float | None = None
    tiling: Tiling = field(default_factory=Tiling)
    project_onto: Tensor | None = None

    @property
    def guided(self) -> bool:
        """Whether the batch carries unconditional copies (classifier-free guidance)."""
        return float(self.guidance_scale) != 1.0 or self.image_guidance_scale is not None

    @property
    def copies(self) -> int:
        """How many copies of each prompt's x_t the network sees per step."""
        return 3 if self.image_guidance_scale is not None else 2 if self.guided else 1


def to_uint8(images: Tensor) -> Tensor:
    """[B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3] (8-bit quantisation, as GLIDE saves)."""
    scaled = ((images.float() + 1.0) * 127.5).round().clamp(0, 255)
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu()


def _batch_input(name: str, value: Tensor, start: int, count: int, total: int) -> Tensor:
    """The rows of a per-prompt input for the prompts ``start:start+count`` (a batch-1 input is
    repeated)."""
    if value.shape[0] == 1:
        return value.expand(count, *value.shape[1:])
    if value.shape[0] != total:
        raise ValueError(f"{name} has batch {value.shape[0]}; expected 1 or {total} (one a prompt)")
    return value[start : start + count]


def _check(prompts: Sequence[str], conditioning: Conditioning) -> None:
    if not prompts:
        raise ValueError("no prompts given")
    if conditioning.cond_fn_for is not None and conditioning.guided:
        raise ValueError("a cond_fn (CLIP guidance) needs guidance_scale 1 (no classifier-free)")


def _batch_hooks(
    sampler: SamplingModel,
    prompts: Sequence[str],
    rows: range,
    conditioning: Conditioning,
    device: torch.device,
) -> StepHooks:
    """The step hooks of the prompts ``rows``: their encoded text ([conditional; unconditional]
    when guided), image inputs, denoised_fn and cond_fn."""
    chunk = [prompts[row] for row in rows]
    count = len(rows)
    text_ctx = int(sampler.model.text_ctx)
    tokens, mask = tokenize_batch(sampler.tokenizer, chunk, text_ctx)
    copies = conditioning.copies
    if copies > 1:
        empty_tokens, empty_mask = empty_caption_tokens(text_ctx, count * (copies - 1))
        tokens, mask = torch.cat([tokens, empty_tokens]), torch.cat([mask, empty_mask])
    model_kwargs: dict[str, Any] = {
        "text_outputs": sampler.model.encode_text(tokens.to(device), mask.to(device))
    }
    for name, value in conditioning.image_inputs.items():
        batch = _batch_input(name, value, rows.start, count, len(prompts)).to(device)
        dropped = [torch.zeros_like(batch)] if copies == 3 else []  # no image in the last third
        model_kwargs[name] = torch.cat([batch] * (copies - len(dropped)) + dropped)
    cond_fn_for = conditioning.cond_fn_for
    denoised_fn = conditioning.denoised_fn
    if conditioning.project_onto is not None:
        target = _batch_input(
            "project_onto", conditioning.project_onto, rows.start, count, len(prompts)
        )
        denoised_fn = low_res_projection(target.to(device), then=denoised_fn)
    return StepHooks(
        model_kwargs=model_kwargs,
        cond_fn=cond_fn_for(chunk) if cond_fn_for is not None else None,
        denoised_fn=denoised_fn,
    )


def _batch_steps(
    sampler: SamplingModel,
    prompts: Sequence[str],
    rows: range,
    settings: SamplerSettings,
    conditioning: Conditioning,
    generator: torch.Generator,
) -> Iterator[dict[str, Tensor]]:
    """The sampling loop's step outputs for the prompts ``rows`` (their x_t first in each
    ``"sample"``, the unconditional half after them); ``settings.device`` is resolved and the
    generator runs on across batches."""
    device = torch.device(settings.device)
    hooks = _batch_hooks(sampler, prompts, rows, conditioning, device)
    network = _guided_network(sampler.model, conditioning)
    size = int(sampler.model.image_size)
    shape = (len(rows) * conditioning.copies, 3, size, size)
    diffusion = sampler.diffusion(settings.steps)
    return sample_loop_progressive(network, diffusion, shape, settings, hooks, generator=generator)


def _guided_network(model: torch.nn.Module, conditioning: Conditioning) -> Callable[..., Tensor]:
    network = conditioning.tiling.wrap(model)  # inside guidance: tiles must not split its halves
    if conditioning.image_guidance_scale is not None:
        scales = (conditioning.image_guidance_scale, conditioning.guidance_scale)
        return instruct_guidance_model(network, *scales)
    if conditioning.guided:
        return classifier_free_guidance_model(network, conditioning.guidance_scale)
    return network


def _resolved(sampler: SamplingModel, settings: SamplerSettings) -> SamplerSettings:
    """``settings`` with the device made explicit (default: the network's)."""
    device = sampler.device if settings.device is None else torch.device(settings.device)
    return replace(settings, device=device)


def _generator(settings: SamplerSettings) -> torch.Generator:
    return torch.Generator(device=settings.device).manual_seed(int(settings.seed))


@torch.no_grad()
def sample_images(
    sampler: SamplingModel,
    prompts: Sequence[str],
    settings: SamplerSettings,
    conditioning: Conditioning,
) -> Tensor:
    """One image per prompt, float [N, 3, H, W] in [-1, 1] on the CPU.

    Prompts are sampled in batches of ``settings.batch_size`` (0 = all at once); the same seed
    gives the same images for the same batching.
    """
    _check(prompts, conditioning)
    settings = _resolved(sampler, settings)
    generator = _generator(settings)
    batch = settings.batch_size or len(prompts)
    outputs = []
    for start in range(0, len(prompts), batch):
        rows = range(start, min(start + batch, len(prompts)))
        steps = _batch_steps(sampler, prompts, rows, settings, conditioning, generator)
        outputs.append(final_step(steps)["sample"][: len(rows)].float().cpu())
    return torch.cat(outputs)


@torch.no_grad()
def sample_images_progressive(
    sampler: SamplingModel,
    prompts: Sequence[str],
    settings: SamplerSettings,
    conditioning: Conditioning,
) -> Iterator[Tensor]:
    """As :func:`sample_images` in one batch (``settings.batch_size`` 0 or at least the number
    of prompts), yielding x_t float [N, 3, H, W] after every step; the last is the result."""
    _check(prompts, conditioning)
    if 0 < settings.batch_size < len(prompts):
        raise ValueError("progressive sampling runs one batch: batch_size 0 or >= the prompts")
    settings = _resolved(sampler, settings)
    rows = range(len(prompts))
    steps = _batch_steps(sampler, prompts, rows, settings, conditioning, _generator(settings))
    for out in steps:
        yield out["sample"][: len(rows)].float().cpu()


def sample_text_to_image(
    sampler: SamplingModel,
    prompts: Sequence[str],
    settings: SamplerSettings = DEFAULT_SETTINGS,
    *,
    guidance_scale: float = 3.0,
) -> Tensor:
    """Sample one image per prompt with classifier-free guidance at ``guidance_scale``; returns
    uint8 [N, H, W, 3]."""
    conditioning = Conditioning(guidance_scale=guidance_scale)
    return to_uint8(sample_images(sampler, prompts, settings, conditioning))
