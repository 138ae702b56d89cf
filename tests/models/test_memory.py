"""The memory tracer: what a model saves for backward, measured on fake tensors, is what a real
forward saves; checkpointing keeps less; nothing is allocated for a paper-sized model."""

import pytest
import torch

from pipeline.models import create_glide_model
from pipeline.models.memory import glide_forward, trace_memory
from tests.models.conftest import TINY


def real_saved_bytes(model, forward, batch, dtype):
    """Bytes a real forward saves for backward (parameters excluded), by data pointer."""
    weights = {p.data_ptr() for p in model.parameters()}
    seen = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)
    with autocast, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward(model, batch)
    return sum(seen.values())


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_fake_trace_matches_a_real_forward(dtype):
    kwargs = {**TINY, "vocab_size": 100, "dropout": 0.0}
    forward = glide_forward(16, TINY["text_ctx"])
    trace = trace_memory(lambda: create_glide_model(**kwargs), forward, dtype)
    torch.manual_seed(0)
    model = create_glide_model(**kwargs)
    one, two = (real_saved_bytes(model, forward, b, dtype) for b in (1, 2))
    assert trace.activations_per_sample == two - one
    assert trace.batch_independent == one - (two - one)
    assert trace.parameters == sum(p.numel() for p in model.parameters())
    assert 0 < trace.checkpointed_per_sample < trace.activations_per_sample


def test_a_paper_sized_model_is_traced_without_allocating_it():
    kwargs = dict(
        image_size=64, num_channels=512, channel_mult=(1, 2, 3, 4), xf_width=2048,
        xf_layers=24, xf_heads=32, vocab_size=49408,
    )  # fmt: skip
    trace = trace_memory(lambda: create_glide_model(**kwargs), glide_forward(64, 128))
    assert 3.4e9 < trace.parameters < 3.7e9  # 14 GB of fp32 weights, never allocated
    assert trace.largest_unit_parameters < trace.unit_parameters < trace.parameters
