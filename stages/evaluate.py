"""DVC stage `evaluate`: guidance sweeps (FID, KID, CLIP score), cascade, inpainting and GLIDE's
claims -> metrics/eval.json, plots/, reports/eval.md; logged on the pipeline's MLflow run."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pipeline.config import load_config
from pipeline.evaluation.stage import run_evaluation
from pipeline.tracking import stage_run


def main(argv: Sequence[str] | None = None) -> int:
    cfg = load_config(list(sys.argv[1:] if argv is None else argv))
    with stage_run(cfg, "evaluate") as run:
        record = run_evaluation(cfg, run)
    for claim, verdict in record["claims"].items():
        print(f"{verdict:>15}: {claim}")
    print(f"report: {cfg.evaluate.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
