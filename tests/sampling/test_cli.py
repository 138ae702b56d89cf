"""The glide-sample command: files written, seeding, and clear errors for bad input."""

import json
from pathlib import Path

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
        "holds an inpaint model",
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


def write_edit_inputs(folder, mask_size=16):
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    mask = np.full((mask_size, mask_size), 255, dtype=np.uint8)
    mask[4:10, 4:12] = 0  # black = generate
    Image.fromarray(image).save(folder / "in.png")
    Image.fromarray(mask).save(folder / "mask.png")
    return image, mask == 255


@pytest.fixture(scope="module")
def tiny_inpaint_file(tmp_path_factory, clip_tokenizer):
    return write_model_file(
        tmp_path_factory.mktemp("inpaint") / "inpaint.pt", clip_tokenizer, inpaint=True
    )


def test_edit_round_trips_a_png(tiny_inpaint_file, tmp_path):
    image, keep = write_edit_inputs(tmp_path)
    edit = ["--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png")]
    assert sample_cli(tiny_inpaint_file, tmp_path / "out", "--prompt", "a red star", *edit) == 0
    edited = np.asarray(Image.open(tmp_path / "out/000_000.png"))
    assert np.array_equal(edited[keep], image[keep])
    summary = json.loads((tmp_path / "out/samples.json").read_text())
    assert summary["guidance"] == 5.0 and summary["edit"]["mask"].endswith("mask.png")
    # the reverse convention: white = generate
    sample_cli(tiny_inpaint_file, tmp_path / "inv", "--prompt", "x", *edit, "--invert-mask")
    inverted = np.asarray(Image.open(tmp_path / "inv/000_000.png"))
    assert np.array_equal(inverted[~keep], image[~keep])


def test_baseline_replace_uses_the_text_to_image_model(tiny_model_file, tmp_path):
    image, keep = write_edit_inputs(tmp_path)
    edit = ["--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png")]
    args = ["--prompt", "a red star", *edit, "--baseline-replace"]
    assert sample_cli(tiny_model_file, tmp_path / "out", *args) == 0
    edited = np.asarray(Image.open(tmp_path / "out/000_000.png"))
    assert np.array_equal(edited[keep], image[keep])


def test_edit_errors(tiny_inpaint_file, tiny_model_file, tmp_path, capsys):
    write_edit_inputs(tmp_path, mask_size=8)
    base = ["--model", str(tiny_inpaint_file), "--prompt", "x", "--out", str(tmp_path / "o")]
    edit = ["--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png")]
    expect_error(capsys, [*base, *edit], "mask is 8x8 but the image is 16x16")
    Image.fromarray(np.full((16, 16), 255, dtype=np.uint8)).save(tmp_path / "all_keep.png")
    keep_all = ["--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "all_keep.png")]
    expect_error(capsys, [*base, *keep_all], "nothing to generate")
    (tmp_path / "broken.png").write_bytes(b"\\x89PNG broken")
    broken = ["--image", str(tmp_path / "broken.png"), "--mask", str(tmp_path / "mask.png")]
    expect_error(capsys, [*base, *broken], "cannot read image", "broken.png")
    expect_error(capsys, [*base, "--image", str(tmp_path / "in.png")], "both --image and --mask")
    text2im = ["--model", str(tiny_model_file), "--prompt", "x", "--out", str(tmp_path / "o")]
    expect_error(capsys, [*text2im, *edit], "holds a text2im model")


def test_unwritable_output_folder_is_a_clear_error(tiny_model_file, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file where the output folder should go")
    argv = ["--model", str(tiny_model_file), "--prompt", "a red circle", "--steps", "ddim2"]
    expect_error(
        capsys,
        [*argv, "--out", str(tmp_path / "taken" / "out")],
        "cannot write the output folder",
        "Not a directory",
    )


def test_readme_names_the_files_it_writes(tiny_model_file, tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    args = ["--prompt", "a red circle", "--batch", "2"]
    assert sample_cli(tiny_model_file, tmp_path, *args) == 0
    written = sorted(p.name for p in tmp_path.glob("*.png") if p.name != "grid.png")
    assert written == ["000_000.png", "000_001.png"]
    assert all(f"`{name}`" in readme for name in written)
    assert "<prompt>_<image>" not in readme


@pytest.fixture(scope="module")
def tiny_instruct_file(tmp_path_factory, clip_tokenizer):
    return write_model_file(
        tmp_path_factory.mktemp("instruct") / "instruct.pt", clip_tokenizer, instruct=True
    )


def test_instruction_edit_writes_edits_and_an_input_edits_grid(tiny_instruct_file, tmp_path):
    image, _ = write_edit_inputs(tmp_path)
    edit = ["--edit", str(tmp_path / "in.png"), "--batch", "2"]
    texts = ["--instruction", "make the circle blue", "--instruction", "remove the star"]
    assert sample_cli(tiny_instruct_file, tmp_path / "out", *edit, *texts) == 0
    names = sorted(p.name for p in (tmp_path / "out").glob("0*.png"))
    assert names == ["000_000.png", "000_001.png", "001_000.png", "001_001.png"]
    grid = np.asarray(Image.open(tmp_path / "out/grid.png"))
    assert grid.shape[1] >= 3 * 16  # input | two edits per row
    summary = json.loads((tmp_path / "out/samples.json").read_text())
    assert summary["guidance"] == 7.5
    assert summary["instruct_edit"] == {"image": str(tmp_path / "in.png"), "image_guidance": 1.5}
    assert [r["prompt"] for r in summary["images"]][::2] == [
        "make the circle blue",
        "remove the star",
    ]


def test_instruction_edit_errors(tiny_instruct_file, tiny_model_file, tmp_path, capsys):
    write_edit_inputs(tmp_path)
    out = ["--out", str(tmp_path / "o")]
    edit = ["--edit", str(tmp_path / "in.png")]
    instruct = ["--model", str(tiny_instruct_file), *out]
    expect_error(capsys, [*instruct, *edit], "needs a non-empty --instruction")
    expect_error(
        capsys, [*instruct, *edit, "--instruction", " "], "needs a non-empty --instruction"
    )
    expect_error(capsys, [*instruct, "--edit", str(tmp_path / "nope.png"), "--instruction", "x"],
                 "cannot read image")  # fmt: skip
    text2im = ["--model", str(tiny_model_file), *out, *edit, "--instruction", "x"]
    expect_error(capsys, text2im, "holds a text2im model; this needs an instruct model")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "small.png")
    small = [*instruct, "--edit", str(tmp_path / "small.png"), "--instruction", "x"]
    expect_error(capsys, small, "the model works at 16x16")
    expect_error(capsys, [*instruct, "--instruction", "x", "--prompt", "y"], "need --edit")
