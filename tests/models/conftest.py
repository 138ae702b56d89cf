import json
from pathlib import Path

import pytest
import torch

REFERENCE = Path("reference") / "glide_state_dict.json"


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny models run faster on one thread, and far faster when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def find_shared_dir() -> Path:
    """`shared/` inside the repo root, or next to it (/work/shared for the repo /work/main)."""
    repo_root = Path(__file__).resolve().parents[2]
    candidates = [repo_root / "shared", repo_root / ".." / "shared"]
    for folder in candidates:
        if (folder / REFERENCE).is_file():
            return folder.resolve()
    pytest.fail(
        f"cannot find {REFERENCE} in a shared/ folder; looked in "
        + ", ".join(str(c.resolve()) for c in candidates)
    )


@pytest.fixture(scope="session")
def glide_reference() -> dict:
    """{variant: {"params": int, "state_dict": {key: shape}}} for the four released variants."""
    return json.loads((find_shared_dir() / REFERENCE).read_text())["models"]


TINY = dict(
    image_size=16,
    num_channels=32,
    num_res_blocks=1,
    channel_mult=(1, 2),
    attention_resolutions=(16, 8),
    num_head_channels=16,
    dropout=0.0,
    text_ctx=8,
    xf_width=32,
    xf_layers=2,
    xf_heads=2,
    vocab_size=64,
)


@pytest.fixture
def tiny_config():
    """A few-thousand-parameter GLIDE model config (copy: tests may change it)."""
    return dict(TINY)


@torch.no_grad()
def perturb_(model: torch.nn.Module, std: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Give every all-zero parameter (zero-initialised output layers, biases) random values, so a
    freshly built model's output depends on all its inputs."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if not p.any():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


@pytest.fixture
def perturb():
    return perturb_
