"""Other readings of metric files: `plc fit-lr` (App. A), `plc plot`, `plc transfer-table`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from plc.cli.common import (
    ForceOpt,
    JsonOpt,
    NormalizeHelp,
    ProbeAfterHelp,
    app,
    console,
    emit_json,
)
from plc.cli.onset import AlphaOpt, EstimatorOpt, WindowOpt, print_notes

PANEL = "Figures and tables"  # of `plc --help`


@app.command("fit-lr", rich_help_panel=PANEL)
def fit_lr_cmd(
    inputs: list[str] = typer.Argument(
        ...,
        help="Train metric files with validation rows (val_loss), or CSV grids (size, d_model, lr, final_loss).",
    ),
    at: str = typer.Option(
        None,
        "--at",
        help="Sizes (presets or d_model) to interpolate at (default: every preset between the grid's ends).",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """App. A: the best learning rate per size and the power law in d between the smallest and largest (Table II)."""
    from plc.lrsearch import LAST_VALIDATIONS, fit_lr, format_rate

    res = fit_lr(inputs, at=[x.strip() for x in at.split(",") if x.strip()] if at else ())
    if as_json:
        emit_json(res.to_dict())
        return
    grid_sizes = {g.d_model for g in res.grid}
    many = res.diverged or any(sum(g.d_model == d for g in res.grid) > 1 for d in grid_sizes)
    if many:
        grid = Table(title=f"Grid: final validation loss (mean of the last {LAST_VALIDATIONS})")
        for col in ("size", "d", "η × 10³", "loss", "validations", "runs", ""):
            grid.add_column(col, justify="left" if col in ("size", "") else "right")
        for g in res.grid:
            grid.add_row(
                g.size,
                str(g.d_model),
                f"{g.lr * 1e3:.3g}",
                f"{g.final_loss:.4f}",
                "" if g.validations is None else str(g.validations),
                str(g.runs),
                "best" if g in res.winners else "",
            )
        for g in res.diverged:
            grid.add_row(g.size, str(g.d_model), f"{g.lr * 1e3:.3g}", "diverged", "", str(g.runs))
        console.print(grid)
    table = Table(title="Learning rates per model size (Table II)")
    for col in ("model", "d", "interpolation η × 10³", "loss", "grid search η × 10³", "loss "):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in res.rows:
        table.add_row(
            r.size,
            str(r.d_model),
            f"{r.lr * 1e3:.2f}",
            "" if r.loss is None else f"{r.loss:.4f}",
            "" if r.grid_lr is None else f"{r.grid_lr * 1e3:.2f}",
            "" if r.grid_loss is None else f"{r.grid_loss:.4f}",
        )
    console.print(table)
    small, large = res.small, res.large
    console.print(
        f"α = log(η_L/η_S)/log(d_S/d_L) = [bold]{res.alpha:.5f}[/bold] ({small.size}: d "
        f"{small.d_model}, η {format_rate(small.lr)}; {large.size}: d {large.d_model}, "
        f"η {format_rate(large.lr)})"
    )
    console.print(f"law: [bold]{res.law}[/bold]")
    for g in res.diverged:
        after = "" if g.step is None else f" after step {g.step}"
        console.print(
            f"diverged: {g.size} (d {g.d_model}) at η {format_rate(g.lr)}{after}"
            + (f" in {g.runs} runs" if g.runs > 1 else "")
            + "; left out of the fit",
            highlight=False,
        )


@app.command("plot", rich_help_panel=PANEL)
def plot_cmd(
    kind: str = typer.Argument(
        ...,
        help="auc (Fig. 2/4), probing (Fig. 9), onset (Fig. 3/10), correlates (Fig. 5/7/11), dormant-layers (Fig. 6) or entropy (Fig. 7).",
    ),
    inputs: list[str] = typer.Argument(
        ..., help="Metric files (plot onset also reads onset tables)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Figure to write: .png, .svg or .pdf."),
    x: str = typer.Option(
        "cycle", "--x", help="x axis: cycle (Fig. 2), task, or tokens (auc: Fig. 4)."
    ),
    model: str = typer.Option(
        "loglog", "--model", help="onset: fitted curve(s); all draws Fig. 10."
    ),
    normalize: str = typer.Option("first", "--normalize", help=NormalizeHelp),
    probe_after: str = typer.Option(
        None,
        "--probe-after",
        help=ProbeAfterHelp + " Default: all for auc; otherwise the plan's (plan.json beside the "
        "metrics), else zh,de,ru.",
    ),
    window: int = WindowOpt,
    estimator: str = EstimatorOpt,
    alpha: float = AlphaOpt,
    layer: int = typer.Option(
        None, "--layer", help="entropy: the layer (0-based; default the first)."
    ),
    by: str = typer.Option(
        None,
        "--by",
        help="method: one colour per mitigation method, sizes by line style (auc, onset, correlates).",
    ),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Draw one of the paper's figures from metric files."""
    from plc.onset import parse_models, parse_probe_after
    from plc.plot import plot
    from plc.study import FROM_PLAN

    res = plot(
        kind,
        inputs,
        out,
        x=x,
        normalize=normalize,
        probe_after=FROM_PLAN if probe_after is None else parse_probe_after(probe_after),
        window=window,
        estimator=estimator,
        alpha=alpha,
        models=parse_models(model),
        layer=layer,
        by=by,
        force=force,
    )
    if as_json:
        emit_json(res)
        return
    print_notes(res.notes)
    console.print(f"wrote [bold]{res.path}[/bold] ({res.kind}, {len(res.runs)} runs)")


@app.command("transfer-table", rich_help_panel=PANEL)
def transfer_table_cmd(
    inputs: list[str] = typer.Argument(
        ..., help="Probe metric files of `plc plan transfer` (one-task checkpoints, from scratch)."
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Write the table (.csv, .parquet) or a figure (.png, .svg, .pdf)."
    ),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Table III: the probe's AUC after one task of each language, per model size."""
    from plc.transfer import transfer_table

    res = transfer_table(inputs, out=out, force=force)
    if as_json:
        emit_json(res)
        return
    table = Table(title=f"AUC on {res.probe_lang} after one task of each language (Table III)")
    table.add_column("pretraining language")
    for size, n, runs in zip(res.sizes, res.n_params, res.seeds, strict=True):
        table.add_column(
            f"{size} ({n:,})" + (f", {runs} seeds" if runs > 1 else ""), justify="right"
        )
    for row in res.rows():
        name = row.pop("lang")
        table.add_row(
            str(name),
            *("" if v is None else f"{v:.4f}" for v in row.values()),
            end_section=name == res.langs[-1],
        )
    console.print(table)
    if res.out:
        console.print(f"wrote [bold]{res.out}[/bold]")
