"""DVC stage `finetune_inpaint`: widen models/cfg.pt with zero-initialised masked-image and mask
inputs and fine-tune it on randomly erased regions (GLIDE Sec. 3.3) -> models/inpaint.pt."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.training.diffusion_stage import stage_main


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main("finetune_inpaint", "base_model", argv, model_overrides={"inpaint": True})


if __name__ == "__main__":
    raise SystemExit(main())
