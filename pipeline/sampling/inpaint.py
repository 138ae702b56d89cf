"""Text-guided editing (GLIDE Sec. 3.3): regenerate the masked region of an image.

Mask convention everywhere: 1 / True = keep (known pixel), 0 / False = generate.

With an inpainting model, the model sees the masked source and the mask at every step. With
any model (and for the replacement-only baseline, a text-to-image model that was never fine-tuned
for inpainting), each x0 prediction has its known region replaced by the source. The returned
images carry the source's known pixels exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pipeline.sampling.text_to_image import sample_text_to_image, to_uint8
from pipeline.text import Tokenizer


def to_model_image(image: Tensor) -> Tensor:
    """uint8 [H, W, 3] -> float [1, 3, H, W] in [-1, 1]."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {list(image.shape)}")
    return image.permute(2, 0, 1)[None].float().div(127.5).sub(1.0)


def check_edit_inputs(image: Tensor, keep: Tensor, image_size: int) -> None:
    """Clear errors for inputs an edit cannot use."""
    if tuple(keep.shape) != tuple(image.shape[:2]):
        raise ValueError(
            f"the mask is {keep.shape[1]}x{keep.shape[0]} but the image is "
            f"{image.shape[1]}x{image.shape[0]}: they must have the same size"
        )
    if tuple(image.shape[:2]) != (image_size, image_size):
        raise ValueError(
            f"the image is {image.shape[1]}x{image.shape[0]}; the model works at "
            f"{image_size}x{image_size}"
        )
    if bool(keep.all()):
        raise ValueError("the mask keeps every pixel: there is nothing to generate")


@torch.no_grad()
def sample_inpaint(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    image: Tensor,
    keep: Tensor,
    *,
    guidance_scale: float = 5.0,
    steps: str = "100",
    diffusion_steps: int = 1000,
    noise_schedule: str = "squaredcos_cap_v2",
    seed: int = 0,
    batch_size: int = 0,
    device: torch.device | str | None = None,
    threshold: float | None = None,
    progress: bool = False,
) -> Tensor:
    """Edit ``image`` (uint8 [H, W, 3]) where ``keep`` (bool [H, W]) is False, once per prompt.

    Returns uint8 [N, H, W, 3]. An inpainting model (``model.inpaint``) gets the masked image and
    the mask as inputs; any other model is the replacement-only baseline.
    """
    check_edit_inputs(image, keep, int(model.image_size))
    source = to_model_image(image)  # [1, 3, H, W]
    keep_mask = keep.to(torch.float32)[None, None]  # [1, 1, H, W]
    device = torch.device(device) if device is not None else next(model.parameters()).device
    source_d, keep_d = source.to(device), keep_mask.to(device)

    def paste_known(pred_xstart: Tensor) -> Tensor:
        return pred_xstart * (1.0 - keep_d) + source_d * keep_d

    image_kwargs = {"inpaint_image": source, "inpaint_mask": keep_mask} if model.inpaint else None
    samples = sample_text_to_image(
        model,
        tokenizer,
        prompts,
        guidance_scale=guidance_scale,
        steps=steps,
        diffusion_steps=diffusion_steps,
        noise_schedule=noise_schedule,
        seed=seed,
        batch_size=batch_size,
        device=device,
        threshold=threshold,
        progress=progress,
        image_kwargs=image_kwargs,
        denoised_fn=paste_known,
        as_float=True,
    )  # [N, 3, H, W] in [-1, 1]
    edited = to_uint8(samples)
    known = keep[None, :, :, None].expand_as(edited)
    return torch.where(known, image[None].expand_as(edited), edited)
