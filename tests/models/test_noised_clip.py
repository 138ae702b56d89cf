"""The noised CLIP: a timestep-aware image encoder, CLIP's text encoder and tokens, model files,
and the evaluation CLIP (OpenAI weights from a local file, or a clean CLIP trained here)."""

import warnings

import pytest
import torch

from pipeline.models.clip_file import clip_file_payload, load_noised_clip
from pipeline.models.eval_clip import load_eval_clip, load_openai_clip
from pipeline.models.model_file import ModelFileError
from pipeline.models.noised_clip import NoisedCLIP
from pipeline.text.clip_tokens import clip_text_tokens, clip_vocab_size

TINY_CLIP = dict(
    image_size=16,
    patch_size=4,
    width=32,
    layers=1,
    heads=2,
    embed_dim=16,
    text_ctx=12,
    text_width=32,
    text_layers=1,
    text_heads=2,
    diffusion_steps=1000,
)
DIFFUSION = {"diffusion_steps": 1000, "noise_schedule": "squaredcos_cap_v2"}


def tiny_clip(seed=0):
    torch.manual_seed(seed)
    return NoisedCLIP(**TINY_CLIP, vocab_size=clip_vocab_size()).eval()


def test_image_embedding_depends_on_the_timestep():
    model = tiny_clip()
    x = torch.randn(1, 3, 16, 16).expand(3, -1, -1, -1)
    z = model.encode_image(x, torch.tensor([0, 500, 999]))
    assert z.shape == (3, 16)
    assert not torch.allclose(z[0], z[1]) and not torch.allclose(z[1], z[2])
    again = model.encode_image(x[:1], torch.tensor([500]))
    torch.testing.assert_close(again[0], z[1])


def test_encoder_rejects_bad_inputs():
    model = tiny_clip()
    with pytest.raises(ValueError, match="16x16"):
        model.encode_image(torch.randn(1, 3, 8, 8), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"timesteps must be in \[0, 1000\)"):
        model.encode_image(torch.randn(1, 3, 16, 16), torch.tensor([1000]))
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        NoisedCLIP(**{**TINY_CLIP, "patch_size": 5}, vocab_size=10)


def test_tokens_are_openai_clip_tokens():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import clip
    captions = ["a red circle", "", "a small white triangle " * 5]
    expected = clip.tokenize(captions, context_length=12, truncate=True)
    assert torch.equal(clip_text_tokens(captions, 12), expected)


def test_text_embedding_is_read_at_the_end_token():
    model = tiny_clip()
    tokens = clip_text_tokens(["a red circle", "a blue square"], 12)
    z = model.encode_text(tokens)
    padded_differently = tokens.clone()
    padded_differently[0, 5:] = 0  # after <|endoftext|>: causal attention cannot see it
    assert padded_differently[0].argmax() == tokens[0].argmax()
    torch.testing.assert_close(model.encode_text(padded_differently)[0], z[0])


def write_clip_file(path, model, noised):
    payload = clip_file_payload(
        model.state_dict(),
        model.config,
        diffusion=DIFFUSION,
        step=3,
        stage="train_noised_clip",
        extra={"noised": noised},
    )
    torch.save(payload, path)
    return path


def test_clip_model_file_round_trip_and_eval_clip_refuses_the_guidance_clip(tmp_path):
    model = tiny_clip()
    noised = write_clip_file(tmp_path / "noised_clip.pt", model, noised=True)
    loaded, info = load_noised_clip(noised)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    torch.testing.assert_close(loaded.encode_image(x, t), model.encode_image(x, t))
    assert info["step"] == 3 and info["extra"]["noised"] is True
    with pytest.raises(ModelFileError, match="did not guide the samples"):
        load_eval_clip(noised)

    clean = load_eval_clip(write_clip_file(tmp_path / "eval_clip.pt", model, noised=False))
    assert clean.metric_name == "clip_score_proxy"
    images = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8)
    z = clean.encode_image(images)
    expected = model.encode_image(images.permute(0, 3, 1, 2) / 127.5 - 1, torch.zeros(2).long())
    torch.testing.assert_close(z, expected)
    scores = clean.score(images, ["a red circle", "a blue square"])
    assert scores.shape == (2,) and bool(((scores >= 0) & (scores <= 100)).all())


def openai_style_state_dict():
    """A tiny CLIP state dict in OpenAI's layout (what clip.model.build_model reads)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from clip.model import CLIP, convert_weights
    torch.manual_seed(0)
    model = CLIP(
        embed_dim=16,
        image_resolution=32,
        vision_layers=1,
        vision_width=64,
        vision_patch_size=8,
        context_length=12,
        vocab_size=clip_vocab_size(),
        transformer_width=64,
        transformer_heads=1,
        transformer_layers=1,
    )
    state = {k: v.clone() for k, v in model.state_dict().items()}
    convert_weights(model)  # clip.load keeps OpenAI's fp16 weights: compare with those
    return model.float(), state


def test_openai_weights_load_from_a_local_file(tmp_path):
    reference, state = openai_style_state_dict()
    path = tmp_path / "tiny-openai-clip.pt"
    torch.save(state, path)
    loaded = load_openai_clip(path)
    assert loaded.metric_name == "clip_score"
    images = torch.rand(2, 3, 32, 32) * 2 - 1  # already at the model's resolution: no resize
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[None, :, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[None, :, None, None]
    with torch.no_grad():
        expected = reference.encode_image(((images + 1) / 2 - mean) / std)
    torch.testing.assert_close(loaded.encode_image(images), expected)
    with torch.no_grad():
        text = reference.encode_text(clip_text_tokens(["a red circle"], 12))
    torch.testing.assert_close(loaded.encode_text(["a red circle"]), text)
    small = torch.randint(0, 256, (1, 16, 16, 3), dtype=torch.uint8)  # resized to 32x32
    assert loaded.similarity(small, ["a red circle"]).shape == (1,)


def test_openai_weights_errors_name_the_problem(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_openai_clip(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"visual.proj": torch.zeros(2, 2)}, bad)
    with pytest.raises(ModelFileError, match="cannot load OpenAI CLIP weights"):
        load_openai_clip(bad)
