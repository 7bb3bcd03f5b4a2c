"""The commands that train: `plc train-task` and `plc probe`, with their progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from plc.cli.common import (
    DataOpt,
    ForceOpt,
    JsonOpt,
    MetricsOpt,
    StepBar,
    app,
    console,
    emit_json,
    err_console,
    train_options,
)
from plc.runtime import rank

PANEL = "Training"  # of `plc --help`


@app.command("train-task", rich_help_panel=PANEL)
@train_options
def train_task_cmd(
    ckpt: Path = typer.Option(
        ..., "--ckpt", help="Input checkpoint (e.g. c47.pt; `plc init` first)."
    ),
    lang: str = typer.Option(None, "--lang", help="Language of the task (data/<lang>.zarr)."),
    mix: str = typer.Option(
        None, "--mix", help="Stationary problem: e.g. en,zh,fr,ja,es,de,pt,ru."
    ),
    mix_weights: str = typer.Option(None, "--mix-weights", help="Mixture weights (default equal)."),
    data: Path = DataOpt,
    out: Path = typer.Option(None, "--out", "-o", help="Output (default: input's number + 1)."),
    metrics: Path = MetricsOpt,
    val_every: int = typer.Option(
        None, "--val-every", help="Validate on the task's language every K steps (App. A)."
    ),
    val_seqs: int = typer.Option(
        None, "--val-seqs", help="Windows for --val-every (default: the probe's count)."
    ),
    continue_run: bool = typer.Option(
        False,
        "--continue/--reset-optimizer",
        help="Continue the input's optimizer and schedule (one warm-up per run: the stationary "
        "problem) instead of the protocol's reset at every task (§IV-B, the default).",
    ),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
    options: Any = None,
) -> None:
    """Train a checkpoint on one task instance and write the next checkpoint (§IV-A/B)."""
    from plc.task import train_task

    bar = StepBar(
        f"{ckpt.name} {lang or 'mix'}",
        ["loss {task.fields[loss]:.4f}", "{task.fields[rate]:,.0f} tok/s"],
        as_json,
        loss=0.0,
        rate=0.0,
    )

    def on_step(row: dict, total: int) -> None:
        bar.step(row["step"] + 1, total, loss=row["loss"], rate=row["tokens_per_s"])

    with bar:
        res = train_task(
            ckpt,
            lang,
            options=options,
            mix=mix,
            mix_weights=mix_weights,
            data=data,
            out=out,
            metrics=metrics,
            continue_run=continue_run,
            val_every=val_every,
            val_seqs=val_seqs,
            force=force,
            on_step=on_step,
        )
    if rank() != 0:  # one summary from torchrun's ranks
        return
    for note in res.notes:
        err_console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    if as_json:
        emit_json(res)
        return
    resumed = f", resumed at step {res.resumed_from}" if res.resumed_from else ""
    console.print(
        f"wrote [bold]{res.out}[/bold]: task {res.task_index} ({res.lang}), {res.steps:,} steps, "
        f"{res.tokens:,} tokens, lr {res.lr:.3g}, final loss {res.final_loss:.4f}, "
        f"{res.tokens_per_s:,.0f} tokens/s{resumed}"
    )
