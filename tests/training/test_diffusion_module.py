"""The Lightning module every diffusion stage uses: loss, caption drop, NaN guard, EMA, export."""

import itertools

import lightning.pytorch as pl
import pytest
import torch

from pipeline.models import create_glide_model
from pipeline.models.model_file import load_model
from pipeline.text import PAD_ID
from pipeline.training.diffusion_module import (
    GlideDiffusionModule,
    NonFiniteLossError,
    drop_captions,
)
from pipeline.training.model_setup import starting_weights
from tests.training.conftest import DIFFUSION, train_settings


def fixed_loss(module, batch, seed=123):
    """Hybrid loss at fixed timesteps and noise (comparable before/after training)."""
    gen = torch.Generator().manual_seed(seed)
    x = batch["image"].permute(0, 3, 1, 2).float() / 127.5 - 1
    x = x.repeat(8, 1, 1, 1)
    t = torch.randint(0, 1000, (x.shape[0],), generator=gen)
    noise = torch.randn(x.shape, generator=gen)
    kwargs = {"tokens": batch["tokens"].repeat(8, 1), "mask": batch["mask"].repeat(8, 1)}
    with torch.no_grad():
        losses = module.diffusion.training_losses(module.model, x, t, kwargs, noise=noise)
    return float(losses["mse"].mean())


def fit(module, batch, steps, batches=None, **trainer_kwargs):
    """Fit on ``batch`` repeated, or on the iterable ``batches`` when given."""
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **{"gradient_clip_val": 1.0, **trainer_kwargs},
    )
    trainer.fit(module, train_dataloaders=batches or itertools.repeat(batch))
    return trainer


def test_tiny_model_overfits_one_batch(tiny_model_kwargs, scene_batch):
    pl.seed_everything(0, verbose=False)
    module = GlideDiffusionModule(tiny_model_kwargs, DIFFUSION, train_settings(), "clip-test")
    before = fixed_loss(module, scene_batch)
    fit(module, scene_batch, steps=150)
    after = fixed_loss(module, scene_batch)
    assert after < before / 4, (before, after)
    assert module.global_step == 150


def test_ema_follows_weights_with_its_decay(tiny_model_kwargs, scene_batch):
    pl.seed_everything(0, verbose=False)
    module = GlideDiffusionModule(
        tiny_model_kwargs, DIFFUSION, train_settings(ema_decay=0.5), "clip-test"
    )
    initial = {k: v.clone() for k, v in module.model.state_dict().items()}
    fit(module, scene_batch, steps=3)
    name = "input_blocks.0.0.weight"
    ema, live = module.ema.shadow[name], module.model.state_dict()[name]
    assert not torch.equal(ema, live) and not torch.equal(ema, initial[name])
    # an EMA model built from the shadow carries the averaged weights
    assert torch.equal(module.ema_model().state_dict()[name], ema)


def test_caption_drop_replaces_by_empty_caption_at_the_configured_rate(
    tiny_model_kwargs, scene_batch
):
    tokens = scene_batch["tokens"].repeat(500, 1)
    mask = scene_batch["mask"].repeat(500, 1)
    drop = torch.rand(tokens.shape[0], generator=torch.Generator().manual_seed(0)) < 0.2
    new_tokens, new_mask = drop_captions(tokens, mask, drop)
    assert (new_tokens[drop] == PAD_ID).all() and not new_mask[drop].any()
    assert torch.equal(new_tokens[~drop], tokens[~drop])
    module = GlideDiffusionModule(
        tiny_model_kwargs, DIFFUSION, train_settings(caption_drop_prob=0.2), "clip-test"
    )
    torch.manual_seed(0)
    images = torch.zeros(tokens.shape[0], 3, 16, 16)
    _, dropped = module.conditioning({"tokens": tokens, "mask": mask}, images)
    assert abs(dropped.float().mean().item() - 0.2) < 0.03


def test_nonfinite_loss_skips_steps_then_stops(tiny_model_kwargs, scene_batch):
    bad = dict(scene_batch)
    bad["image"] = torch.full((4, 3, 16, 16), float("nan"))

    def new_module():
        pl.seed_everything(0, verbose=False)
        settings = train_settings(max_consecutive_nonfinite=3)
        return GlideDiffusionModule(tiny_model_kwargs, DIFFUSION, settings, "clip-test")

    reference = new_module()
    fit(reference, scene_batch, steps=1)  # one good step only

    module = new_module()
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps"):
        fit(module, None, 10, batches=itertools.chain([scene_batch], itertools.repeat(bad)))
    assert module.nonfinite_total == 3
    # the NaN steps changed no weight: the model equals the one that saw the good step alone
    for key, value in module.model.state_dict().items():
        assert torch.equal(value, reference.model.state_dict()[key]), key


def test_model_file_round_trip_loads_ema_weights(tiny_model_kwargs, scene_batch, tmp_path):
    pl.seed_everything(0, verbose=False)
    module = GlideDiffusionModule(tiny_model_kwargs, DIFFUSION, train_settings(), "clip-test")
    fit(module, scene_batch, steps=2)
    torch.save(module.model_file(mlflow_run_id="abc", stage="pretrain_base"), tmp_path / "m.pt")
    model, meta = load_model(tmp_path / "m.pt")
    assert meta["step"] == 2 and meta["mlflow_run_id"] == "abc"
    assert meta["tokenizer"] == "clip-test"
    for key, value in model.state_dict().items():
        assert torch.equal(value, module.ema.shadow[key].to(value.dtype))


def test_inpainting_stage_starts_equal_to_the_cfg_model_and_trains(tiny_model_kwargs, scene_batch):
    torch.manual_seed(0)
    source = create_glide_model(**tiny_model_kwargs).eval()
    payload = {"state_dict": source.state_dict(), "model_config": source.config}
    inpaint_kwargs = {**tiny_model_kwargs, "inpaint": True}
    settings = train_settings(masks={"rectangle": 1.0, "brush": 1.0, "border": 1.0})
    module = GlideDiffusionModule(
        inpaint_kwargs,
        DIFFUSION,
        settings,
        "clip-test",
        init_state_dict=starting_weights(payload, inpaint_kwargs),
        seed=3,
    )
    module.model.eval()
    x = torch.randn(4, 3, 16, 16)
    t = torch.tensor([10, 300, 600, 999])
    keep = (torch.rand(4, 1, 16, 16) > 0.5).float()
    with torch.no_grad():
        widened = module.model(
            x,
            t,
            tokens=scene_batch["tokens"],
            mask=scene_batch["mask"],
            inpaint_image=torch.randn(4, 3, 16, 16),
            inpaint_mask=keep,
        )
        original = source(x, t, tokens=scene_batch["tokens"], mask=scene_batch["mask"])
    assert torch.equal(widened, original)  # zero-initialised new inputs: exactly the same

    first, again = module.training_masks(8, 16), module.training_masks(8, 16)
    assert torch.equal(first, again)  # a function of (seed, step, rank): resumable
    assert ((first == 0).float().mean(dim=(1, 2, 3)) > 0).all()  # each mask erases something
    module.model.train()
    fit(module, scene_batch, steps=3)
    assert module.global_step == 3
    assert not torch.equal(module.training_masks(8, 16), first)  # new step, new masks


def test_text_encoder_learns_at_its_own_rate(tiny_model_kwargs, scene_batch):
    module = GlideDiffusionModule(
        tiny_model_kwargs, DIFFUSION, train_settings(lr=1e-3, text_lr_scale=0.1), "clip-bpe-49408"
    )
    optimizer = module.configure_optimizers()["optimizer"]
    rates = [group["lr"] for group in optimizer.param_groups]
    assert rates == pytest.approx([1e-3, 1e-4])
    text = {id(p) for p in optimizer.param_groups[1]["params"]}
    names = {n for n, p in module.model.named_parameters() if id(p) in text}
    assert "token_embedding.weight" in names and "transformer_proj.weight" in names
    assert not any(n.startswith(("input_blocks", "out.", "time_embed")) for n in names)
    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in module.model.parameters())  # each once

    # Adam moves each weight by about its rate. Gradients pass the zero-initialised output
    # layers one level a step, reaching the text encoder and the UNet's encoder_kv at step 3:
    # after three steps the encoder's weights moved a tenth as far as encoder_kv's
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    fit(module, scene_batch, 3)
    moved = {
        n: (p.detach() - before[n]).abs().max().item() for n, p in module.model.named_parameters()
    }
    ratio = (
        moved["transformer.resblocks.0.mlp.c_fc.weight"]
        / moved["output_blocks.1.1.encoder_kv.weight"]
    )
    assert ratio == pytest.approx(0.1, rel=0.1)

    single = GlideDiffusionModule(tiny_model_kwargs, DIFFUSION, train_settings(), "clip-bpe-49408")
    assert len(single.configure_optimizers()["optimizer"].param_groups) == 1


def test_p2_weighting_reaches_the_training_objective(tiny_model_kwargs, scene_batch):
    """p2_gamma reweights the epsilon term the module optimises; the logged mse stays raw."""

    def first_step_losses(**settings):
        pl.seed_everything(0, verbose=False)
        module = GlideDiffusionModule(
            tiny_model_kwargs, DIFFUSION, train_settings(**settings), "clip-test"
        )
        trainer = fit(module, scene_batch, steps=1)
        metrics = trainer.callback_metrics
        return float(metrics["train/loss"]), float(metrics["train/mse"]), float(metrics["train/vb"])

    loss, mse, vb = first_step_losses()
    p2_loss, p2_mse, p2_vb = first_step_losses(p2_gamma=1.0, p2_k=1.0)
    assert loss == pytest.approx(mse + vb)
    assert (p2_mse, p2_vb) == pytest.approx((mse, vb))  # same draws, same model: same errors
    # Every weight 1 / (1 + SNR_t) is below 1, so the weighted objective is smaller.
    assert vb < p2_loss < loss


def test_bf16_mixed_precision_trains_with_gradient_clipping(tiny_model_kwargs, scene_batch):
    """The paper and released profiles train in bf16-mixed with grad_clip 1, with the fused
    AdamW kernel (which Lightning's own clipping refuses under mixed precision)."""
    pl.seed_everything(0, verbose=False)
    train = train_settings(precision="bf16-mixed")
    module = GlideDiffusionModule(tiny_model_kwargs, DIFFUSION, train, "clip-test")
    before = fixed_loss(module, scene_batch)
    trainer = fit(module, scene_batch, steps=15, precision="bf16-mixed")
    assert trainer.optimizers[0].defaults["fused"] is True
    assert module.global_step == 15
    assert fixed_loss(module, scene_batch) < before
    assert all(torch.isfinite(p).all() for p in module.model.parameters())


class GradNormAfterStep(pl.Callback):
    """The global gradient norm each step stepped with (grads live until the next zero_grad)."""

    def __init__(self):
        self.norms = []

    def on_train_batch_end(self, trainer, module, *args):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_gradients_are_clipped_to_grad_clip(tiny_model_kwargs, scene_batch, precision):
    def grad_norms(clip):
        pl.seed_everything(0, verbose=False)
        module = GlideDiffusionModule(tiny_model_kwargs, DIFFUSION, train_settings(), "clip-test")
        probe = GradNormAfterStep()
        fit(module, scene_batch, 3, precision=precision, callbacks=[probe], gradient_clip_val=clip)
        return probe.norms

    unclipped, clipped = grad_norms(None), grad_norms(1e-3)
    assert min(unclipped) > 1e-2
    assert max(clipped) <= 1e-3 * 1.001


def test_instruct_stage_starts_equal_to_the_cfg_model_and_drops_its_conditions(
    tiny_model_kwargs, scene_batch
):
    torch.manual_seed(0)
    source = create_glide_model(**tiny_model_kwargs).eval()
    payload = {"state_dict": source.state_dict(), "model_config": source.config}
    instruct_kwargs = {**tiny_model_kwargs, "instruct": True}
    drops = {"image_drop_prob": 0.0, "joint_drop_prob": 0.0}
    module = GlideDiffusionModule(
        instruct_kwargs,
        DIFFUSION,
        train_settings(**drops),
        "clip-test",
        init_state_dict=starting_weights(payload, instruct_kwargs),
    )
    batch = {**scene_batch, "source": scene_batch["image"].flip(1)}  # any other image
    kwargs, dropped = module.conditioning(batch, torch.zeros(4, 3, 16, 16))
    assert not dropped.any() and torch.equal(kwargs["tokens"], scene_batch["tokens"])
    assert torch.equal(kwargs["source_image"], batch["source"].permute(0, 3, 1, 2) / 127.5 - 1)
    module.model.eval()
    x, t = torch.randn(4, 3, 16, 16), torch.tensor([10, 300, 600, 999])
    with torch.no_grad():
        widened = module.model(x, t, **kwargs)
        original = source(x, t, tokens=scene_batch["tokens"], mask=scene_batch["mask"])
    assert torch.equal(widened, original)  # zero-initialised image inputs: exactly the same

    everything = {"caption_drop_prob": 0.0, "image_drop_prob": 0.0, "joint_drop_prob": 1.0}
    module.train_cfg = train_settings(**everything)
    kwargs, dropped = module.conditioning(batch, torch.zeros(4, 3, 16, 16))
    assert dropped.all() and not kwargs["source_image"].any() and not kwargs["mask"].any()
    module.model.train()
    fit(module, batch, steps=2)
    assert module.global_step == 2
