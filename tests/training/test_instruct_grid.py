"""An instruction-editing stage's sample grid: its held-out instructions prompt it (a stage sets
no sample_prompts), one row per image: the input, then an edit per (s_I, s_T)."""

import numpy as np
import torch

from pipeline.models import create_glide_model
from pipeline.training.callbacks import InstructGrid, SampleGridCallback
from tests.training.conftest import DIFFUSION, TINY_MODEL


class EmaOnly:
    """What the callback reads of a training module."""

    device = torch.device("cpu")
    diffusion_settings = DIFFUSION
    global_step = 3

    def __init__(self, model):
        self.model = model

    def ema_model(self):
        return self.model


def test_the_grid_edits_each_held_out_image_at_each_scale_pair(tokenizer):
    model = create_glide_model(**TINY_MODEL, vocab_size=tokenizer.vocab_size, instruct=True)
    sources = [
        {"source": np.zeros((16, 16, 3), np.uint8), "caption": "make the circle blue"},
        {"source": np.full((16, 16, 3), 200, np.uint8), "caption": "remove the star"},
    ]
    callback = SampleGridCallback(
        tokenizer, [], [1.0, 7.5], every_n_steps=1, steps="ddim2", seed=0,
        instruct=InstructGrid(sources, [1.5]),
    )  # fmt: skip
    assert callback.prompts == ["make the circle blue", "remove the star"]
    callback.sample_now(EmaOnly(model), is_global_zero=True)
    width, height = callback.last_grid.size
    assert width == 3 * 128  # input | s_T 1 | s_T 7.5, at the grid's 128-px cells
    assert height == 2 * 165  # two held-out images, a caption under each cell
