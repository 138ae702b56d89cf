"""DVC stage `shard`: input images + captions -> WebDataset shards in data/shards/.

Ends with a short summary on stdout: samples written per split, skipped inputs by reason and
blank images, with the file that lists them, and where the metrics went.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pipeline.config import load_config, save_config
from pipeline.config.schema import ShardConfig
from pipeline.data.manifest import MANIFEST_NAME
from pipeline.data.sharding import build_shards
from pipeline.io import atomic_write_text
from pipeline.tracking import stage_run

PIPELINE_METRICS = Path("metrics/shard.json")  # the DVC pipeline's (dvc.yaml)


def metrics_path(shard: DictConfig) -> Path:
    """Where the stage writes its metrics: ``shard.metrics`` when set; else the pipeline's
    ``metrics/shard.json`` while the shards go to the pipeline's folder (``data/shards``), else
    ``metrics.json`` beside the shards, so a run elsewhere leaves the pipeline's results alone."""
    if shard.metrics:
        return Path(shard.metrics)
    out_dir = Path(shard.output_dir)
    if out_dir.resolve() == Path(ShardConfig.output_dir).resolve():
        return PIPELINE_METRICS
    return out_dir / "metrics.json"


def _by_count(counts: dict[str, int]) -> str:
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{name} {count}" for name, count in ordered)


def summary(manifest: dict[str, Any], out_dir: Path, metrics: Path) -> str:
    """The lines printed when the stage succeeds."""
    listing = out_dir / MANIFEST_NAME
    splits = ", ".join(f"{split} {count}" for split, count in manifest["counts"].items())
    lines = [
        f"shard: wrote {manifest['written']} of {manifest['inputs']} inputs to {out_dir} ({splits})"
    ]
    if manifest["skipped"]:
        lines.append(
            f"shard: skipped {manifest['skipped']}: {_by_count(manifest['skip_reasons'])}; "
            f'listed under "skipped_inputs" in {listing}'
        )
    else:
        lines.append("shard: skipped none")
    blank = manifest["blank_images"]
    if blank:
        lines.append(
            f"shard: kept {blank} blank image{'s' * (blank != 1)} (one plain colour, e.g. a "
            f'fully transparent PNG); listed under "blank_inputs" in {listing}; '
            "shard.skip_blank_images=true skips them"
        )
    lines.append(f"shard: metrics in {metrics}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = load_config(list(sys.argv[1:] if argv is None else argv))
    metrics_file = metrics_path(cfg.shard)
    with stage_run(cfg, "shard") as run:
        manifest = build_shards(cfg, run_id=run.run_id)
        out_dir = Path(cfg.shard.output_dir)
        save_config(cfg, out_dir / "config.yaml")
        metrics = {
            "inputs": manifest["inputs"],
            "written": manifest["written"],
            "skipped": manifest["skipped"],
            "blank_images": manifest["blank_images"],
            "train_samples": manifest["splits"]["train"]["num_samples"],
            "val_samples": manifest["splits"]["val"]["num_samples"],
        }
        run.log_metrics({f"shard/{k}": v for k, v in metrics.items()})
        record = {**metrics, "mlflow_run_id": run.run_id}
        atomic_write_text(metrics_file, json.dumps(record, indent=2, sort_keys=True) + "\n")
        run.log_artifact(out_dir / "manifest.json")
        run.log_artifact(out_dir / "config.yaml")
    print(summary(manifest, out_dir, metrics_file), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
