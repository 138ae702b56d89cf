"""The README's statements about the shard stage's rules, checked against the code."""

from pathlib import Path

from pipeline.config import load_config
from pipeline.config.schema import ShardConfig
from pipeline.data.image_prep import BLANK_STD

REPO = Path(__file__).resolve().parents[1]


def readme_text() -> str:
    return " ".join((REPO / "README.md").read_text(encoding="utf-8").split())


def shard(profile: str):
    return load_config([f"profile={profile}"], params_path=None, conf_dir=REPO / "conf").shard


def test_readme_states_the_shard_rules_with_their_values():
    text = readme_text()
    default, mini, ci = ShardConfig(), shard("mini"), shard("ci")
    stated = [
        "`shard.num_samples` applies to the synthetic source only",
        "transparency is composited on white",
        f"`shard.max_image_pixels` pixels ({default.max_image_pixels:,}",
        f"`shard.min_image_size` pixels ({default.min_image_size}; {mini.min_image_size} on mini, "
        f"{ci.min_image_size} on ci)",
        f"`shard.max_aspect_ratio` ({default.max_aspect_ratio:g}) times the shorter",
        "Crops the centred square",
        f"`shard.upsample_resolution` ({default.upsample_resolution}; "
        f"{mini.upsample_resolution} on mini)",
        f"`shard.base_resolution` ({default.base_resolution}; {mini.base_resolution} on mini)",
        f"below {BLANK_STD:g} of 255",
        "shard.skip_blank_images=true` skips such images",
    ]
    missing = [phrase for phrase in stated if phrase not in text]
    assert not missing, f"README.md no longer states: {missing}"
