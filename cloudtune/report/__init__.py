"""`cloudtune report JOB`: one self-contained HTML page that says whether a run went well.

The figures come from the job's own log lines (fetched through its launcher, the same path as `cloudtune logs`,
so local and cloud jobs alike), the job store's record (spec, plan and its price, times) and, for a finished job
whose model dir is on this machine, its metrics.json and model card. Each chart is also written as an .svg file in
a folder next to the page. Stdlib only. It is given a job (`cloudtune.api.get_job`) and never calls back into
the API.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudtune.store import JobStore

__all__ = ["ReportFiles", "default_report_path", "write_report"]


@dataclass(frozen=True)
class ReportFiles:
    """What `write_report` wrote: the page, and one .svg per drawn chart (in `<page stem>-plots/`)."""

    html: Path
    plots: tuple[Path, ...]
    verdict: str


def default_report_path(job_id: str) -> Path:
    """`./<job id>-report.html` in the current directory."""
    return Path.cwd() / f"{job_id}-report.html"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(job: Any, out: str | os.PathLike[str] | None = None, *, store: JobStore | None = None,
                 plots: bool = True) -> ReportFiles:
    """Write the report of `job` (a `cloudtune.api.Job`, as `cloudtune.api.get_job` returns it) to `out` (default
    `default_report_path`) and, with `plots`, each chart as `<out stem>-plots/<chart>.svg`. `store` is the job store
    holding its record (default: `$CLOUDTUNE_HOME`'s)."""
    # the page's modules, imported here: cloudtune.report.history (read by status and sweeps) comes without them
    from cloudtune.contracts.progress import throughput_unit
    from cloudtune.report.facts import collect
    from cloudtune.report.figures import figures
    from cloudtune.report.html import render, verdict

    store = store or JobStore()
    if job.is_sweep:
        return _write_sweep_report(job, out, plots)
    facts = collect(job, store)
    figs = figures(facts.history, throughput_unit(facts.spec))
    target = Path(os.path.abspath(out if out is not None else default_report_path(facts.job_id)))
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(target, render(facts, figs))
    written = _write_plots(target, figs) if plots else []
    return ReportFiles(target, tuple(written), verdict(facts)[1])


def _write_plots(target: Path, figs: list[Any]) -> list[Path]:
    """Each drawn figure as `<page stem>-plots/<name>.svg` beside the page."""
    written: list[Path] = []
    folder = target.with_name(f"{target.stem}-plots")
    for fig in figs:
        if fig.svg:
            folder.mkdir(exist_ok=True)
            path = folder / (re.sub(r"[^A-Za-z0-9_.-]", "_", fig.name) + ".svg")
            _write_atomic(path, '<?xml version="1.0" encoding="utf-8"?>\n' + fig.svg + "\n")
            written.append(path)
    return written


def _write_sweep_report(job: Any, out: str | os.PathLike[str] | None, plots: bool) -> ReportFiles:
    """A sweep's page (cloudtune.report.sweep): the objective against each parameter, the trials' curves."""
    from cloudtune.report.sweep import render_sweep  # see write_report

    info = job.info()
    ranges = ((((job.record.plan or {}).get("spec") or {}).get("sweep") or {}).get("parameters") or {})
    page, figs = render_sweep(info, ranges)
    target = Path(os.path.abspath(out if out is not None else default_report_path(job.job_id)))
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(target, page)
    best = info.get("best_trial")
    text = f"best trial {best['number']}: {info['objective']['metric']}={best['objective']:.6g}" if best else "no best trial yet"
    return ReportFiles(target, tuple(_write_plots(target, figs) if plots else ()), text)
