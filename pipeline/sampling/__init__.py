"""Sampling: a loaded model (which carries its diffusion) and `SamplerSettings` (steps, seed,
batch size, device, threshold, temperature, eta, progress) are all every mode needs:

    sampler = load_sampling_model("models/cfg.pt")
    images = sample_text_to_image(sampler, prompts, SamplerSettings(steps="fast27", seed=1))

Editing (`inpaint`), the upsampler (`upsample`), the cascade (`cascade`) and CLIP guidance
(`clip_guided`) take the same two; `sample_images(_progressive)` is the call they all go through.
"""

from pipeline.diffusion import SamplerSettings
from pipeline.sampling.grid import captioned_grid
from pipeline.sampling.loading import SamplingModel, load_sampling_model, tokenizer_for
from pipeline.sampling.text_to_image import (
    Conditioning,
    sample_images,
    sample_images_progressive,
    sample_text_to_image,
    to_uint8,
)

__all__ = [
    "Conditioning",
    "SamplerSettings",
    "SamplingModel",
    "captioned_grid",
    "load_sampling_model",
    "sample_images",
    "sample_images_progressive",
    "sample_text_to_image",
    "to_uint8",
    "tokenizer_for",
]
