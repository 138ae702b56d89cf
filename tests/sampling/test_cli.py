"""The glide-sample command: files written, seeding, and clear errors for bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.sampling.cli import main
from tests.sampling.conftest import write_model_file


def sample_cli(model, out, *extra):
    return main(
        ["--model", str(model), "--out", str(out), "--steps", "ddim3", "--seed", "0", *extra]
    )


def test_writes_every_image_a_grid_and_a_summary(tiny_model_file, tmp_path, capsys):
    prompts = ["a red circle", "a blue square"]
    args = ["--prompt", prompts[0], "--prompt", prompts[1], "--batch", "2", "--guidance", "3"]
    assert sample_cli(tiny_model_file, tmp_path / "a", *args) == 0
    names = sorted(p.name for p in (tmp_path / "a").glob("0*.png"))
    assert names == ["000_000.png", "000_001.png", "001_000.png", "001_001.png"]
    assert Image.open(tmp_path / "a/000_000.png").size == (16, 16)
    assert Image.open(tmp_path / "a/grid.png").size[0] >= 2 * 16
    summary = json.loads((tmp_path / "a/samples.json").read_text())
    assert [r["prompt"] for r in summary["images"]] == [prompts[0]] * 2 + [prompts[1]] * 2
    assert summary["model_mlflow_run_id"] == "run-123" and summary["guidance"] == 3.0
    assert "sampling" in capsys.readouterr().err  # progress bar

    sample_cli(tiny_model_file, tmp_path / "b", *args)
    sample_cli(tiny_model_file, tmp_path / "c", *args[:-2], "--guidance", "3", "--seed", "5")
    for name in names:
        a = np.asarray(Image.open(tmp_path / "a" / name))
        assert np.array_equal(a, np.asarray(Image.open(tmp_path / "b" / name)))
    c = np.asarray(Image.open(tmp_path / "c/000_000.png"))
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "a/000_000.png")), c)


def expect_error(capsys, argv, *fragments):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err


def test_missing_model_file(tmp_path, capsys):
    expect_error(
        capsys,
        ["--model", str(tmp_path / "nope.pt"), "--prompt", "x", "--out", str(tmp_path / "o")],
        "model file not found",
        "nope.pt",
    )
    assert not (tmp_path / "o").exists()


def test_incompatible_model_files(tmp_path, capsys, clip_tokenizer):
    inpaint = write_model_file(tmp_path / "inpaint.pt", clip_tokenizer, inpaint=True)
    expect_error(
        capsys,
        ["--model", str(inpaint), "--prompt", "x", "--out", str(tmp_path / "o")],
        "holds a inpaint model",
    )
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    expect_error(
        capsys,
        ["--model", str(tmp_path / "junk.pt"), "--prompt", "x", "--out", str(tmp_path / "o")],
        "cannot read model file",
    )


def test_no_prompt(tiny_model_file, tmp_path, capsys):
    expect_error(
        capsys, ["--model", str(tiny_model_file), "--out", str(tmp_path)], "no prompt given"
    )


@pytest.mark.parametrize("value", ["abc", "nan", "inf"])
def test_guidance_that_is_not_a_finite_number(tiny_model_file, tmp_path, capsys, value):
    argv = ["--model", str(tiny_model_file), "--prompt", "x", "--out", str(tmp_path)]
    expect_error(capsys, [*argv, "--guidance", value], "--guidance", repr(value))


def test_bad_steps(tiny_model_file, tmp_path, capsys):
    argv = ["--model", str(tiny_model_file), "--prompt", "x", "--out", str(tmp_path)]
    expect_error(capsys, [*argv, "--steps", "ddimX"], "--steps 'ddimX'")


def test_long_prompt_is_truncated_with_a_warning(tiny_model_file, tmp_path, capsys):
    long_prompt = " ".join(["a red circle above a blue square"] * 10)
    assert sample_cli(tiny_model_file, tmp_path, "--prompt", long_prompt, "--guidance", "1") == 0
    err = capsys.readouterr().err
    assert "prompt 0 is longer than the model's text_ctx=16 tokens and is truncated" in err
    assert (tmp_path / "000_000.png").exists()
