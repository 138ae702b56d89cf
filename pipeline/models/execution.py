"""How a network runs, apart from what it computes: gradient checkpointing, memory format and
torch.compile, for training and for sampling; half-precision autocast for sampling. Outputs
stay the same within float tolerance (within half-precision tolerance under autocast)."""

from __future__ import annotations

import functools

import torch
from torch import nn

SAMPLING_PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def configure_for_training(
    model: nn.Module,
    *,
    use_checkpoint: bool = False,
    channels_last: bool = False,
    compile: bool = False,
    compile_backend: str = "inductor",
) -> nn.Module:
    """Set up ``model`` (in place; returned) for training steps.

    ``use_checkpoint``: recompute each block's activations in backward (far less activation
    memory, about a third more time). ``channels_last``: NHWC weights, for convolution kernels
    that prefer it (the caller passes NHWC inputs too). ``compile``: torch.compile the forward
    in place (``nn.Module.compile``), so state-dict keys keep their names; the first steps pay
    the compilation. ``compile_backend`` "aot_eager" traces and differentiates the forward
    without generating code (a cheap check on a CPU, where Inductor compiles C++ for minutes).
    """
    if use_checkpoint:  # False keeps the model's own setting (GLIDE's model option)
        model.set_checkpointing(True)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        model.compile(backend=compile_backend)
    return model


def compile_for_sampling(model: nn.Module, backend: str = "inductor") -> nn.Module:
    """torch.compile ``model`` (in place; returned) for repeated same-shape sampler calls.

    On CUDA the compiled forward is replayed as a CUDA graph (``mode="reduce-overhead"``), which
    removes the per-kernel launch cost that bounds a sampler at small batches; static shapes,
    since a sampling call repeats one batch shape at every step. Elsewhere the default mode.
    """
    on_cuda = any(p.is_cuda for p in model.parameters())
    graphs = on_cuda and backend == "inductor"
    model.compile(backend=backend, mode="reduce-overhead" if graphs else None, dynamic=False)
    return model


def sample_in_precision(model: nn.Module, precision: str) -> nn.Module:
    """Run ``model``'s forward (in place; returned) under autocast to ``precision``'s half type
    and hand the output back in float32, so the diffusion maths stays in float32 (GLIDE samples
    its networks in fp16). "32-true" leaves the model as it is. Apply before compiling.
    """
    if precision not in SAMPLING_PRECISIONS:
        raise ValueError(
            f"unknown sampling precision {precision!r}; choose one of {list(SAMPLING_PRECISIONS)}"
        )
    dtype = SAMPLING_PRECISIONS[precision]
    if dtype is None:
        return model
    forward = model.forward
    device_type = next(model.parameters()).device.type

    @functools.wraps(forward)
    def forward_in_precision(*args, **kwargs):
        with torch.autocast(device_type=device_type, dtype=dtype):
            out = forward(*args, **kwargs)
        return out.float()

    model.forward = forward_in_precision  # the module keeps its attributes and state dict
    return model
