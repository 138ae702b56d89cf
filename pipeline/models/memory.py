"""How much memory a model needs to train, measured without allocating it.

The model is built and run forward on fake tensors (PyTorch's ``FakeTensorMode``: shapes and
dtypes, no data), at batch 1 and 2, under the training precision's autocast; every tensor that
autograd saves for the backward pass is counted once (by storage). The difference between the
two batches is the activation memory per sample; the rest (bf16 copies of the weights that
autocast keeps during the forward) does not grow with the batch.

With gradient checkpointing (``use_checkpoint``: each ResBlock, attention block and text
transformer block is a unit whose activations are recomputed in the backward pass) a step keeps
what is saved outside the units, the inputs of every unit, and, while one unit is recomputed,
that unit's activations and their gradients: twice the largest unit's.

The attention path is whatever PyTorch's ``scaled_dot_product_attention`` picks on CPU for the
model's tensors: a fused kernel saves no attention matrix; the math fallback (non-contiguous
q/k/v) saves it in float32, as CUDA's does. See ``docs/`` for the comparison with an H200.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode  # PyTorch's tracing tensors

from pipeline.models.nn_blocks import CheckpointedModule

OUTSIDE = ""  # saved tensors of ops outside every checkpointing unit


@dataclass(frozen=True)
class MemoryTrace:
    """Parameters and activation bytes of one model at one precision (bytes per sample)."""

    parameters: int
    unit_parameters: int  # in blocks (elements of ModuleLists): FSDP shards each on its own
    largest_unit_parameters: int  # the biggest block: FSDP's working set
    activations_per_sample: float
    checkpointed_per_sample: float
    batch_independent: float  # saved regardless of the batch (autocast's weight copies)


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata  # one StorageImpl per allocation, fake or real


class _SavedBytes:
    """Counts saved-for-backward bytes per checkpointing unit, and the units' input bytes."""

    def __init__(self, model: nn.Module) -> None:
        self.params = {_storage_key(p) for p in model.parameters()}
        self.seen: set[int] = set()
        self.saved: dict[str, float] = {}
        self.inputs: set[int] = set()
        self.input_bytes = 0.0
        self.stack: list[str] = []
        self.handles = []
        for name, module in model.named_modules():
            if isinstance(module, CheckpointedModule):
                self.handles.append(module.register_forward_pre_hook(self._enter(name)))
                self.handles.append(module.register_forward_hook(self._leave))

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()

    def _enter(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple) -> None:
            if not self.stack:  # an outermost unit: checkpointing keeps its inputs
                for arg in args:
                    if isinstance(arg, torch.Tensor) and _storage_key(arg) not in self.inputs:
                        self.inputs.add(_storage_key(arg))
                        self.input_bytes += arg.untyped_storage().nbytes()
            self.stack.append(name)

        return hook

    def _leave(self, *_: Any) -> None:
        self.stack.pop()

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key not in self.seen and key not in self.params:
            self.seen.add(key)
            unit = self.stack[0] if self.stack else OUTSIDE
            self.saved[unit] = self.saved.get(unit, 0.0) + tensor.untyped_storage().nbytes()
        return tensor

    def totals(self) -> tuple[float, float]:
        """(bytes saved without checkpointing, bytes kept with it)."""
        units = [v for k, v in self.saved.items() if k != OUTSIDE]
        plain = sum(self.saved.values())
        recomputed = 2 * max(units, default=0.0)  # a unit's activations and their gradients
        checkpointed = self.saved.get(OUTSIDE, 0.0) + self.input_bytes + recomputed
        return plain, checkpointed


def _autocast(dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return torch.autocast("cpu", enabled=False)
    return torch.autocast("cpu", dtype=dtype)


def trace_memory(
    build: Callable[[], nn.Module],
    forward: Callable[[nn.Module, int], Any],
    autocast_dtype: torch.dtype | None = None,
) -> MemoryTrace:
    """Trace ``forward(model, batch_size)`` of the model ``build()`` makes (checkpointing off)
    on fake tensors at batch 1 and 2; see the module docstring."""
    with FakeTensorMode():
        model = build()
        parameters = sum(p.numel() for p in model.parameters())
        blocks = [e for m in model.modules() if isinstance(m, nn.ModuleList) for e in m]
        sizes = [sum(p.numel() for p in b.parameters()) for b in blocks]
        totals = []
        for batch in (1, 2):
            counter = _SavedBytes(model)
            hooks = torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t)
            with _autocast(autocast_dtype), hooks:
                forward(model, batch)
            counter.close()
            totals.append(counter.totals())
    (plain1, ckpt1), (plain2, ckpt2) = totals
    return MemoryTrace(
        parameters=parameters,
        unit_parameters=sum(sizes),
        largest_unit_parameters=max(sizes, default=0),
        activations_per_sample=plain2 - plain1,
        checkpointed_per_sample=ckpt2 - ckpt1,
        batch_independent=plain1 - (plain2 - plain1),
    )


def glide_forward(image_size: int, text_ctx: int, low_res_size: int = 0) -> Callable:
    """A GLIDE UNet's training forward on ``image_size`` inputs (a super-resolution model also
    gets its ``low_res_size`` input; an inpainting model its masked image and mask)."""

    def run(model: nn.Module, batch: int) -> Any:
        x = torch.randn(batch, 3, image_size, image_size)
        kwargs: dict[str, Any] = {
            "tokens": torch.zeros(batch, text_ctx, dtype=torch.long),
            "mask": torch.ones(batch, text_ctx, dtype=torch.bool),
        }
        if low_res_size:
            kwargs["low_res"] = torch.randn(batch, 3, low_res_size, low_res_size)
        if getattr(model, "inpaint", False):
            kwargs["inpaint_image"] = torch.randn(batch, 3, image_size, image_size)
            kwargs["inpaint_mask"] = torch.ones(batch, 1, image_size, image_size)
        if getattr(model, "instruct", False):
            kwargs["source_image"] = torch.randn(batch, 3, image_size, image_size)
        return model(x, torch.zeros(batch, dtype=torch.long), **kwargs)

    return run


def clip_forward(image_size: int, text_ctx: int) -> Callable:
    """A noised CLIP's training forward: the [batch, batch] similarities of images and captions."""

    def run(model: nn.Module, batch: int) -> Any:
        images = torch.randn(batch, 3, image_size, image_size)
        tokens = torch.zeros(batch, text_ctx, dtype=torch.long)
        # the towers themselves: encode_image's range check of t reads values fakes do not have
        z_image = model.visual(images, torch.zeros(batch, dtype=torch.long))
        return z_image @ model.encode_text(tokens).T

    return run
