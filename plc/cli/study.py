"""A study as a whole: `plc plan`, `demo`, `status`, `report` and `metrics`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from plc.cli.common import (
    ForceOpt,
    JsonOpt,
    app,
    console,
    emit_json,
    err_console,
    plan_options,
    run_argv,
)
from plc.cli.onset import AlphaOpt, EstimatorOpt, WindowOpt, print_notes

PANEL = "Studies"  # of `plc --help`


@app.command("status", rich_help_panel=PANEL)
def status_cmd(
    directory: Path = typer.Argument(Path("."), help="The study's folder (a plan's or demo's)."),
    stale_minutes: float = typer.Option(
        30.0, "--stale-minutes", help="In-progress files older than this are stale (job died)."
    ),
    estimator: str = EstimatorOpt,
    alpha: float = AlphaOpt,
    window: int = WindowOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Where a study stands, from its files alone: one row per run, stale jobs, time left."""
    from plc.status import format_duration, run_rows, status

    res = status(
        directory, stale_minutes=stale_minutes, estimator=estimator, alpha=alpha, window=window
    )
    if as_json:
        emit_json(res)
        return
    print_notes(res.notes)
    rows = run_rows(res.runs)
    table = Table(
        title=f"{res.directory}" + (f" (plan: {Path(res.plan).name})" if res.plan else "")
    )
    for col in rows[0] if rows else ():
        table.add_column(col, justify="right" if col in ("tokens/s", "time left") else "left")
    style = {"stale": "red", "unreadable": "red", "running": "green", "done": "dim"}
    for r, cells in zip(res.runs, rows, strict=True):
        table.add_row(*cells.values(), style=style.get(r.state))
    console.print(table)
    for r in res.runs:
        for problem in r.problems:
            err_console.print(f"[red]{r.folder}:[/red] {problem}", highlight=False)
    for other in res.nested:
        console.print(f"another study inside, with its own plan: plc status {other}")
    for job in [j for r in res.runs for j in r.jobs] + res.jobs:
        mark = "[red]stale[/red]" if job.stale else "[green]active[/green]"
        console.print(
            f"{mark} {job.path} ({job.what}, written {format_duration(job.minutes * 60)} ago)",
            highlight=False,
        )
    if res.seconds_left is not None and res.seconds_left > 0:
        console.print(
            f"training left: {format_duration(res.seconds_left)} of compute at the measured rates"
        )


@app.command("report", rich_help_panel=PANEL)
def report_cmd(
    directory: Path = typer.Argument(..., help="The study's folder (a plan's or demo's)."),
    out: Path = typer.Option(..., "--out", "-o", help="The HTML page to write."),
    estimator: str = EstimatorOpt,
    alpha: float = AlphaOpt,
    window: int = WindowOpt,
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """A study on one self-contained HTML page: onsets, fits, figures, correlates, provenance."""
    from plc.report import report

    res = report(directory, out, force=force, estimator=estimator, alpha=alpha, window=window)
    if as_json:
        emit_json(res)
        return
    print_notes(res.notes)
    console.print(
        f"wrote [bold]{res.path}[/bold] ({res.bytes / 1e6:.1f} MB): {res.runs} runs, "
        f"{len(res.figures)} figures, {len(res.tables)} tables"
    )


metrics_app = typer.Typer(help="Metric files: convert them for other tools.", no_args_is_help=True)
app.add_typer(metrics_app, name="metrics", rich_help_panel=PANEL)


@metrics_app.command("tensorboard")
def metrics_tensorboard_cmd(
    inputs: list[str] = typer.Argument(..., help="Metric files, globs or folders of them."),
    out: Path = typer.Option(..., "--out", "-o", help="TensorBoard folder (one run per plc run)."),
    force: bool = typer.Option(False, "--force", help="Replace a run's existing event files."),
    as_json: bool = JsonOpt,
) -> None:
    """Write finished metric files as TensorBoard event files (`tensorboard --logdir OUT`)."""
    from plc.tracking import metrics_to_tensorboard

    res = metrics_to_tensorboard(inputs, out, force=force)
    if as_json:
        emit_json(res)
        return
    console.print(
        f"wrote [bold]{res.out}[/bold]: {len(res.runs)} runs, {res.scalars:,} values from "
        f"{res.metric_files} metric files (view with `tensorboard --logdir {res.out}`)"
    )


@app.command(rich_help_panel=PANEL)
@plan_options
def plan(
    problem: str = typer.Argument(
        ...,
        help="continual, stationary, control (Markov chains), transfer (Table III), lr-grid, or "
        "checkpoints (a model suite's pretraining revisions; docs/models.md).",
    ),
    fmt: str = typer.Option(
        "make", "--format", help="make (a Makefile) or snakemake (a Snakefile, for Slurm too)."
    ),
    output: Path = typer.Option(
        None, "--output", "-o", help="Write the plan file here, and plan.json beside it."
    ),
    force: bool = ForceOpt,
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Write one JSON object to stdout: the plan as data (plan.json's content) under "
        "`plan`, with the files written (-o) and the counts of jobs and tasks.",
    ),
    *,
    options,
) -> None:
    """Write a protocol as a Makefile (`make -j2` runs it) or a Snakefile (`snakemake -c2`, or
    Slurm); a rerun finishes what is missing."""
    from plc.plan import build_plan, plan_json, render, write_plan
    from plc.plan.costs import cost_lines

    the_plan = build_plan(problem, options)
    if output is None:
        text = render(the_plan, fmt)  # refuses what the format cannot carry, --json or not
        if not as_json:
            sys.stdout.write(text)
            for line in cost_lines(the_plan.costs):
                err_console.print(line, highlight=False)
            return
        path = data = None
    else:
        path, data = write_plan(the_plan, output, fmt, force=force)
    if as_json:
        emit_json(
            {
                "plan_file": None if path is None else str(path),
                "plan_json": None if data is None else str(data),
                "format": fmt,
                "jobs": len(the_plan.jobs),
                "tasks": the_plan.n_tasks,
                "plan": plan_json(the_plan),
            }
        )
        return
    err_console.print(
        f"wrote [bold]{path}[/bold] and {data.name}: {len(the_plan.jobs)} jobs, "
        f"{the_plan.n_tasks} tasks"
    )
    for line in cost_lines(the_plan.costs):
        err_console.print(line, highlight=False)


@app.command(rich_help_panel=PANEL)
def demo(
    out: Path = typer.Option(
        "demo", "--out", help="Folder for data, checkpoints, metrics, figures."
    ),
    sizes: str = typer.Option(None, "--sizes", help="Model sizes (default: nano,micro,mini)."),
    cycles: int = typer.Option(None, "--cycles", help="Cycles of 8 tasks (default: 3)."),
    preset: str = typer.Option("cpu", "--preset", help="Budget preset (cpu: minutes on a laptop)."),
    workers: int = typer.Option(2, "--workers", help="Jobs at a time (one thread each)."),
    control: str = typer.Option(
        "nano",
        "--control",
        help="Sizes of the positive control run beside it (Markov-chain tasks); none for none.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of every run."),
    keep_checkpoints: bool = typer.Option(
        False,
        "--keep-checkpoints",
        help="Keep every checkpoint (default: each run's last; the others take ~0.8 GB).",
    ),
    estimator: str = EstimatorOpt,
    alpha: float = AlphaOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run the continual protocol end to end on the embedded corpus and summarise it."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from plc.demo import demo as run_demo

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[tasks]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        disable=as_json,
    )
    state: dict[str, Any] = {"bar": None, "trained": 0, "tasks": 0}

    def on_start(plan, work: float) -> None:
        state["bar"] = progress.add_task("protocol", total=work, tasks="")
        state["tasks"] = plan.n_tasks

    def on_done(done, work: float) -> None:
        if done.job.stage == "train":
            state["trained"] += 1
        progress.update(
            state["bar"], advance=work, tasks=f"tasks {state['trained']}/{state['tasks']}"
        )

    with progress:
        res = run_demo(
            out,
            sizes=sizes.split(",") if sizes else None,
            cycles=cycles,
            preset=preset,
            seed=seed,
            workers=workers,
            control=[] if control == "none" else control.split(","),
            keep_checkpoints=keep_checkpoints,
            estimator=estimator,
            alpha=alpha,
            execute=run_argv,
            on_start=on_start,
            on_done=on_done,
        )
    if as_json:
        emit_json(res)
        return
    from plc.onset import view

    print_notes(res.notes)
    table = Table(title=f"Onset of plasticity loss ({res.preset} preset, {res.cycles} cycles)")
    for col in ("size", "non-emb params", "probes", "onset (task)", "onset (tokens)"):
        table.add_column(col, justify="left" if col == "size" else "right")
    for r in res.onsets:
        table.add_row(
            r.size,
            f"{r.n_params:,}",
            "" if r.n_probes is None else str(r.n_probes),
            view.onset_cell(r),
            f"{r.onset_tokens:,}" if r.onset_tokens else "",
        )
    console.print(table)
    for r in res.onsets:
        console.print(view.verdict(r))
    console.print(f"log-log law: [bold]{res.law}[/bold]")
    for c in res.control:
        sd = c.run.noise_sd
        spread = f" ({c.rise_pct / sd:.1f} noise SDs of {sd:.1f} %)" if sd else ""
        console.print(
            f"positive control ({c.run.size}, Markov-chain tasks): probe AUC at task "
            f"{c.last_task} {c.rise_pct:+.1f} % vs the first probe{spread}; "
            f"[bold]{view.verdict(c.run)}[/bold]"
        )
    console.print(f"figures: {', '.join(res.figures)}")
    console.print(f"report: {res.report} (one page, open it in a browser)")
    if res.control_report:
        console.print(f"positive control's report: {res.control_report}")
    console.print(f"Makefile: {res.makefile} (rerun or extend with `make -f {res.makefile} -j2`)")
    console.print(f"{res.ran} jobs ran, {res.skipped} were already done, in {res.seconds:.0f} s.")
    if res.removed:
        console.print(
            f"removed {len(res.removed)} checkpoints a later task trained from (each run's last "
            "stays; --keep-checkpoints keeps all)"
        )
    console.print(f"[yellow]{res.caveat}[/yellow]")
