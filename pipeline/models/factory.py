"""Build GLIDE models from GLIDE-named settings; released and paper-scale configurations;
parameter counting; widening a trained model into its inpainting variant."""

from __future__ import annotations

import copy

import torch
from torch import nn

from pipeline.models.glide_unet import Text2ImUNet, default_channel_mult, input_layout

# Every key create_glide_model accepts, with its default (the released 64x64 base model;
# vocab_size has none: it must come from the tokenizer).
GLIDE_DEFAULTS: dict = dict(
    image_size=64,
    num_channels=192,
    num_res_blocks=3,
    channel_mult=(),  # () = derived from image_size (glide_unet.DEFAULT_CHANNEL_MULT)
    attention_resolutions=(32, 16, 8),
    num_heads=1,
    num_head_channels=64,
    num_heads_upsample=-1,
    dropout=0.1,
    text_ctx=128,
    xf_width=512,
    xf_layers=16,
    xf_heads=8,
    xf_final_ln=True,
    xf_padding=True,
    use_scale_shift_norm=True,
    resblock_updown=True,
    use_checkpoint=False,
    inpaint=False,
    super_res=False,
    vocab_size=None,
    noise_cond_aug=False,
    instruct=False,
)
GLIDE_KEYS = tuple(GLIDE_DEFAULTS)
_BOOL_KEYS = ("xf_final_ln", "xf_padding", "use_scale_shift_norm", "resblock_updown",
              "use_checkpoint", "inpaint", "super_res", "noise_cond_aug", "instruct")  # fmt: skip
_POSITIVE_INT_KEYS = ("image_size", "num_channels", "num_res_blocks", "text_ctx", "vocab_size")
_NONNEG_INT_KEYS = ("xf_width", "xf_layers", "xf_heads")


def _int_tuple(key: str, value) -> tuple[int, ...]:
    """Accept a tuple/list of ints or GLIDE's comma-separated string ('32,16,8')."""
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
        try:
            value = [int(v) for v in value]
        except ValueError as e:
            raise ValueError(f"{key} must be comma-separated ints, got {value!r}") from e
    try:
        out = tuple(value)
    except TypeError as e:
        raise ValueError(f"{key} must be a sequence of ints, got {value!r}") from e
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in out):
        raise ValueError(f"{key} must hold positive ints, got {value!r}")
    return out


def resolve_config(**kwargs) -> dict:
    """Defaults <- kwargs, validated; channel_mult derived when empty. Raises TypeError for an
    unknown key, ValueError for a bad value (naming the key)."""
    unknown = sorted(set(kwargs) - set(GLIDE_KEYS))
    if unknown:
        raise TypeError(f"unknown GLIDE model key(s) {unknown}; accepted: {list(GLIDE_KEYS)}")
    cfg = {**GLIDE_DEFAULTS, **kwargs}
    if cfg["vocab_size"] is None:
        raise ValueError(
            "vocab_size is required: take it from the tokenizer (tokenizer.vocab_size)"
        )
    for key in _BOOL_KEYS:
        if not isinstance(cfg[key], bool):
            raise ValueError(f"{key} must be a bool, got {cfg[key]!r}")
    for key in _POSITIVE_INT_KEYS + _NONNEG_INT_KEYS:
        v = cfg[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < (key in _POSITIVE_INT_KEYS):
            raise ValueError(
                f"{key} must be a {'positive' if key in _POSITIVE_INT_KEYS else 'non-negative'} int, got {v!r}"
            )
    for key in ("num_heads", "num_head_channels", "num_heads_upsample"):
        v = cfg[key]
        if not isinstance(v, int) or isinstance(v, bool) or (v != -1 and v <= 0):
            raise ValueError(f"{key} must be a positive int or -1, got {v!r}")
    if cfg["num_head_channels"] == -1 and cfg["num_heads"] == -1:
        raise ValueError("set num_heads or num_head_channels")
    if not (isinstance(cfg["dropout"], int | float) and 0.0 <= cfg["dropout"] < 1.0):
        raise ValueError(f"dropout must be in [0, 1), got {cfg['dropout']!r}")

    cfg["channel_mult"] = _int_tuple("channel_mult", cfg["channel_mult"]) or default_channel_mult(
        cfg["image_size"]
    )
    cfg["attention_resolutions"] = _int_tuple("attention_resolutions", cfg["attention_resolutions"])
    size, levels = cfg["image_size"], len(cfg["channel_mult"])
    if size % 2 ** (levels - 1):
        raise ValueError(
            f"image_size {size} is not divisible by 2^{levels - 1} (channel_mult {cfg['channel_mult']})"
        )
    resolutions = [size // 2**i for i in range(levels)]
    bad = [r for r in cfg["attention_resolutions"] if r not in resolutions]
    if bad:
        raise ValueError(f"attention_resolutions {bad} are not UNet resolutions {resolutions}")
    hc = cfg["num_head_channels"]
    attn_levels = {i for i, r in enumerate(resolutions) if r in cfg["attention_resolutions"]}
    for level in attn_levels | {levels - 1}:  # the middle block always has attention
        ch = cfg["channel_mult"][level] * cfg["num_channels"]
        if hc != -1 and ch % hc:
            raise ValueError(f"num_head_channels {hc} does not divide {ch} channels")
    if cfg["xf_width"] and (not cfg["xf_heads"] or cfg["xf_width"] % cfg["xf_heads"]):
        raise ValueError(
            f"xf_width {cfg['xf_width']} is not divisible by xf_heads {cfg['xf_heads']}"
        )
    return cfg


def create_glide_model(**kwargs) -> Text2ImUNet:
    """The GLIDE text-conditional UNet (base, super_res, inpaint or both) from GLIDE's key names
    (see GLIDE_DEFAULTS); vocab_size is required."""
    return Text2ImUNet(**resolve_config(**kwargs))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def glide_base_config(vocab_size: int = 50257) -> dict:
    """The released ('filtered') 64x64 base model: 385,030,726 parameters with GPT-2's vocab."""
    return {**GLIDE_DEFAULTS, "vocab_size": vocab_size, "channel_mult": (1, 2, 3, 4)}


def glide_upsampler_config(vocab_size: int = 50257) -> dict:
    """The released 64->256 upsampler: 398,361,286 parameters with GPT-2's vocab."""
    return {
        **glide_base_config(vocab_size),
        "image_size": 256,
        "num_res_blocks": 2,
        "channel_mult": (1, 1, 2, 2, 4, 4),
        "super_res": True,
    }


def paper_scale_configs(vocab_size: int = 50257) -> dict[str, dict]:
    """The paper's (unreleased) sizes, our reading of 'ADM at 512 channels + 24 x 2048 text
    transformer' (3.5B; we get 3,554,414,086) and '384 channels, text width 1024' (1.5B; we get
    1,540,932,998 with 16 text blocks); everything else as released, heads of 64 channels."""
    base = {
        **glide_base_config(vocab_size),
        "num_channels": 512,
        "xf_width": 2048,
        "xf_layers": 24,
        "xf_heads": 32,
    }
    upsampler = {
        **glide_upsampler_config(vocab_size),
        "num_channels": 384,
        "xf_width": 1024,
        "xf_layers": 16,  # the paper gives no depth: the released one (24 would give 1.64B)
        "xf_heads": 16,
    }
    return {"base": base, "upsampler": upsampler}


def count_parameters_meta(**kwargs) -> int:
    """Parameter count of a configuration without allocating it (built on the meta device)."""
    with torch.device("meta"):
        return count_parameters(create_glide_model(**kwargs))


@torch.no_grad()
def widen_inputs(model: Text2ImUNet, **variant: bool) -> Text2ImUNet:
    """``model`` with more input channels (``inpaint=True`` and/or ``instruct=True``): the same
    weights, the new channels' weights zero, so both give identical outputs at first."""
    config = {**copy.deepcopy(model.config), **variant}
    already = [name for name, on in variant.items() if on and model.config.get(name)]
    if already or not all(variant.values()):
        raise ValueError(f"widen_inputs adds inputs the model lacks; it already has {already}")
    param = next(model.parameters())
    with torch.device(param.device):
        wide = Text2ImUNet(**config).to(param.dtype)
    state = model.state_dict()
    key = "input_blocks.0.0.weight"  # [C, C_in, 3, 3]
    old_at = input_slices(model.config)
    new = torch.zeros_like(wide.state_dict()[key])
    for name, where in input_slices(config).items():
        if name in old_at:
            new[:, where] = state[key][:, old_at[name]]
    state[key] = new
    wide.load_state_dict(state, strict=True)
    wide.train(model.training)
    return wide


def input_slices(config: dict) -> dict[str, slice]:
    """Where each input segment (``x_t``, ``inpaint``, ``source_image``, ``low_res``) sits among
    the first layer's input channels of a model built from ``config``."""
    flags = (config["inpaint"], config["super_res"], config.get("instruct", False))
    out, start = {}, 0
    for name, count in input_layout(*flags):
        out[name], start = slice(start, start + count), start + count
    return out


def widen_for_inpainting(model: Text2ImUNet) -> Text2ImUNet:
    """The inpainting variant of a trained model (4 new inputs: masked image, mask)."""
    if model.inpaint:
        raise ValueError("the model already has inpainting inputs")
    return widen_inputs(model, inpaint=True)


def widen_for_instruct(model: Text2ImUNet) -> Text2ImUNet:
    """The instruction-editing variant of a trained model (3 new inputs: the image to edit)."""
    if model.config.get("instruct"):
        raise ValueError("the model already has the source-image inputs")
    return widen_inputs(model, instruct=True)
