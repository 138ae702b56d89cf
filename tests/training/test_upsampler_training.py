"""The upsampler in the shared Lightning module: low-res conditioning, noise augmentation level,
and a behaviour check: trained on constant images, it keeps a constant image constant."""

import lightning.pytorch as pl
import torch

from pipeline.sampling import SamplerSettings, SamplingModel
from pipeline.sampling.upsample import sample_upsample
from pipeline.text import tokenize_batch
from pipeline.training.diffusion_module import GlideDiffusionModule, images_to_model_range
from tests.training.conftest import TINY_MODEL, train_settings
from tests.training.test_diffusion_module import fit

LINEAR = {"diffusion_steps": 1000, "noise_schedule": "linear"}


def upsampler_module(tokenizer, noise_cond_aug=False, **train):
    kwargs = {**TINY_MODEL, "vocab_size": tokenizer.vocab_size, "super_res": True}
    return GlideDiffusionModule(
        {**kwargs, "noise_cond_aug": noise_cond_aug},
        LINEAR,
        train_settings(**train),
        tokenizer.identity,
    )


def pair_batch(scene_batch):
    """The scenes as 16x16 targets with their 4x4 area averages as low-res inputs."""
    images = scene_batch["image"]
    low = images.float().reshape(4, 4, 4, 4, 4, 3).mean(dim=(2, 4)).round().to(torch.uint8)
    return {**scene_batch, "low_res": low}


def model_inputs_during_fit(module, batch, steps=2):
    seen = []

    def hook(_model, args, kwargs):
        seen.append({k: v.detach().clone() for k, v in kwargs.items() if torch.is_tensor(v)})

    handle = module.model.register_forward_pre_hook(hook, with_kwargs=True)
    fit(module, batch, steps=steps)
    handle.remove()
    return seen


def test_low_res_input_reaches_the_model_clean_without_augmentation(tokenizer, scene_batch):
    pl.seed_everything(0, verbose=False)
    batch = pair_batch(scene_batch)
    module = upsampler_module(tokenizer)
    seen = model_inputs_during_fit(module, batch)
    assert len(seen) == 2
    for inputs in seen:
        assert "aug_level" not in inputs
        assert torch.equal(inputs["low_res"], images_to_model_range(batch["low_res"]))
        assert inputs["low_res"].shape == (4, 3, 4, 4)


def test_noise_augmentation_level_reaches_the_model(tokenizer, scene_batch):
    pl.seed_everything(0, verbose=False)
    batch = pair_batch(scene_batch)
    module = upsampler_module(tokenizer, noise_cond_aug=True, noise_aug_max_level=400)
    seen = model_inputs_during_fit(module, batch, steps=3)
    clean = images_to_model_range(batch["low_res"])
    levels = torch.cat([inputs["aug_level"] for inputs in seen])
    assert levels.shape == (12,) and int(levels.min()) >= 0 and int(levels.max()) <= 400
    assert len(set(levels.tolist())) > 6  # drawn afresh for every image
    for inputs in seen:
        for row, level in enumerate(inputs["aug_level"].tolist()):
            same = torch.equal(inputs["low_res"][row], clean[row])
            assert same == (level == 0)  # noised exactly when the level says so


def constant_batches(tokenizer, batch_size=8, seed=0):
    """Endless batches of single-colour 16x16 images and their single-colour 4x4 inputs."""
    gen = torch.Generator().manual_seed(seed)
    tokens, mask = tokenize_batch(tokenizer, ["a plain colour"] * batch_size, 16)
    while True:
        colours = torch.randint(0, 256, (batch_size, 1, 1, 3), generator=gen).to(torch.uint8)
        yield {
            "image": colours.expand(batch_size, 16, 16, 3).contiguous(),
            "low_res": colours.expand(batch_size, 4, 4, 3).contiguous(),
            "tokens": tokens,
            "mask": mask,
        }


def denoising_error(module, model, tokenizer, colours, t):
    """Mean absolute error (0..255 units) of the x0 predicted from a noised constant image whose
    low-res input has the same colour, and the spatial spread of that prediction."""
    x0 = colours[:, :, None, None].float().div(127.5).sub(1).expand(-1, 3, 16, 16)
    low = colours[:, :, None, None].float().div(127.5).sub(1).expand(-1, 3, 4, 4)
    tokens, mask = tokenize_batch(tokenizer, ["a plain colour"] * len(colours), 16)
    steps = torch.full((len(colours),), t)
    x_t = module.diffusion.q_sample(x0, steps, torch.randn(x0.shape, generator=GEN.manual_seed(t)))
    with torch.no_grad():
        eps = model(x_t, steps, tokens, mask, low_res=low)[:, :3]
    pred = module.diffusion.predict_xstart_from_eps(x_t, steps, eps).clamp(-1, 1)
    return float((pred - x0).abs().mean()) * 127.5, float(pred.std(dim=(2, 3)).mean()) * 127.5


GEN = torch.Generator()


def test_trained_on_constants_it_keeps_a_constant_image_constant(tokenizer):
    """Trained on single-colour images, the upsampler turns a single-colour input into a
    (nearly) single-colour output: its denoiser keeps a noised constant image constant and in
    its colour, and full sampling gives images far flatter than an untrained model's."""
    pl.seed_everything(0, verbose=False)
    module = upsampler_module(tokenizer, lr=3e-3, ema_decay=0.9)
    colours = torch.tensor([[40, 160, 220], [200, 60, 90], [128, 128, 128]], dtype=torch.uint8)
    low = colours[:, None, None, :].expand(3, 4, 4, 3).contiguous()

    def sampled_spread(model):
        sampler = SamplingModel.of_network(model, tokenizer, module.diffusion_settings)
        settings = SamplerSettings(steps="fast27", temperature=0.997)
        out = sample_upsample(sampler, ["a plain colour"] * 3, low, settings).float()
        return float(out.std(dim=(1, 2)).mean())

    untrained = module.ema_model()
    before = [denoising_error(module, untrained, tokenizer, colours, t) for t in (50, 200)]
    spread_before = sampled_spread(untrained)
    fit(module, None, steps=400, batches=constant_batches(tokenizer))
    trained = module.ema_model()
    after = [denoising_error(module, trained, tokenizer, colours, t) for t in (50, 200)]
    for (error, spread), (error_0, spread_0) in zip(after, before, strict=True):
        assert error < 12 and spread < 8, (before, after)
        assert error < error_0 / 3 and spread < spread_0 / 3, (before, after)
    spread_after = sampled_spread(trained)
    assert spread_after < spread_before / 4, (spread_before, spread_after)
