"""The shard folder's ``manifest.json``: what was written, what was skipped and why.

Written last, atomically, by :func:`pipeline.data.sharding.build_shards`; its presence means the
folder is complete. Layout (keys sorted)::

    {"format": "glide-shards/1", "source": "synthetic", "input_path": "", "seed": 0,
     "config_hash": "<sha256 of the shard section + seed>", "run_id": "<mlflow run id or null>",
     "resolutions": {"base": 64, "hires": 256},
     "inputs": 2000, "written": 1990, "skipped": 10,
     "counts": {"train": 1890, "val": 100},
     "splits": {"train": {"num_samples": 1890,
                          "shards": [{"path": "train/shard-000000.tar", "num_samples": 500,
                                      "sha256": "...", "bytes": 123456}, ...]},
                "val": {...}},
     "skip_reasons": {"corrupt image": 4, ...},
     "skipped_inputs": [{"index": 17, "source": "a/b.jpg", "reason": "...", "detail": "..."}],
     "blank_images": 1,
     "blank_inputs": [{"index": 23, "source": "c/d.png"}]}

``blank_*``: written samples whose image is one plain colour (kept because
``shard.skip_blank_images`` is off; with it on they are skipped as "blank image" instead).

``run_id`` is the only field that differs between two runs with the same inputs and config.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.io import atomic_write_text, sha256_file

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "glide-shards/1"
# Shard-section keys that do not change the shards' content, left out of the config hash.
_HASH_EXCLUDED = ("output_dir", "batch_size", "metrics")


class ManifestError(RuntimeError):
    """A shard folder's manifest is missing or invalid, or a listed shard is missing/changed."""


def shard_config_hash(cfg: DictConfig) -> str:
    """sha256 of the ``shard`` section (without output-only keys) and the seed."""
    section = OmegaConf.to_container(cfg.shard, resolve=True)
    assert isinstance(section, dict)
    for key in _HASH_EXCLUDED:
        section.pop(key, None)
    text = json.dumps({"seed": int(cfg.seed), "shard": section}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_manifest(shard_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return atomic_write_text(Path(shard_dir) / MANIFEST_NAME, text)


def read_manifest(
    shard_dir: str | os.PathLike[str],
    *,
    verify_sha256: bool = True,
    expected_format: str = MANIFEST_FORMAT,
) -> dict[str, Any]:
    """Load ``<shard_dir>/manifest.json`` and check every listed shard exists with its size.

    With ``verify_sha256`` (default) each shard's sha256 is recomputed and compared too; turn it
    off for very large datasets where hashing every epoch costs too much. ``expected_format``
    names the kind of shards (edit triples: ``glide-edit-shards/1``). Raises
    :class:`ManifestError` naming the shard.
    """
    folder = Path(shard_dir)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"no {MANIFEST_NAME} in {folder}: the shard stage has not completed there "
            "(run the shard stage, e.g. `dvc repro shard`)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ManifestError(f"cannot read {path}: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != expected_format:
        raise ManifestError(f"{path} is not a {expected_format} manifest")
    for split, entry in manifest.get("splits", {}).items():
        for shard in entry.get("shards", []):
            shard_path = folder / shard["path"]
            if not shard_path.is_file():
                raise ManifestError(f"shard {shard_path} ({split}) listed in {path} is missing")
            size = shard_path.stat().st_size
            if size != shard["bytes"]:
                raise ManifestError(
                    f"shard {shard_path} has {size} bytes, the manifest says {shard['bytes']} "
                    "(truncated or replaced)"
                )
            if verify_sha256:
                digest = sha256_file(shard_path)
                if digest != shard["sha256"]:
                    raise ManifestError(
                        f"shard {shard_path} sha256 mismatch: manifest {shard['sha256']}, "
                        f"file {digest} (corrupted or replaced)"
                    )
    return manifest


def split_shards(manifest: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """The shard entries of ``split`` (KeyError naming the available splits otherwise)."""
    splits = manifest.get("splits", {})
    if split not in splits:
        raise KeyError(f"split {split!r} not in the manifest (has {sorted(splits)})")
    return list(splits[split]["shards"])
