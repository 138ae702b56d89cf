"""DVC stage `finetune_instruct`: widen models/cfg.pt with zero-initialised inputs for the image
to edit and fine-tune it on edit triples (InstructPix2Pix), dropping the image, the instruction
or both -> models/instruct.pt."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.training.diffusion_stage import stage_main


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main("finetune_instruct", "base_model", argv, model_overrides={"instruct": True})


if __name__ == "__main__":
    raise SystemExit(main())
