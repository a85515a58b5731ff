"""``mrcbench report``: the statistics tables checked (:func:`mrcbench.report.inputs.check_tables`), then
``reports/report.qmd`` rendered to one self-contained HTML file (:func:`mrcbench.report.engine.render`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mrcbench.provenance import manifest
from mrcbench.report import engine
from mrcbench.report.inputs import check_tables
from mrcbench.runtime import layout

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """``mrcbench report --qmd reports/report.qmd --results results --out reports/report.html``."""
    parser = argparse.ArgumentParser(prog="mrcbench report", description="render the paper-style report")
    parser.add_argument("--qmd", type=Path, default=Path("reports/report.qmd"))
    parser.add_argument("--results", type=Path, default=Path(layout.RESULTS_ROOT))
    parser.add_argument("--stats", type=Path, default=None, help="statistics tables (default: RESULTS/stats)")
    parser.add_argument("--out", type=Path, default=Path("reports/report.html"))
    parser.add_argument("--references", type=Path, default=Path(manifest.REFERENCE_DIR),
                        help="folder of reference run manifests the appendix matches the run against")
    parser.add_argument("--engine", choices=("auto", "quarto", "fallback"), default="auto")
    args = parser.parse_args(argv)
    if args.results.is_dir():  # else render() says the results folder is missing
        check_tables(args.stats or layout.stats(args.results))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    used = engine.render(args.qmd, args.out, {"results_dir": args.results, "stats_dir": args.stats,
                                              "reference_dir": args.references}, args.engine)
    log.info("wrote %s (%s)", args.out, used)
    return 0
