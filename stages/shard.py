"""DVC stage `shard`: input images + captions -> WebDataset shards in data/shards/."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import load_config, save_config
from pipeline.data.sharding import build_shards
from pipeline.io import atomic_write_text
from pipeline.tracking import stage_run

METRICS_PATH = Path("metrics/shard.json")


def main(argv: Sequence[str] | None = None) -> int:
    cfg = load_config(list(sys.argv[1:] if argv is None else argv))
    with stage_run(cfg, "shard") as run:
        manifest = build_shards(cfg, run_id=run.run_id)
        out_dir = Path(cfg.shard.output_dir)
        save_config(cfg, out_dir / "config.yaml")
        metrics = {
            "inputs": manifest["inputs"],
            "written": manifest["written"],
            "skipped": manifest["skipped"],
            "train_samples": manifest["splits"]["train"]["num_samples"],
            "val_samples": manifest["splits"]["val"]["num_samples"],
        }
        run.log_metrics({f"shard/{k}": v for k, v in metrics.items()})
        record = {**metrics, "mlflow_run_id": run.run_id}
        atomic_write_text(METRICS_PATH, json.dumps(record, indent=2, sort_keys=True) + "\n")
        run.log_artifact(out_dir / "manifest.json")
        run.log_artifact(out_dir / "config.yaml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
