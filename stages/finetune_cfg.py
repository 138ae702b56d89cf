"""DVC stage `finetune_cfg`: fine-tune models/base.pt with 20% empty captions (classifier-free
guidance, GLIDE Sec. 2.3) -> models/cfg.pt."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.training.diffusion_stage import stage_main


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main("finetune_cfg", "base_model", argv)


if __name__ == "__main__":
    raise SystemExit(main())
