"""Stage ``report``: evaluated runs gathered into one comparison beside the published numbers.

Reads the run folders matching ``report.runs`` (globs; default every run under
``paths.runs``) and writes into ``report.out_dir``: ``report.md``, ``report.csv``,
``report_metrics.csv``, ``report.html`` (self-contained) and ``figures/*.png`` (see
:mod:`lcip.evaluation.report`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from lcip.evaluation.report import build_report

log = logging.getLogger(__name__)


def report(cfg: DictConfig, force: bool = False) -> Path:
    """Write the comparison of the runs of ``report.runs``; returns the HTML page's path.

    Args:
        cfg: composed config (``report`` node).
        force: accepted for symmetry with the other stages (the report is always rewritten).

    Raises:
        ConfigError: if no evaluated run matches ``report.runs``.
    """
    node = cfg.report
    patterns = [str(node.runs)] if isinstance(node.runs, str) else [str(p) for p in node.runs]
    written = build_report(
        patterns,
        Path(node.out_dir),
        published=node.get("published"),
        quicklook_tiles=int(node.get("quicklook_tiles", 2)),
        quicklook_size=int(node.get("quicklook_size", 384)),
        title=str(node.get("title", "lcip report")),
    )
    for path in written.values():
        log.info("report: wrote %s", path)
    print(f"report: {written['report.html']} (and {written['report.md'].name}, report.csv)")
    return written["report.html"]
