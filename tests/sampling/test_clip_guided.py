"""CLIP guidance: the gradient hook of a real noised CLIP, original timesteps after respacing,
and the glide-sample --clip-guidance round trip with tiny model files written here."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.diffusion import create_diffusion
from pipeline.models.clip_file import clip_file_payload
from pipeline.models.noised_clip import NoisedCLIP
from pipeline.sampling import SamplerSettings
from pipeline.sampling.cli import main
from pipeline.sampling.clip_guided import clip_guidance_cond_fn, sample_clip_guided
from pipeline.sampling.loading import load_sampling_model
from pipeline.sampling.text_to_image import sample_text_to_image
from pipeline.text.clip_tokens import clip_text_tokens, clip_vocab_size
from tests.models.test_noised_clip import DIFFUSION, TINY_CLIP


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny models sample fastest on one thread, above all on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_clip(seed=0):
    torch.manual_seed(seed)
    return NoisedCLIP(**TINY_CLIP, vocab_size=clip_vocab_size()).eval()


def write_clip(path, noised=True, **overrides):
    torch.manual_seed(0)
    model = NoisedCLIP(**{**TINY_CLIP, **overrides}, vocab_size=clip_vocab_size())
    payload = clip_file_payload(
        model.state_dict(), model.config, diffusion=DIFFUSION, step=1, extra={"noised": noised}
    )
    torch.save(payload, path)
    return path


def test_cond_fn_gradient_matches_finite_differences():
    """Directional derivatives (clip's LayerNorm computes in float32, so float32 differences
    along random directions, which average out rounding)."""
    model = tiny_clip()
    prompts = ["a red circle", "a blue square"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 16, generator=g)
    t = torch.tensor([100, 800])
    scale = 2.5
    grad = clip_guidance_cond_fn(model, prompts, scale)(x, t)
    assert grad.shape == x.shape and not x.requires_grad
    z_text = F.normalize(model.encode_text(clip_text_tokens(prompts, 12)), dim=-1).detach()

    def objective(x_):
        with torch.no_grad():
            z_image = F.normalize(model.encode_image(x_, t), dim=-1)
            return float((model.logit_scale.exp() * (z_text * z_image).sum(-1)).sum())

    h = 1e-2
    for _ in range(4):
        direction = torch.randn(x.shape, generator=g)
        numeric = (objective(x + h * direction) - objective(x - h * direction)) / (2 * h)
        analytic = float((grad * direction).sum()) / scale
        assert abs(analytic - numeric) <= 2e-2 * abs(numeric) + 1e-3, (analytic, numeric)


class RecordingClip(torch.nn.Module):
    """A noised CLIP that records the timesteps its image encoder is called with."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip
        self.seen = []

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.clip, name)

    def encode_image(self, x, t):
        self.seen.extend(t.tolist())
        return self.clip.encode_image(x, t)


@pytest.mark.parametrize("steps", ["5", "ddim4"])
def test_clip_sees_original_timesteps_and_scale_zero_is_unguided(tiny_model_file, steps):
    loaded = load_sampling_model(tiny_model_file)
    recorder = RecordingClip(tiny_clip())
    settings = SamplerSettings(steps=steps, seed=3)
    prompts = ["a red circle", "a blue square"]
    unguided = sample_text_to_image(loaded, prompts, settings, guidance_scale=1.0)
    zero = sample_clip_guided(loaded, recorder, prompts, settings, clip_guidance_scale=0.0)
    assert torch.equal(zero, unguided)
    kept = create_diffusion(1000, "squaredcos_cap_v2", steps).timestep_map.tolist()
    assert sorted(set(recorder.seen)) == sorted(kept) and max(kept) > len(kept)  # not 0..k-1
    guided = sample_clip_guided(loaded, recorder, prompts, settings, clip_guidance_scale=50.0)
    assert not torch.equal(guided, unguided)


def test_glide_sample_clip_guidance_round_trip(tiny_model_file, tmp_path):
    clip_path = write_clip(tmp_path / "noised_clip.pt")
    argv = [
        "--model", str(tiny_model_file), "--clip-model", str(clip_path), "--clip-guidance", "4",
        "--prompt", "a red circle", "--batch", "2", "--steps", "ddim3", "--seed", "1",
    ]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    summary = json.loads((tmp_path / "a/samples.json").read_text())
    assert summary["clip_guidance"] == {"scale": 4.0, "clip_model": str(clip_path)}
    assert summary["guidance"] == 1.0  # no classifier-free guidance, as GLIDE's comparison
    for name in ("000_000.png", "000_001.png"):
        a = np.asarray(Image.open(tmp_path / "a" / name))
        assert a.shape == (16, 16, 3)
        assert np.array_equal(a, np.asarray(Image.open(tmp_path / "b" / name)))


def expect_usage_error(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_clip_guidance_errors_name_the_problem(tiny_model_file, tmp_path, capsys):
    base = ["--model", str(tiny_model_file), "--prompt", "x", "--out", str(tmp_path / "o")]
    clip_path = write_clip(tmp_path / "noised_clip.pt")
    with_clip = [*base, "--clip-model", str(clip_path), "--clip-guidance", "3"]
    expect_usage_error(capsys, [*with_clip, "--guidance", "3"], "without classifier-free")
    expect_usage_error(
        capsys,
        [*base, "--clip-guidance", "3", "--clip-model", str(tmp_path / "nope.pt")],
        "not found",
    )
    clean = write_clip(tmp_path / "eval_clip.pt", noised=False)
    expect_usage_error(
        capsys, [*base, "--clip-guidance", "3", "--clip-model", str(clean)], "clean images"
    )
    wrong_size = write_clip(tmp_path / "clip32.pt", image_size=32)
    expect_usage_error(
        capsys,
        [*base, "--clip-guidance", "3", "--clip-model", str(wrong_size)],
        "reads 32x32 images",
    )
    expect_usage_error(
        capsys,
        [*base, "--clip-guidance", "3", "--clip-model", str(tiny_model_file)],
        "not a noised CLIP",
    )
    assert not (tmp_path / "o").exists()
