"""Load a trained model file for sampling: the network, its tokenizer and diffusion settings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.diffusion import GaussianDiffusion, create_diffusion
from pipeline.models.execution import compile_for_sampling, sample_in_precision
from pipeline.models.glide_unet import Text2ImUNet
from pipeline.models.model_file import ModelFileError, load_model
from pipeline.text import Tokenizer, get_tokenizer

DIFFUSION_KEYS = (
    "diffusion_steps",
    "noise_schedule",
)  # required; the parameterisation may be absent


class MissingDiffusionError(ValueError):
    """A model offered for sampling without the diffusion it was trained with."""


@dataclass
class SamplingModel:
    """A network ready to sample with the diffusion it was trained with: network (eval mode),
    tokenizer, the diffusion's step count and noise schedule (never defaulted), what the network
    predicts (files written before that option predict GLIDE's epsilon), and the model file's
    metadata (stage, step, mlflow_run_id, ...; empty for a network in training)."""

    model: Text2ImUNet
    tokenizer: Tokenizer
    diffusion_steps: int
    noise_schedule: str
    prediction_type: str = "epsilon"
    low_res_residual: bool = False
    sigma_data: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_network(
        cls, model: Text2ImUNet, tokenizer: Tokenizer, diffusion: Mapping[str, Any] | None
    ) -> SamplingModel:
        """A network with its ``{"diffusion_steps", "noise_schedule"}`` (e.g. a training module's
        ``diffusion_settings``); MissingDiffusionError when either is absent."""
        missing = [key for key in DIFFUSION_KEYS if key not in (diffusion or {})]
        if diffusion is None or missing:
            raise MissingDiffusionError(
                f"the model comes without its diffusion settings (missing {', '.join(missing)}): "
                "sampling needs the schedule it was trained with, there is no default"
            )
        return cls(
            model=model,
            tokenizer=tokenizer,
            diffusion_steps=int(diffusion["diffusion_steps"]),
            noise_schedule=str(diffusion["noise_schedule"]),
            prediction_type=str(diffusion.get("prediction_type", "epsilon")),
            low_res_residual=bool(diffusion.get("low_res_residual", False)),
            sigma_data=float(diffusion.get("sigma_data", 1.0)),
        )

    @property
    def diffusion_settings(self) -> dict[str, Any]:
        """The diffusion's settings, as model files and configs spell them."""
        return {
            "diffusion_steps": self.diffusion_steps,
            "noise_schedule": self.noise_schedule,
            "prediction_type": self.prediction_type,
            "low_res_residual": self.low_res_residual,
            "sigma_data": self.sigma_data,
        }

    def diffusion(self, respacing: str = "") -> GaussianDiffusion:
        """The model's diffusion, respaced to ``respacing`` ("" = all its steps)."""
        return create_diffusion(
            self.diffusion_steps,
            self.noise_schedule,
            respacing,
            prediction_type=self.prediction_type,
            low_res_residual=self.low_res_residual,
            sigma_data=self.sigma_data,
        )

    @property
    def device(self) -> torch.device:
        """Where the network's parameters are."""
        return next(self.model.parameters()).device


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


def model_variant(model: torch.nn.Module) -> str:
    """``text2im``, ``inpaint``, ``upsample``, ``upsample-inpaint`` or ``instruct``."""
    if model.config.get("instruct"):
        return "instruct"
    return {
        (False, False): "text2im",
        (True, False): "inpaint",
        (False, True): "upsample",
        (True, True): "upsample-inpaint",
    }[(bool(model.inpaint), bool(model.super_res))]


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
    (base), ``inpaint``, ``upsample`` or ``instruct``; a file of another variant is a
    ModelFileError.
    ``compile``: torch.compile the network for sampling (CUDA graphs on a GPU; see
    :func:`pipeline.models.execution.compile_for_sampling`); the first call of each batch shape
    pays the compilation. ``precision`` "bf16-mixed" or "16-mixed": the network runs under
    autocast (tensor cores on a GPU), the sampler's maths in float32."""
    model, info = load_model(path, device=device)
    variant = model_variant(model)
    if variant != expect:
        a_variant, an_expect = (
            f"{'an' if w[0] in 'aeiou' else 'a'} {w}" for w in (variant, expect)
        )
        raise ModelFileError(f"{path} holds {a_variant} model; this needs {an_expect} model")
    tokenizer = tokenizer_for(
        str(info["tokenizer"]),
        gpt2_encoder_json=gpt2_encoder_json,
        gpt2_vocab_bpe=gpt2_vocab_bpe,
    )
    try:
        loaded = SamplingModel.of_network(model, tokenizer, info.get("diffusion"))
    except MissingDiffusionError as err:
        raise ModelFileError(f"{path}: {err}") from err
    sample_in_precision(model, precision)
    if compile:
        compile_for_sampling(model, backend=compile_backend)
    loaded.info = info
    return loaded
