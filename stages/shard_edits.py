"""DVC stage `shard_edits`: edit triples (image to edit, instruction, edited image) ->
WebDataset shards in data/edit_shards/, at the base model's resolution, for `finetune_instruct`."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from pipeline.config import load_config, save_config
from pipeline.data import init_ray
from pipeline.data.edit_shards import build_edit_shards
from pipeline.data.scene_edits import edit_scene_settings
from pipeline.io import atomic_write_text
from pipeline.tracking import stage_run

METRICS = Path("metrics/shard_edits.json")


def main(argv: Sequence[str] | None = None) -> int:
    cfg = load_config(list(sys.argv[1:] if argv is None else argv))
    edits, shard = cfg.shard_edits, cfg.shard
    with stage_run(cfg, "shard_edits") as run:
        init_ray(cfg.ray)
        manifest = build_edit_shards(
            edits.output_dir,
            seed=int(cfg.seed),
            val_fraction=float(edits.val_fraction),
            resolution=int(shard.base_resolution),
            samples_per_shard=int(edits.samples_per_shard),
            source=str(edits.source),
            input_path=str(edits.input_path),
            synthetic=edit_scene_settings(
                OmegaConf.to_container(shard.synthetic),
                edits.object_count_weights,
                edits.size_scale,
            ),
            num_samples=int(edits.num_samples),
            kinds=tuple(edits.kinds),
            min_image_size=int(shard.min_image_size),
            max_aspect_ratio=float(shard.max_aspect_ratio),
            max_image_pixels=int(shard.max_image_pixels),
            max_skipped_fraction=float(edits.max_skipped_fraction),
        )
        out_dir = Path(edits.output_dir)
        save_config(cfg, out_dir / "config.yaml")
        metrics = {
            "inputs": manifest["inputs"],
            "written": manifest["written"],
            "skipped": manifest["skipped"],
            "train_triples": manifest["counts"]["train"],
            "val_triples": manifest["counts"]["val"],
        }
        run.log_metrics({f"shard_edits/{k}": v for k, v in metrics.items()})
        record = {**metrics, "mlflow_run_id": run.run_id}
        atomic_write_text(METRICS, json.dumps(record, indent=2, sort_keys=True) + "\n")
        run.log_artifact(out_dir / "manifest.json")
    reasons = ", ".join(f"{k} {v}" for k, v in manifest["skip_reasons"].items()) or "none"
    print(
        f"shard_edits: wrote {manifest['written']} of {manifest['inputs']} triples to {out_dir} "
        f"(train {metrics['train_triples']}, val {metrics['val_triples']}); skipped: {reasons}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
