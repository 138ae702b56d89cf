"""DVC stage `pretrain_base`: text-conditional 64x64 (profile-sized) base model -> models/base.pt."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import load_config, save_config
from pipeline.tracking import stage_run
from pipeline.training.diffusion_stage import run_diffusion_stage

STAGE = "pretrain_base"


def main(argv: Sequence[str] | None = None) -> int:
    cfg = load_config(list(sys.argv[1:] if argv is None else argv))
    with stage_run(cfg, STAGE) as run:
        run_diffusion_stage(
            cfg,
            stage=STAGE,
            model_section="base_model",
            run=run,
            metrics_path=Path("metrics") / f"{STAGE}.json",
            grid_path=Path("samples") / f"{STAGE}.png",
        )
        save_config(cfg, Path(cfg[STAGE].output).with_suffix(".config.yaml"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
