"""Configuration: typed schema, layered loading (defaults <- profile <- params.yaml <- CLI)."""

from pipeline.config.load import (
    PROFILES,
    ConfigError,
    drop_nulls,
    load_config,
    params_template,
    save_config,
    to_flat_dict,
    validate,
)
from pipeline.config.schema import (
    GlideModelConfig,
    PipelineConfig,
    RayConfig,
    ShardConfig,
    SyntheticScenesConfig,
    TrackingConfig,
    TrainConfig,
)

__all__ = [
    "PROFILES",
    "ConfigError",
    "GlideModelConfig",
    "PipelineConfig",
    "RayConfig",
    "ShardConfig",
    "SyntheticScenesConfig",
    "TrackingConfig",
    "TrainConfig",
    "drop_nulls",
    "load_config",
    "params_template",
    "save_config",
    "to_flat_dict",
    "validate",
]
