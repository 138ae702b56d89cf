"""Instruction-based editing (InstructPix2Pix): edit an image from a sentence, no mask.

The model (``instruct``: the GLIDE UNet widened with the image to edit) is guided with two
scales in one forward pass per step (:mod:`pipeline.diffusion.instruct_guidance`): the image
scale ``s_I`` (how closely to keep the input) and the instruction scale ``s_T`` (how strongly to
follow the instruction), with the instruction encoded once per call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pipeline.diffusion import SamplerSettings
from pipeline.sampling.inpaint import to_model_image
from pipeline.sampling.loading import SamplingModel
from pipeline.sampling.text_to_image import DEFAULT_SETTINGS, Conditioning, sample_images, to_uint8


def check_instruct_inputs(
    sampler: SamplingModel, image: Tensor, instructions: Sequence[str]
) -> None:
    """Clear errors for a model without the image inputs, a wrong-size image, no instruction."""
    if not sampler.model.config.get("instruct"):
        raise ValueError(
            "this model has no input for the image to edit (instruct=False): use a model "
            "trained by the finetune_instruct stage (models/instruct.pt)"
        )
    size = int(sampler.model.image_size)
    height, width = image.shape[-3:-1]
    if (height, width) != (size, size):
        raise ValueError(f"the image is {width}x{height}; the model works at {size}x{size}")
    if image.ndim == 4 and image.shape[0] != len(instructions):
        raise ValueError(f"{image.shape[0]} images for {len(instructions)} instructions")
    if not instructions or any(not text.strip() for text in instructions):
        raise ValueError("an edit needs a non-empty instruction")


def sample_instruct_edit(
    sampler: SamplingModel,
    instructions: Sequence[str],
    image: Tensor,
    settings: SamplerSettings = DEFAULT_SETTINGS,
    *,
    image_guidance: float = 1.5,
    guidance: float = 7.5,
) -> Tensor:
    """Edit ``image`` (uint8 [H, W, 3], or [N, H, W, 3]: one per instruction) once per
    instruction; returns uint8 [N, H, W, 3].

    ``image_guidance`` s_I and ``guidance`` s_T: eps = eps(0, 0) + s_I (eps(I, 0) - eps(0, 0))
    + s_T (eps(I, T) - eps(I, 0)); s_I = s_T = 1 samples the conditioned model alone.
    """
    check_instruct_inputs(sampler, image, instructions)
    conditioning = Conditioning(
        guidance_scale=guidance,
        image_guidance_scale=image_guidance,
        image_inputs={
            "source_image": torch.cat(
                [to_model_image(i) for i in image.reshape(-1, *image.shape[-3:])]
            )
        },
    )
    return to_uint8(sample_images(sampler, list(instructions), settings, conditioning))
