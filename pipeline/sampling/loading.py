"""Load a trained model file for sampling: the network, its tokenizer and diffusion settings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.models.execution import compile_for_sampling, sample_in_precision
from pipeline.models.glide_unet import Text2ImUNet
from pipeline.models.model_file import ModelFileError, load_model
from pipeline.text import Tokenizer, get_tokenizer


@dataclass
class SamplingModel:
    """A model file ready to sample: network (eval mode), tokenizer, diffusion settings."""

    model: Text2ImUNet
    tokenizer: Tokenizer
    diffusion_steps: int
    noise_schedule: str
    info: dict[str, Any]  # the model file's metadata (stage, step, mlflow_run_id, ...)


def tokenizer_for(
    identity: str, *, gpt2_encoder_json: str = "", gpt2_vocab_bpe: str = ""
) -> Tokenizer:
    """The tokenizer a model file names; GPT-2 BPE needs the user's two vocabulary files, and
    they must be the files the model was trained with."""
    if identity.startswith("gpt2-bpe:"):
        if not (gpt2_encoder_json and gpt2_vocab_bpe):
            raise ModelFileError(
                "this model uses a GPT-2 BPE tokenizer: pass its encoder.json and vocab.bpe "
                "(--gpt2-encoder-json, --gpt2-vocab-bpe)"
            )
        tokenizer = get_tokenizer("gpt2", encoder_json=gpt2_encoder_json, vocab_bpe=gpt2_vocab_bpe)
    else:
        tokenizer = get_tokenizer("clip")
    if tokenizer.identity != identity:
        raise ModelFileError(
            f"the model was trained with tokenizer {identity!r}, "
            f"but the available one is {tokenizer.identity!r}"
        )
    return tokenizer


def load_sampling_model(
    path: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    expect: str = "text2im",
    gpt2_encoder_json: str = "",
    gpt2_vocab_bpe: str = "",
    compile: bool = False,
    compile_backend: str = "inductor",
    precision: str = "32-true",
) -> SamplingModel:
    """Load ``path`` for sampling. ``expect`` names the variant the caller needs: ``text2im``
    (base), ``inpaint`` or ``upsample``; a file of another variant is a ModelFileError.
    ``compile``: torch.compile the network for sampling (CUDA graphs on a GPU; see
    :func:`pipeline.models.execution.compile_for_sampling`); the first call of each batch shape
    pays the compilation. ``precision`` "bf16-mixed" or "16-mixed": the network runs under
    autocast (tensor cores on a GPU), the sampler's maths in float32."""
    model, info = load_model(path, device=device)
    variant = {
        (False, False): "text2im",
        (True, False): "inpaint",
        (False, True): "upsample",
        (True, True): "upsample-inpaint",
    }[(bool(model.inpaint), bool(model.super_res))]
    if variant != expect:
        raise ModelFileError(f"{path} holds a {variant} model; this needs a {expect} model")
    tokenizer = tokenizer_for(
        str(info["tokenizer"]),
        gpt2_encoder_json=gpt2_encoder_json,
        gpt2_vocab_bpe=gpt2_vocab_bpe,
    )
    sample_in_precision(model, precision)
    if compile:
        compile_for_sampling(model, backend=compile_backend)
    return SamplingModel(
        model=model,
        tokenizer=tokenizer,
        diffusion_steps=int(info["diffusion"]["diffusion_steps"]),
        noise_schedule=str(info["diffusion"]["noise_schedule"]),
        info=info,
    )
