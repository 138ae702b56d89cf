"""Resolve the pipeline configuration: schema <- conf/defaults.yaml <- profile <- params.yaml <- CLI.

Every stage calls :func:`load_config` first. The result is validated against
:class:`~pipeline.config.schema.PipelineConfig` (unknown key or wrong type -> :class:`ConfigError`
naming the key) and checked for consistency across sections, before any work starts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.config.schema import PipelineConfig
from pipeline.io import atomic_write_text

PROFILES = ("ci", "mini", "released", "paper")


class ConfigError(ValueError):
    """A configuration problem, with the offending key in the message."""


def default_conf_dir() -> Path:
    """``$GLIDE_CONF_DIR``, else ``./conf`` when it exists, else the ``conf/`` of the source tree."""
    env = os.environ.get("GLIDE_CONF_DIR")
    if env:
        return Path(env)
    local = Path.cwd() / "conf"
    if local.is_dir():
        return local
    return Path(__file__).resolve().parents[2] / "conf"


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"{what} not found: {path}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a mapping at the top level")
    return data


def _first_line(err: OmegaConfBaseException) -> str:
    return str(getattr(err, "msg", err)).splitlines()[0]


def _merge_layer(base: DictConfig, layer: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigError(
            f"invalid config key '{key}' (from {source}): {_first_line(err)}"
        ) from err


def drop_nulls(tree: dict[str, Any]) -> dict[str, Any]:
    """Remove ``null`` leaves: in params.yaml a null means "keep the profile's value"."""
    kept: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            kept[key] = drop_nulls(value)
        elif value is not None:
            kept[key] = value
    return kept


def params_template() -> dict[str, Any]:
    """Every key of the schema with a null value: the skeleton of params.yaml.

    params.yaml lists every key (so ``dvc exp run -S section.key=value`` can set any of them)
    with null meaning "inherit from the profile".
    """

    def nullify(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: nullify(value) for key, value in node.items()}
        return None

    tree = OmegaConf.to_container(OmegaConf.structured(PipelineConfig), throw_on_missing=False)
    template = nullify(tree)
    template["profile"] = "mini"
    return template


def _profile_from(params: dict[str, Any], dotlist: Sequence[str], fallback: str) -> str:
    for item in reversed(list(dotlist)):
        if item.startswith("profile="):
            return item.split("=", 1)[1]
    return str(params.get("profile") or fallback)


def load_config(
    overrides: Sequence[str] = (),
    params_path: str | os.PathLike[str] | None = "params.yaml",
    conf_dir: str | os.PathLike[str] | None = None,
) -> DictConfig:
    """Return the resolved, validated, read-only configuration.

    Layers, later wins: the typed schema's defaults, ``conf/defaults.yaml``, the profile
    ``conf/profiles/<profile>.yaml``, ``params.yaml`` (if it exists), then ``overrides`` given as
    an OmegaConf dotlist (``["shard.num_samples=100"]``). The profile comes from the dotlist, else
    from ``params.yaml``'s ``profile:`` key, else from the defaults file.
    """
    conf = Path(conf_dir) if conf_dir is not None else default_conf_dir()
    cfg: DictConfig = OmegaConf.structured(PipelineConfig)
    defaults = _read_yaml(conf / "defaults.yaml", "defaults file")
    cfg = _merge_layer(cfg, defaults, str(conf / "defaults.yaml"))

    params: dict[str, Any] = {}
    if params_path is not None and Path(params_path).exists():
        params = _read_yaml(Path(params_path), "params file")
    profile = _profile_from(params, overrides, str(cfg.profile))
    if profile not in PROFILES:
        raise ConfigError(
            f"invalid config key 'profile': unknown profile {profile!r}; one of {PROFILES}"
        )
    profile_file = conf / "profiles" / f"{profile}.yaml"
    cfg = _merge_layer(cfg, _read_yaml(profile_file, "profile file"), str(profile_file))
    cfg = _merge_layer(cfg, drop_nulls(params), str(params_path))
    try:
        cli = OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid command-line override: {err}") from err
    cfg = _merge_layer(cfg, cli, "command line")
    cfg.profile = profile
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigError(f"invalid config key '{key}': {_first_line(err)}") from err
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"invalid config key '{key}': {message}")


def validate(cfg: DictConfig) -> None:
    """Value and cross-section checks that the type system cannot express."""
    shard = cfg.shard
    _validate_source(shard, "shard")
    _require(shard.samples_per_shard > 0, "shard.samples_per_shard", "must be positive")
    _require(shard.base_resolution > 0, "shard.base_resolution", "must be positive")
    _require(
        shard.upsample_resolution % shard.base_resolution == 0,
        "shard.upsample_resolution",
        "must be a multiple of shard.base_resolution",
    )
    _require(
        0.0 <= shard.max_skipped_fraction <= 1.0, "shard.max_skipped_fraction", "must be in [0, 1]"
    )
    syn = shard.synthetic
    _require(
        1 <= syn.min_objects <= syn.max_objects,
        "shard.synthetic.min_objects",
        "need 1 <= min_objects <= max_objects",
    )
    base = cfg.base_model
    _require(
        base.image_size == shard.base_resolution,
        "base_model.image_size",
        f"must equal shard.base_resolution ({shard.base_resolution})",
    )
    _require(base.tokenizer in ("clip", "gpt2"), "base_model.tokenizer", "must be clip or gpt2")
    for section in ("base_model", "upsample_model"):
        _validate_parameterisation(cfg[section], section)
    for stage in TRAINING_STAGES:
        _validate_training(cfg[stage], stage)
    for stage in ("finetune_cfg", "finetune_inpaint", "finetune_instruct"):
        _require(bool(cfg[stage].init_from), f"{stage}.init_from", "must name a model file")
    _validate_edits(cfg)
    masks = cfg.finetune_inpaint.masks
    shares = [masks[kind] for kind in masks]
    _require(
        all(share >= 0 for share in shares) and sum(shares) > 0,
        "finetune_inpaint.masks",
        "shares must be >= 0 with a positive sum",
    )
    _validate_upsampler(cfg)
    _validate_clip(cfg)
    _validate_evaluate(cfg.evaluate)
    _require(cfg.ray.resource_timeout_s > 0, "ray.resource_timeout_s", "must be positive")


def _validate_parameterisation(model: DictConfig, name: str) -> None:
    _require(
        model.prediction_type in ("epsilon", "v"),
        f"{name}.prediction_type",
        f"must be epsilon or v, got {model.prediction_type!r}",
    )
    _require(
        not model.low_res_residual or (model.super_res and model.prediction_type == "v"),
        f"{name}.low_res_residual",
        "needs a super-resolution model (super_res) with prediction_type v",
    )
    _require(
        0.0 < model.sigma_data <= 1.0 and (model.sigma_data == 1.0 or model.prediction_type == "v"),
        f"{name}.sigma_data",
        f"must lie in (0, 1], and be 1 unless prediction_type is v; got {model.sigma_data}",
    )


def _validate_source(section: DictConfig, name: str) -> None:
    """The input of a sharding stage (``shard`` or ``shard_edits``): source, path, counts."""
    _require(
        section.source in ("synthetic", "folder", "webdataset"),
        f"{name}.source",
        f"must be synthetic, folder or webdataset, got {section.source!r}",
    )
    _require(
        section.source == "synthetic" or bool(section.input_path),
        f"{name}.input_path",
        f"required when {name}.source is {section.source!r}",
    )
    _require(section.num_samples > 0, f"{name}.num_samples", "must be positive")
    _require(0.0 <= section.val_fraction < 1.0, f"{name}.val_fraction", "must be in [0, 1)")


def _validate_edits(cfg: DictConfig) -> None:
    """The edit triples and the drop schedule of instruction-editing fine-tuning."""
    edits, train = cfg.shard_edits, cfg.finetune_instruct
    _validate_source(edits, "shard_edits")
    _require(
        edits.size_scale is None or edits.size_scale > 0, "shard_edits.size_scale", "must be > 0"
    )
    _require(
        edits.object_count_weights is None or min(edits.object_count_weights, default=0) >= 0,
        "shard_edits.object_count_weights",
        "must be non-negative",
    )
    known = ("recolour", "reshape", "move", "add", "remove")
    _require(
        len(edits.kinds) > 0 and all(kind in known for kind in edits.kinds),
        "shard_edits.kinds",
        f"must be a non-empty subset of {list(known)}",
    )
    drops = [train.caption_drop_prob, train.image_drop_prob, train.joint_drop_prob]
    _require(
        min(drops) >= 0 and sum(drops) <= 1,
        "finetune_instruct.image_drop_prob",
        "the three drop probabilities (caption, image, joint) must be >= 0 and sum to <= 1",
    )


def _validate_evaluate(ev: DictConfig) -> None:
    """Sample counts and sweeps of the evaluate stage."""
    _require(ev.num_samples >= 2, "evaluate.num_samples", "must be at least 2 (FID needs 2)")
    _require(ev.batch_size > 0, "evaluate.batch_size", "must be positive")
    _require(len(ev.guidance_scales) > 0, "evaluate.guidance_scales", "needs at least one scale")
    _require(
        2 <= ev.kid_subset_size <= ev.num_samples,
        "evaluate.kid_subset_size",
        f"must be in [2, evaluate.num_samples={ev.num_samples}]",
    )
    _require(ev.kid_subsets >= 1, "evaluate.kid_subsets", "must be positive")
    _require(ev.upsample_temperature >= 0, "evaluate.upsample_temperature", "must be >= 0")
    _require(ev.upsample_tile_size >= 0, "evaluate.upsample_tile_size", "must be >= 0 (0: off)")
    _require(ev.upsample_tile_stride > 0, "evaluate.upsample_tile_stride", "must be positive")
    _require(
        ev.upsample_tile_stride <= ev.upsample_tile_size or not ev.upsample_tile_size,
        "evaluate.upsample_tile_stride",
        f"must be at most evaluate.upsample_tile_size={ev.upsample_tile_size} (no gaps)",
    )
    _require(ev.upsample_tile_below_t >= 0, "evaluate.upsample_tile_below_t", "must be >= 0")
    _require(0 < ev.confidence < 1, "evaluate.confidence", "must lie in (0, 1), e.g. 0.95")
    _require(ev.bootstrap_replicates >= 20, "evaluate.bootstrap_replicates", "must be >= 20")
    _require(ev.min_claim_samples >= 2, "evaluate.min_claim_samples", "must be at least 2")
    for key in ("cascade_samples", "inpaint_samples"):
        _require(
            ev[key] == 0 or 2 <= ev[key] <= ev.num_samples,
            f"evaluate.{key}",
            f"must be 0 (off) or in [2, evaluate.num_samples={ev.num_samples}]",
        )
    _require(ev.num_workers >= 1, "evaluate.num_workers", "must be positive")


TRAINING_STAGES = (
    "pretrain_base",
    "finetune_cfg",
    "finetune_inpaint",
    "finetune_instruct",
    "train_upsampler",
)


def _validate_upsampler(cfg: DictConfig) -> None:
    """The upsampler works at the shards' upsample resolution; crops keep the low-res pixel grid."""
    model, train, shard = cfg.upsample_model, cfg.train_upsampler, cfg.shard
    _require(model.super_res, "upsample_model.super_res", "must be true")
    _require(
        model.image_size == shard.upsample_resolution,
        "upsample_model.image_size",
        f"must equal shard.upsample_resolution ({shard.upsample_resolution})",
    )
    _require(
        model.tokenizer in ("clip", "gpt2"), "upsample_model.tokenizer", "must be clip or gpt2"
    )
    scale = shard.upsample_resolution // shard.base_resolution
    levels = len(model.channel_mult) or 1
    crop = train.crop_size
    _require(
        crop == 0 or (0 < crop <= model.image_size and crop % scale == 0),
        "train_upsampler.crop_size",
        f"must be 0 (full images) or a multiple of the scale factor {scale} "
        f"up to upsample_model.image_size ({model.image_size}), got {crop}",
    )
    _require(
        crop % 2 ** (levels - 1) == 0,
        "train_upsampler.crop_size",
        f"must be divisible by 2^{levels - 1} (upsample_model.channel_mult has {levels} levels)",
    )
    for key in ("noise_aug_max_level", "sample_aug_level"):
        _require(
            0 <= train[key] <= model.diffusion_steps,
            f"train_upsampler.{key}",
            f"must be in [0, upsample_model.diffusion_steps={model.diffusion_steps}]",
        )
    _require(
        train.sample_temperature >= 0,
        "train_upsampler.sample_temperature",
        "must be >= 0 (0: a deterministic sampler starts from x_T = 0)",
    )
    _require(train.sample_images >= 1, "train_upsampler.sample_images", "must be at least 1")


def _validate_clip(cfg: DictConfig) -> None:
    """The CLIPs read the base model's images and timesteps; a contrastive batch needs pairs."""
    model = cfg.noised_clip
    _require(
        model.image_size == cfg.shard.base_resolution,
        "noised_clip.image_size",
        f"must equal shard.base_resolution ({cfg.shard.base_resolution})",
    )
    _require(
        model.image_size % model.patch_size == 0,
        "noised_clip.patch_size",
        f"must divide noised_clip.image_size ({model.image_size})",
    )
    for width, heads in (("width", "heads"), ("text_width", "text_heads")):
        _require(
            model[width] % model[heads] == 0,
            f"noised_clip.{width}",
            f"must be divisible by noised_clip.{heads} ({model[heads]})",
        )
    _require(model.text_ctx >= 2, "noised_clip.text_ctx", "must be at least 2")
    for stage in ("train_noised_clip", "eval_clip"):
        train = cfg[stage]
        _validate_training(train, stage)
        _require(
            train.strategy == "ddp",
            f"{stage}.strategy",
            "must be ddp: sharded training (fsdp) is for the diffusion stages; a CLIP of these "
            "sizes fits on one device",
        )
        _require(train.batch_size >= 2, f"{stage}.batch_size", "a contrastive batch needs 2+")
        _require(train.val_samples >= 2, f"{stage}.val_samples", "must be at least 2")
        _require(
            all(0 <= t < model.diffusion_steps for t in train.val_timesteps),
            f"{stage}.val_timesteps",
            f"must be in [0, noised_clip.diffusion_steps={model.diffusion_steps})",
        )
    _require(
        not cfg.eval_clip.noised,
        "eval_clip.noised",
        "must be false: the evaluation CLIP scores clean images",
    )


def _validate_training(train: DictConfig, stage: str) -> None:
    _require(train.max_steps > 0, f"{stage}.max_steps", "must be positive")
    _require(train.batch_size > 0, f"{stage}.batch_size", "must be positive")
    _require(train.lr > 0, f"{stage}.lr", "must be positive")
    _require(train.p2_gamma >= 0, f"{stage}.p2_gamma", "must be >= 0 (0: unweighted, as GLIDE)")
    _require(train.p2_k > 0, f"{stage}.p2_k", "must be positive")
    _require(train.data_buffer_mb > 0, f"{stage}.data_buffer_mb", "must be positive")
    _require(
        0.0 <= train.caption_drop_prob <= 1.0, f"{stage}.caption_drop_prob", "must be in [0, 1]"
    )
    _require(0.0 <= train.ema_decay < 1.0, f"{stage}.ema_decay", "must be in [0, 1)")
    _require(train.strategy in ("ddp", "fsdp"), f"{stage}.strategy", "must be ddp or fsdp")
    _require(
        train.lr_schedule in ("constant", "cosine"),
        f"{stage}.lr_schedule",
        "must be constant or cosine",
    )
    _require(train.num_workers >= 1, f"{stage}.num_workers", "must be at least 1")
    _require(train.cpus_per_worker >= 1, f"{stage}.cpus_per_worker", "must be at least 1")
    _require(
        train.batch_size % train.num_workers == 0,
        f"{stage}.batch_size",
        f"must be divisible by num_workers ({train.num_workers}): it is the global batch, "
        "split equally between the workers",
    )


def save_config(cfg: DictConfig, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML, atomically."""
    return atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))


def to_flat_dict(cfg: DictConfig) -> dict[str, Any]:
    """Flatten to ``{"shard.num_samples": 2000, ...}`` (lists kept as values)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat
