"""Attention reaches a fused SDPA kernel: on a GPU, q/k/v that PyTorch's flash, memory-efficient
and cuDNN kernels refuse send it to the math kernel, which builds the whole [T, L+T] attention
matrix (measured on an H200: 3.6x the time of the cuDNN kernel and a third more memory per step).

PyTorch's CPU flash kernel applies the same layout check (unit stride in the head dimension), so
forcing it here fails exactly where a GPU would fall back."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from pipeline.models import create_glide_model

B, S = 2, 16


def inputs(config: dict, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ctx = config["text_ctx"]
    return dict(
        x=torch.randn(B, 3, S, S, generator=g),
        timesteps=torch.tensor([10, 600]),
        tokens=torch.randint(1, config["vocab_size"], (B, ctx), generator=g),
        mask=torch.ones(B, ctx, dtype=torch.bool),
    )


@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_and_backward_run_on_the_fused_kernel(tiny_config, perturb, channels_last):
    model = perturb(create_glide_model(**tiny_config))
    batch = inputs(tiny_config)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        batch["x"] = batch["x"].contiguous(memory_format=torch.channels_last)
    reference = model(**batch)  # default dispatch: any kernel
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # only the fused kernel: no fallback
        out = model(**batch)
        out.square().mean().backward()
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_a_transposed_layout_is_refused_by_the_fused_kernel():
    """The check above can fail: the layout the UNet used before (q/k/v as transposed views of
    [B, heads, ch, T]) is refused by the same forced kernel."""
    q = torch.randn(B, 2, 8, 16).transpose(-1, -2)  # [B, heads, T, ch], stride 16 in ch
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), pytest.raises(RuntimeError, match="kernel"):
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
