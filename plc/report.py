"""`plc report`: a study on one self-contained HTML page.

Everything the study's files allow, in the order a reader asks for it: where the study stands
(plc status), the onset of plasticity loss per run as plc fit-onset decides it (with its interval,
or no onset and why: the study's verdicts, judged once and shown alike in every table and figure
of the page), the four fits of Table V with their intervals and the law, every
figure `plc plot` can draw from the metrics present, the correlates per diagnose, any other
tables of the study (transfer, mitigations), and how it was made (the task histories in the
checkpoints, the plan file, the versions). Figures are PNGs inside the page (base64), styles are
inline, there is no script: the file opens anywhere without a network, and can be mailed.
"""

from __future__ import annotations

import base64
import html
import io
import os
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plc import __version__
from plc.errors import PlcError
from plc.onset import MODELS, read_finite, view
from plc.plan.jobs import Plan
from plc.plot import ONSET_LABEL, build_figure
from plc.protocol import CYCLE
from plc.status import format_duration, run_rows, study_status
from plc.store import atomic_path, check_output, checkpoint_meta
from plc.study import find_study_files, fit_judged, judge_study, verdict_options

if TYPE_CHECKING:
    import polars as pl
    from matplotlib.figure import Figure

    from plc.onset import BootstrapSummary, Fit, OnsetResult
    from plc.status import StatusResult
    from plc.study import Judged, StudyFiles

BOOTSTRAP = 1000  # resamples of the runs for the fits' intervals, as plc demo's law
MAX_TABLE_ROWS = 200
CORRELATE_COLUMNS = (
    ("param_abs_mean", "mean |θ|", "{:.5g}"),
    ("dormant_pct", "dormant %", "{:.2f}"),
    ("lazy_pct", "lazy heads %", "{:.1f}"),
    ("collapsed_pct", "collapsed heads %", "{:.1f}"),
    ("effective_rank", "effective rank (layer mean)", "{:.2f}"),
    ("stable_rank", "stable rank (layer mean)", "{:.3f}"),
    ("perturb_loss_increase", "loss increase under perturbation", "{:.4g}"),
    ("init_distance", "‖θ − θ₀‖₂", "{:.4g}"),
    ("last_hidden_norm", "last hidden norm", "{:.4g}"),
    ("last_hidden_var", "last hidden variance", "{:.4g}"),
)
STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; max-height: 640px; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.note { color: #8a5a00; }
.meta { color: #666; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
"""


@dataclass
class ReportResult:
    path: str
    runs: int
    figures: list[str]  # captions of the figures drawn
    tables: list[str]  # titles of the tables written
    notes: list[str] = field(default_factory=list)  # what could not be shown, and why
    bytes: int = 0


def report(
    directory: str | os.PathLike,
    out: str | os.PathLike,
    *,
    force: bool = False,
    estimator: str | None = None,
    alpha: float | None = None,
    window: int | None = None,
) -> ReportResult:
    """`plc report`: write the HTML page of the study in `directory` to `out`, its runs judged
    once with the study's settings (those given, else its plan's)."""

    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise PlcError(f"--out must end in .html (got {out.name})")
    check_output(out, force)
    files = find_study_files(directory)
    plan = files.read_plan()
    judged = judge_study(
        files, verdict_options(plan, estimator=estimator, alpha=alpha, window=window)
    )
    state = study_status(files, plan, judged)
    read_notes: list[str] = []
    diag = read_finite(files.metric_files("diagnose"), "diagnose", read_notes)
    page = _Page()
    for note in [*state.notes, *read_notes]:
        page.note(note)
    page.add_status(state)
    for nested in files.nested:  # its runs may reuse this study's run ids: never mixed in
        where = nested.relative_to(files.root)
        page.note(
            f"{where}/ is a study of its own (its own plan), not part of this page: plc report {nested}"
        )
    onsets = page.add_onsets(judged)
    page.add_fits(onsets)
    page.add_figures(files, diag, judged, plan)
    page.add_correlates(diag)
    page.add_other_tables(files)
    page.add_provenance(files, state)
    text = page.render(state)
    with atomic_path(out, force) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return ReportResult(
        str(out), len(state.runs), page.figures, page.tables, page.notes, len(text.encode())
    )


# ------------------------------------------------------------------------------------- page


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Collection[int] = ()
) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_esc(c)}</td>' if i in numeric else f"<td>{_esc(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Page:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.figures: list[str] = []
        self.tables: list[str] = []
        self.notes: list[str] = []

    def h2(self, title: str, anchor: str) -> None:
        self.parts.append(f'<h2 id="{anchor}">{_esc(title)}</h2>')

    def p(self, text: str, cls: str = "") -> None:
        self.parts.append(f'<p class="{cls}">{_esc(text)}</p>' if cls else f"<p>{_esc(text)}</p>")

    def note(self, text: str) -> None:
        if text in self.notes:  # e.g. every entropy figure missing the same run's thresholds
            return
        self.notes.append(text)
        self.p(text, "note")

    def table(
        self,
        title: str,
        headers: Sequence[str],
        rows: list[list[Any]],
        numeric: Collection[int] = (),
    ) -> None:
        self.tables.append(title)
        shown = rows[:MAX_TABLE_ROWS]
        self.parts.append(_table(headers, shown, numeric))
        if len(rows) > len(shown):
            self.p(f"(first {len(shown)} of {len(rows)} rows)", "meta")

    # ---------------------------------------------------------------------------- sections

    def add_status(self, state: StatusResult) -> None:
        self.h2("Where the study stands", "status")
        rows = run_rows(state.runs)
        if rows:
            headers = list(rows[0])
            numeric = {headers.index("tokens/s"), headers.index("time left")}
            self.table("status", headers, [list(r.values()) for r in rows], numeric)
        jobs = [j for r in state.runs for j in r.jobs] + state.jobs
        for j in jobs:
            mark = "stale" if j.stale else "active"
            self.p(f"{mark}: {j.path} ({j.what}, written {format_duration(j.minutes * 60)} ago)")
        if state.seconds_left:
            self.p(f"Training left: {format_duration(state.seconds_left)} of compute.")

    def add_onsets(self, judged: Judged) -> OnsetResult | None:
        """Onset per run as `plc fit-onset --bootstrap 1000` decides it (the study's verdict: an
        onset with its interval, or none and why), with the fits where they can be made."""

        self.h2("Onset of plasticity loss", "onset")
        if not judged.runs and not judged.unusable:
            self.note("No probe metrics yet: no onset.")
            return None
        latest = {
            s.run_id: f"{s.value[-1]:+.2f} % (task {s.task_index[-1]})" for s in judged.series
        }
        by = "method" if len({s.method for s in judged.series}) > 1 else None
        res = (
            fit_judged(judged, list(MODELS), bootstrap=BOOTSTRAP, by=by, or_runs=True)
            if judged.runs
            else None
        )
        probes = (
            "every probe"
            if judged.options.probe_after is None
            else ("the probes after " + ", ".join(judged.options.probe_after))
        )
        if res:
            self.p(
                "Per run: the probe AUC normalised by eq. 1 (% change relative to AUC_1, the first "
                f"probe after ru, or the first probe where none follows ru), {probes}, as plc "
                "fit-onset reads the study. " + view.method_text(res)
            )
            columns = view.run_columns(res)
        else:
            columns = [view.Column("run", lambda r: r.run_id, False)]
        at = next(i for i, c in enumerate(columns) if c.name == "probes") + 1 if res else 1
        headers = [c.name for c in columns]
        headers[at:at] = ["latest ΔAUC"]
        headers.append("no onset: why")
        rows = []
        for r, cells in zip(
            res.runs if res else [], view.run_rows(res) if res else [], strict=True
        ):
            cells[at:at] = [latest.get(r.run_id or "", "")]
            rows.append([*cells, r.no_onset or ""])
        onset = next(h for h in headers if h.startswith("onset (task)")) if res else None
        for run_id, why in judged.unusable.items():
            cells = dict.fromkeys(headers, "")
            cells.update({"run": run_id, "no onset: why": why})
            if onset:
                cells[onset] = "none"
            rows.append(list(cells.values()))
        text = {"run", "method", "size", "latest ΔAUC", "no onset: why", onset}
        numeric = {i for i, h in enumerate(headers) if h not in text}
        self.table("onsets", headers, rows, numeric)
        if res and res.sizes:
            headers, rows = view.size_columns(res)
            self.table("onset per size", headers, rows, set(range(2, len(headers))))
            self.p(view.POOLED, "meta")
        return res

    def add_fits(self, res: OnsetResult | None) -> None:
        self.h2("Scaling law: the four fits of Table V", "fits")
        if res is None:
            self.note("No run has probes enough for an onset: no fit.")
            return
        if res.excluded:
            self.p(view.excluded_text(res))
        if res.fits_skipped:
            self.note(f"No fit: {res.fits_skipped}")
        if res.by is None:
            self._fits(res.fits, res.law, res.exponent, res.bootstrap, "fits")
        for g in (g for g in res.groups if g.fits or g.fits_skipped):  # none after models=[]
            self.parts.append(f"<h3>method {_esc(g.method)}</h3>")
            if g.fits_skipped:
                self.note(f"No fit for {g.method}: {g.fits_skipped}")
            self._fits(g.fits, g.law, g.exponent, g.bootstrap, f"fits {g.method}")

    def _fits(
        self,
        fits: list[Fit],
        law: str | None,
        exponent: str | None,
        boot: BootstrapSummary | None,
        title: str,
    ) -> None:
        if not fits:
            return
        headers, rows = view.fit_columns(fits, boot)
        self.table(title, headers, rows, numeric=set(range(2, len(headers) - 1)))
        if law:
            self.parts.append(f"<p>The law (eq. 2, log-log): <strong>{_esc(law)}</strong></p>")
        if exponent:
            self.parts.append(f"<p>Log-log exponent: <strong>{_esc(exponent)}</strong></p>")
        if boot:
            self.p(view.bootstrap_text(boot), "meta")

    def add_figures(
        self, files: StudyFiles, diag: pl.DataFrame, judged: Judged, plan: Plan | None
    ) -> None:
        """Every figure, its onsets those of `judged` (the page's verdicts)."""
        self.h2("Figures", "figures")
        inputs = files.metric_files("probe") + files.metric_files("diagnose")
        if not inputs:
            self.note("No probe or diagnose metrics yet: no figures.")
            return
        o = judged.options
        for kind, options, caption in _figure_list(diag, plan):
            if kind != "auc":  # Fig. 2 and 4 draw every probe
                options = {"probe_after": o.probe_after, "window": o.window, **options}
            try:
                drawing = build_figure(
                    kind, inputs, estimator=o.estimator, alpha=o.alpha, judged=judged, **options
                )
            except PlcError as e:
                self.note(f"{caption}: not drawn ({e})")
                continue
            if not drawing.runs:  # plot onset with no point to place: nothing to show here
                self.note(f"{caption}: not drawn (no run has an onset or a minimum to place)")
                continue
            caption = _drawn_caption(caption, drawing.figure)
            png = io.BytesIO()
            drawing.figure.savefig(png, format="png", dpi=150)
            data = base64.b64encode(png.getvalue()).decode("ascii")
            self.figures.append(caption)
            self.parts.append(
                f'<figure><img alt="{_esc(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_esc(caption)}</figcaption></figure>"
            )
            for n in drawing.notes:
                if n not in judged.notes and n not in self.notes:  # said once, above
                    self.note(f"{caption}: {n}")

    def add_correlates(self, diag: pl.DataFrame) -> None:
        import polars as pl

        self.h2("Correlates (plc diagnose)", "correlates")
        if diag.height == 0:
            self.note("No diagnose metrics yet.")
            return
        whole = diag.filter(pl.col("head").is_null())
        # Whole-model values as they are; per-layer ranks as their mean over layers.
        per_task = whole.group_by("run_id", "n_params", "task_index", "cycle", "metric").agg(
            pl.when(pl.col("layer").is_null().any())
            .then(pl.col("value").filter(pl.col("layer").is_null()).mean())
            .otherwise(pl.col("value").mean())
            .alias("value")
        )
        present = [c for c in CORRELATE_COLUMNS if c[0] in set(per_task["metric"].to_list())]
        wide = per_task.pivot(
            on="metric", index=["run_id", "n_params", "task_index", "cycle"], values="value"
        ).sort("n_params", "run_id", "task_index")
        rows = [
            [
                r["run_id"],
                r["task_index"],
                r["cycle"],
                *(
                    "" if r.get(m) is None else fmt.format(r[m])  # noqa: B023
                    for m, _, fmt in present
                ),
            ]
            for r in wide.iter_rows(named=True)
        ]
        headers = ["run", "task", "cycle", *(label for _, label, _ in present)]
        self.table("correlates", headers, rows, numeric=set(range(1, len(headers))))

    def add_other_tables(self, files: StudyFiles) -> None:
        """Tables of the study that are neither metric files nor the onset table: the transfer
        and mitigation tables where a study has them, shown as they are."""
        import polars as pl

        tables = [p for p in files.other_tables if p.name != "onset.parquet"]
        if not tables:
            return
        self.h2("Other tables of the study", "tables")
        for path in sorted(tables):
            try:
                df = pl.read_csv(path) if path.suffix == ".csv" else pl.read_parquet(path)
            except Exception as e:
                self.note(f"{path}: not readable ({type(e).__name__})")
                continue
            self.parts.append(f"<h3>{_esc(path.relative_to(files.root))}</h3>")
            rows = [[_cell(v) for v in row] for row in df.iter_rows()]
            self.table(str(path.name), df.columns, rows)

    def add_provenance(self, files: StudyFiles, state: StatusResult) -> None:
        self.h2("How it was made", "provenance")
        for r in state.runs:
            if not r.last_checkpoint:
                continue
            try:
                meta = checkpoint_meta(r.last_checkpoint)
            except PlcError as e:
                self.note(str(e))
                continue
            tok = meta.get("tokenizer") or {}
            self.parts.append(f"<h3>{_esc(r.run_id)}</h3>")
            self.p(
                f"{Path(r.last_checkpoint).name}: size {meta.get('size')}, "
                f"{int(meta.get('n_params', 0)):,} non-embedding parameters, seed {meta.get('seed')}, "
                f"tokenizer {tok.get('name')} (fingerprint {tok.get('fingerprint')}), "
                f"{int(meta.get('tokens_seen', 0)):,} tokens seen, "
                f"written by plc {meta.get('plc_version')}.",
                "meta",
            )
            rows = _history_rows(meta.get("history") or [])
            if rows:
                self.table(f"history {r.run_id}", ["tasks", "languages", "settings"], rows)
        if files.plan is not None:
            text = files.plan.read_text(errors="replace")
            self.parts.append(
                f"<details><summary>The plan: {_esc(files.plan.name)} "
                f"({text.count(chr(10))} lines)</summary><pre>{_esc(text)}</pre></details>"
            )
        self.p("Report written with " + ", ".join(_versions()) + ".", "meta")

    def render(self, state: StatusResult) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(state.checked_at))
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>plc study report: {_esc(state.directory)}</title>"
            f"<style>{STYLE}</style></head><body>"
            f"<h1>plc study report</h1><p class=meta>{_esc(state.directory)}, {when}, "
            f"{len(state.runs)} run(s)</p>" + "\n".join(self.parts) + "</body></html>\n"
        )


# ---------------------------------------------------------------------------------- helpers


def _figure_list(diag: pl.DataFrame, plan: Plan | None) -> list[tuple[str, dict[str, Any], str]]:
    """Every figure of `plc plot` with its caption; entropy for every layer, so every size's
    every layer is drawn. Against tasks where the plan's cycle is not the paper's eight (the
    control's chains)."""
    eight = plan is None or len(plan.cycle) == len(CYCLE)
    x: dict[str, Any] = {} if eight else {"x": "task"}
    figs: list[tuple[str, dict[str, Any], str]] = [
        ("auc", x, "Fig. 2: probe AUC over training"),
        ("auc", {"x": "tokens"}, "Fig. 4: the same against training tokens"),
        ("probing", {}, "Fig. 9: AUC change per probe, its moving average and minimum"),
        ("onset", {"models": list(MODELS)}, "Fig. 3 / 10: onset against model size"),
        ("correlates", x, "Fig. 5 / 7 / 11: correlates over training"),
        ("dormant-layers", x, "Fig. 6: dormant MLP units per layer"),
    ]
    layers = []
    if diag.height and "head" in diag.columns:
        import polars as pl

        heads = diag.filter((pl.col("metric") == "entropy") & pl.col("head").is_not_null())
        layers = sorted(set(heads["layer"].drop_nulls().to_list()))
    for layer in layers or [None]:
        where = f", layer {layer} (0-based)" if layer is not None else ""
        figs.append(("entropy", {"layer": layer, **x}, f"Fig. 7 bottom: attention entropy{where}"))
    return figs


def _drawn_caption(caption: str, fig: Figure) -> str:
    """The caption completed from what the figure draws: Fig. 2's reference probe as its axis
    names it, the fits of Fig. 3 / 10 that could be made (none when too few onsets), the onsets
    Fig. 5 marks (none where none is detected)."""
    ax = fig.axes[0]
    if caption.startswith("Fig. 2"):
        return f"{caption}: {ax.get_ylabel()}"
    if caption.startswith("Fig. 3"):
        fits = [line for line in ax.get_lines() if "(R²=" in str(line.get_label())]
        return f"{caption}, " + (f"{len(fits)} fit(s) of Table V" if fits else "no fit drawn")
    if caption.startswith("Fig. 5"):
        marked = any(line.get_label() == ONSET_LABEL for a in fig.axes for line in a.get_lines())
        return f"{caption}, " + ("the onset in red" if marked else "no onset detected to mark")
    return caption


def _history_rows(history: list[dict[str, Any]]) -> list[list[str]]:
    """Consecutive tasks trained with the same settings, one row each."""
    rows: list[list[str]] = []
    last: dict[str, Any] | None = None
    for i, task in enumerate(history, 1):
        settings = {k: v for k, v in task.items() if k != "lang"}
        if settings == last:
            first = rows[-1][0].split("–")[0]
            rows[-1][0] = f"{first}–{i}"
            rows[-1][1] += f" {task.get('lang', '')}"
        else:
            text = ", ".join(
                f"{k} {'none' if v is None else _cell(v)}" for k, v in settings.items()
            )
            rows.append([str(i), str(task.get("lang", "")), text])
        last = settings
    return rows


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _versions() -> list[str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = [f"plc {__version__}", f"Python {platform.python_version()}"]
    for pkg in ("torch", "numpy", "polars", "matplotlib"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            continue
    return out
