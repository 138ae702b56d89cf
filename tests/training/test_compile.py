"""``compile: true``: the stage trains a torch.compile'd network with the same loss as eager,
its files keep the released state-dict keys, and compiled sampling draws the same images.

On a CPU the graphs are compiled with the ``aot_eager`` backend (Dynamo's capture and
AOTAutograd's forward/backward graphs, no code generation): Inductor's C++ build takes minutes
here. The Inductor path runs on a GPU in benchmarks/gpu_step.py and sample_latency.py."""

import itertools

import lightning.pytorch as pl
import pytest
import torch

from pipeline.models import create_glide_model
from pipeline.models.model_file import load_model
from pipeline.sampling import SamplerSettings, load_sampling_model, sample_text_to_image
from tests.training.conftest import DIFFUSION, train_settings


def is_compiled(model: torch.nn.Module) -> bool:
    """nn.Module.compile() keeps the module and routes its calls through this attribute."""
    return getattr(model, "_compiled_call_impl", None) is not None


def first_losses(module, batch, steps=2):
    """The logged loss of each of the first ``steps`` steps."""
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            losses.append(float(trainer.callback_metrics["train/loss"]))

    trainer = pl.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()],
        gradient_clip_val=1.0,
    )  # fmt: skip
    pl.seed_everything(1, verbose=False)  # the same timesteps and noise for every module
    trainer.fit(module, train_dataloaders=itertools.repeat(batch))
    return losses


def test_compiled_stage_trains_like_eager_and_writes_the_same_keys(
    tiny_model_kwargs, scene_batch, tmp_path
):
    from pipeline.training.diffusion_module import GlideDiffusionModule

    def module(**settings):
        pl.seed_everything(0, verbose=False)
        return GlideDiffusionModule(
            tiny_model_kwargs, DIFFUSION, train_settings(**settings), "clip-test"
        )

    eager = module()
    compiled = module(compile=True, compile_backend="aot_eager")
    assert is_compiled(compiled.model) and not is_compiled(eager.model)
    losses = first_losses(eager, scene_batch)
    assert losses[0] != losses[1]  # two different steps: the comparison below is not trivial
    assert first_losses(compiled, scene_batch) == pytest.approx(losses, rel=1e-4, abs=1e-6)
    torch.save(compiled.model_file(mlflow_run_id="", stage="pretrain_base"), tmp_path / "m.pt")
    model, _ = load_model(tmp_path / "m.pt")  # strict: no "_orig_mod." prefixes
    assert set(model.state_dict()) == set(create_glide_model(**tiny_model_kwargs).state_dict())


def test_compiled_sampling_draws_the_same_images(tiny_model_kwargs, tokenizer, tmp_path):
    from pipeline.training.diffusion_module import GlideDiffusionModule

    pl.seed_everything(0, verbose=False)
    settings = train_settings()
    module = GlideDiffusionModule(tiny_model_kwargs, DIFFUSION, settings, tokenizer.identity)
    torch.save(module.model_file(mlflow_run_id="", stage="pretrain_base"), tmp_path / "m.pt")
    eager = load_sampling_model(tmp_path / "m.pt")
    compiled = load_sampling_model(tmp_path / "m.pt", compile=True, compile_backend="aot_eager")
    assert is_compiled(compiled.model) and not is_compiled(eager.model)
    prompts = ["a red circle", "a blue square"]

    def draw(loaded):
        settings = SamplerSettings(steps="ddim4", seed=3)
        return sample_text_to_image(loaded, prompts, settings, guidance_scale=3.0)

    images = draw(compiled)
    difference = (images.int() - draw(eager).int()).abs()
    assert difference.max() <= 1  # 8-bit rounding of float noise at most
