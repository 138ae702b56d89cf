"""From a model config section (GLIDE names) to a tokenizer, a model and its diffusion settings."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.models import GLIDE_KEYS, create_glide_model, widen_inputs
from pipeline.text import Tokenizer, get_tokenizer

DIFFUSION_KEYS = (
    "diffusion_steps",
    "noise_schedule",
    "prediction_type",
    "low_res_residual",
    "sigma_data",
)


def build_tokenizer(model_cfg: DictConfig) -> Tokenizer:
    """The tokenizer a model section names (CLIP BPE, or GPT-2 BPE from the user's files)."""
    if model_cfg.tokenizer == "gpt2":
        return get_tokenizer(
            "gpt2", encoder_json=model_cfg.gpt2_encoder_json, vocab_bpe=model_cfg.gpt2_vocab_bpe
        )
    return get_tokenizer(str(model_cfg.tokenizer))


def tokenizer_spec(model_cfg: DictConfig) -> str | dict[str, str]:
    """A picklable description of the tokenizer that Ray Data workers build once each."""
    if model_cfg.tokenizer == "gpt2":
        return {
            "name": "gpt2",
            "encoder_json": str(model_cfg.gpt2_encoder_json),
            "vocab_bpe": str(model_cfg.gpt2_vocab_bpe),
        }
    return str(model_cfg.tokenizer)


def glide_model_kwargs(model_cfg: DictConfig | dict[str, Any], vocab_size: int) -> dict[str, Any]:
    """The keyword arguments of ``create_glide_model`` taken from a model config section."""
    plain = (
        OmegaConf.to_container(model_cfg, resolve=True)
        if isinstance(model_cfg, DictConfig)
        else dict(model_cfg)
    )
    kwargs = {key: plain[key] for key in GLIDE_KEYS if key in plain}
    for key in ("channel_mult", "attention_resolutions"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    kwargs["vocab_size"] = vocab_size
    return kwargs


def diffusion_settings(model_cfg: DictConfig) -> dict[str, Any]:
    """The diffusion settings of a model section (``DIFFUSION_KEYS``), as model files keep them."""
    return {key: model_cfg[key] for key in DIFFUSION_KEYS}


def starting_weights(payload: dict[str, Any], model_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The state dict a fine-tuning stage starts from, shaped for the model it trains.

    An inpainting or instruction-editing stage starting from a text-to-image model widens it:
    the new input channels (masked image and mask; the image to edit) get zero weights, so at
    step 0 both models give the same output.
    """
    state = payload["state_dict"]
    added = {
        flag: True
        for flag in ("inpaint", "instruct")
        if model_kwargs.get(flag) and not payload["model_config"].get(flag)
    }
    if added:
        source = create_glide_model(**payload["model_config"])
        source.load_state_dict(state, strict=True)
        return widen_inputs(source, **added).state_dict()
    return state
