"""Upsampler sampling and the cascade: shapes, conditioning, the inpainting cascade's known
pixels, and `glide-sample --upsample` on tiny model files."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.models import create_glide_model
from pipeline.models.model_file import model_file_payload
from pipeline.sampling import SamplerSettings
from pipeline.sampling.cascade import downsample_edit, sample_cascade
from pipeline.sampling.cli import main
from pipeline.sampling.loading import load_sampling_model
from pipeline.sampling.upsample import sample_upsample
from tests.sampling.conftest import write_model_file
from tests.training.conftest import TINY_MODEL

LINEAR = {"diffusion_steps": 1000, "noise_schedule": "linear"}
DDIM3 = SamplerSettings(steps="ddim3", temperature=0.997)


def write_upsampler_file(path, tokenizer, size=32, **overrides):
    """A tiny (untrained, perturbed) 16 -> ``size`` text-conditional upsampler file."""
    torch.manual_seed(1)
    config = {**TINY_MODEL, "image_size": size, "attention_resolutions": (size // 2,)}
    config["vocab_size"] = tokenizer.vocab_size
    model = create_glide_model(**{**config, "super_res": True, **overrides})
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)  # zero-initialised outputs would hide bugs
    payload = model_file_payload(
        model.state_dict(),
        model.config,
        diffusion=LINEAR,
        tokenizer=tokenizer.identity,
        step=3,
        mlflow_run_id="run-up",
        stage="train_upsampler",
    )
    torch.save(payload, path)
    return path


@pytest.fixture(scope="module")
def upsampler_file(tmp_path_factory, clip_tokenizer):
    return write_upsampler_file(tmp_path_factory.mktemp("up") / "upsampler.pt", clip_tokenizer)


def low_res_images(count=2, size=16):
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (count, size, size, 3), generator=gen).to(torch.uint8)


def test_upsampler_output_shape_and_low_res_conditioning(upsampler_file):
    up = load_sampling_model(upsampler_file, expect="upsample")
    low = low_res_images()
    out = sample_upsample(up, ["a", "b"], low, DDIM3)
    assert out.shape == (2, 32, 32, 3) and out.dtype == torch.uint8
    assert torch.equal(out, sample_upsample(up, ["a", "b"], low, DDIM3))
    flipped = sample_upsample(up, ["a", "b"], low.flip(1), DDIM3)
    assert not torch.equal(out, flipped)  # the low-res input conditions the output
    colder = sample_upsample(up, ["a", "b"], low, replace(DDIM3, temperature=0.5))
    assert not torch.equal(out, colder)  # the temperature scales the initial noise
    with pytest.raises(ValueError, match="2 low-res images for 3 captions"):
        sample_upsample(up, ["a", "b", "c"], low, DDIM3)
    with pytest.raises(ValueError, match="divides the upsampler"):
        sample_upsample(up, ["a", "b"], low[:, :12, :12], DDIM3)
    with pytest.raises(ValueError, match="noise_cond_aug"):
        sample_upsample(up, ["a", "b"], low, DDIM3, aug_level=100)


def test_noise_aug_upsampler_gets_its_level(tmp_path, clip_tokenizer):
    path = write_upsampler_file(tmp_path / "aug.pt", clip_tokenizer, noise_cond_aug=True)
    up = load_sampling_model(path, expect="upsample")
    levels_seen = []
    up.model.register_forward_pre_hook(
        lambda _m, _a, kw: levels_seen.append(kw["aug_level"].clone()), with_kwargs=True
    )
    low = low_res_images()
    a = sample_upsample(up, ["a", "b"], low, DDIM3, aug_level=0)
    b = sample_upsample(up, ["a", "b"], low, DDIM3, aug_level=300)
    assert {int(v) for seen in levels_seen[:3] for v in seen} == {0}
    assert {int(v) for seen in levels_seen[3:] for v in seen} == {300}
    assert not torch.equal(a, b)


def test_inpainting_cascade_keeps_the_known_high_res_pixels(
    upsampler_file, tmp_path, clip_tokenizer
):
    base_path = write_model_file(tmp_path / "inpaint.pt", clip_tokenizer, inpaint=True)
    base = load_sampling_model(base_path, expect="inpaint")
    up = load_sampling_model(upsampler_file, expect="upsample")
    source = low_res_images(1, 32)[0]
    keep = torch.ones(32, 32, dtype=torch.bool)
    keep[9:20, 5:23] = False
    base_settings = SamplerSettings(steps="ddim3")
    result = sample_cascade(base, up, ["x", "y"], base_settings, DDIM3, edit=(source, keep))
    assert result.base.shape == (2, 16, 16, 3) and result.upsampled.shape == (2, 32, 32, 3)
    assert torch.equal(result.upsampled[:, keep], source[keep].expand(2, -1, 3))
    assert not torch.equal(result.upsampled[:, ~keep], source[~keep].expand(2, -1, 3))
    low_image, low_keep = downsample_edit(source, keep, 16)
    # the whole low-res result conditions the upsampler; its known part is the source's
    assert torch.equal(result.base[:, low_keep], low_image[low_keep].expand(2, -1, 3))
    # a low-res pixel is known only where all four of its high-res pixels are
    assert not bool(low_keep[4, 2]) and not bool(low_keep[9, 11]) and bool(low_keep[10, 11])
    expected = source.float().reshape(16, 2, 16, 2, 3).mean(dim=(1, 3)).round()
    assert torch.equal(low_image.float(), expected)


def cli(base, up, out, *extra):
    return main(
        ["--model", str(base), "--upsampler-model", str(up), "--out", str(out), "--steps",
         "ddim3", "--upsample-steps", "ddim3", "--upsample", *extra]
    )  # fmt: skip


def test_cli_cascade_round_trip(tiny_model_file, upsampler_file, tmp_path):
    args = ["--prompt", "a red circle", "--prompt", "a blue square", "--batch", "2"]
    assert cli(tiny_model_file, upsampler_file, tmp_path / "a", *args) == 0
    out = tmp_path / "a"
    summary = json.loads((out / "samples.json").read_text())
    assert summary["upsample"]["steps"] == "ddim3" and summary["upsample"]["temperature"] == 0.997
    assert summary["upsample"]["model_mlflow_run_id"] == "run-up"
    assert summary["upsample"]["tile"] == [0, 8, 200]  # whole images unless asked
    assert [r["file"] for r in summary["images"]][:2] == ["000_000.png", "000_001.png"]
    for record in summary["images"]:
        assert Image.open(out / record["file"]).size == (32, 32)
        assert Image.open(out / record["base_file"]).size == (16, 16)
    # same seed, same images; the upsampled image follows its base sample
    cli(tiny_model_file, upsampler_file, tmp_path / "b", *args)
    for record in summary["images"]:
        a = np.asarray(Image.open(out / record["file"]))
        assert np.array_equal(a, np.asarray(Image.open(tmp_path / "b" / record["file"])))
    # --upsample-tile runs the upsampler on tiles: other images from the same base samples
    tiles = ["--upsample-tile", "16", "--upsample-tile-below-t", "1000"]
    cli(tiny_model_file, upsampler_file, tmp_path / "c", *args, *tiles)
    first = summary["images"][0]["file"]
    tiled = np.asarray(Image.open(tmp_path / "c" / first))
    assert not np.array_equal(tiled, np.asarray(Image.open(out / first)))
    assert json.loads((tmp_path / "c" / "samples.json").read_text())["upsample"]["tile"] == [
        16,
        8,
        1000,
    ]
    # --upsample-projection reaches the upsampler: other images from the same base samples
    cli(tiny_model_file, upsampler_file, tmp_path / "d", *args, "--upsample-projection")
    projected = json.loads((tmp_path / "d" / "samples.json").read_text())
    assert projected["upsample"]["projection"] and not summary["upsample"]["projection"]
    for record in summary["images"]:  # block means: tests/sampling/test_low_res_projection.py
        plain = np.asarray(Image.open(out / record["file"]))
        assert not np.array_equal(plain, np.asarray(Image.open(tmp_path / "d" / record["file"])))


def test_cli_cascade_errors(tiny_model_file, upsampler_file, tmp_path, capsys):
    def expect(argv, fragment):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert fragment in capsys.readouterr().err

    base = ["--prompt", "x", "--out", str(tmp_path / "o"), "--upsample"]
    expect([*base, "--model", str(tiny_model_file), "--upsampler-model", str(tiny_model_file)],
           "holds a text2im model; this needs an upsample model")  # fmt: skip
    expect([*base, "--upsample-temp", "0"], "--upsample-temp must be > 0")
    expect([*base, "--upsample-steps", "ddimx"], "--upsample-steps")
    expect([*base, "--upsample-tile", "8", "--upsample-tile-stride", "16"], "leaves gaps")
    image, mask = tmp_path / "in.png", tmp_path / "mask.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(mask)
    expect(
        [*base, "--model", str(tiny_model_file), "--upsampler-model", str(upsampler_file),
         "--image", str(image), "--mask", str(mask), "--baseline-replace"],
        "the model works at 32x32",
    )  # fmt: skip
