"""Small image sets for the FID/KID tests."""

import torch


def smooth_images(count: int, seed: int, size: int = 32) -> torch.Tensor:
    """uint8 [count, 3, size, size]: random 4x4 colour fields blown up bilinearly."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 4, 4, generator=gen) * 255
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    return fine.round().clamp(0, 255).to(torch.uint8)


def add_noise(images: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    noisy = images.float() + sigma * torch.randn(images.shape, generator=gen)
    return noisy.round().clamp(0, 255).to(torch.uint8)
