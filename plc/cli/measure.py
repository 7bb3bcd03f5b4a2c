"""Measurements of a checkpoint without training it: `plc eval` and `plc diagnose`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from plc.cli.common import (
    DataOpt,
    DeviceOpt,
    EvalSeedOpt,
    ForceOpt,
    JsonOpt,
    MetricsOpt,
    PresetOpt,
    StepBar,
    app,
    console,
    emit_json,
    err_console,
    options_of,
    train_options,
)
from plc.runtime import rank

PANEL = "Measurements"  # of `plc --help`


@app.command("eval", rich_help_panel=PANEL)
def eval_cmd(
    ckpt: Path = typer.Argument(..., help="A checkpoint (.pt)."),
    data: Path = DataOpt,
    lang: str = typer.Option("vi", "--lang", help="Language whose val split to evaluate on."),
    preset: str = PresetOpt,
    seqs: int = typer.Option(None, "--seqs", help="Fixed evaluation windows (paper: 1,280)."),
    seq_len: int = typer.Option(None, "--seq-len", help="Window length (default: the context)."),
    eval_seed: int = EvalSeedOpt,
    batch_size: int = typer.Option(None, "--batch-size", help="Windows per forward pass."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Mean validation loss (nats/token) on the fixed evaluation windows of one language."""
    from plc.evaluate import evaluate

    res = evaluate(
        ckpt,
        data=data,
        lang=lang,
        preset=preset,
        seqs=seqs,
        seq_len=seq_len,
        eval_seed=eval_seed,
        batch_size=batch_size,
        device=device,
    )
    if as_json:
        emit_json(res)
        return
    floor = (
        f"; {res.excess_loss:.4f} above the entropy floor {res.entropy_rate:.4f}"
        if res.entropy_rate is not None
        else ""
    )
    console.print(
        f"{ckpt} on {lang}: validation loss [bold]{res.loss:.4f}[/bold] nats/token over "
        f"{res.seqs:,} × {res.seq_len:,} tokens (windows of seed {res.eval_seed}; "
        f"{res.tokens_per_s:,.0f} tokens/s){floor}"
    )


@app.command(rich_help_panel=PANEL)
@train_options
def probe(
    ckpt: Path = typer.Argument(..., help="The checkpoint to probe (only read, never modified)."),
    data: Path = DataOpt,
    lang: str = typer.Option("vi", "--lang", help="Probe language (data/<lang>.zarr)."),
    metrics: Path = MetricsOpt,
    eval_every: int = typer.Option(None, "--eval-every", help="Steps between evals (paper 95)."),
    eval_seqs: int = typer.Option(None, "--eval-seqs", help="Fixed val windows (paper 1,280)."),
    eval_seed: int = EvalSeedOpt,
    repeats: int = typer.Option(
        1, "--repeats", help="Probe K times with probe seeds S…S+K−1 on the same windows."
    ),
    probe_seed: int = typer.Option(
        None, "--probe-seed", help="Seed S of the probe's batches (default: the run's)."
    ),
    from_scratch: bool = typer.Option(
        False, "--from-scratch", help="Probe a fresh init of the same config and seed (App. B)."
    ),
    keep: Path = typer.Option(None, "--keep", help="Save the trained copy as this checkpoint."),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
    options: Any = None,
) -> None:
    """Plasticity probe: train a copy on the probe language, record validation loss and its AUC."""
    from plc.probe import probe as run_probe

    bar = StepBar(
        f"probe {ckpt.name}{' from scratch' if from_scratch else ''} on {lang}",
        ["val loss {task.fields[val]:.4f}"],
        as_json,
        val=float("nan"),
    )

    def on_step(row: dict, total: int) -> None:
        bar.step(row["step"] + 1, total)

    def on_eval(step: int, loss: float) -> None:
        bar.update(val=loss)

    with bar:
        res = run_probe(
            ckpt,
            options=options,
            data=data,
            lang=lang,
            metrics=metrics,
            eval_every=eval_every,
            eval_seqs=eval_seqs,
            eval_seed=eval_seed,
            repeats=repeats,
            probe_seed=probe_seed,
            from_scratch=from_scratch,
            keep=keep,
            force=force,
            on_step=on_step,
            on_eval=on_eval,
        )
    if rank() != 0:  # one summary from torchrun's ranks
        return
    if as_json:
        emit_json(res)
        return
    resumed = f", resumed at step {res.resumed_from}" if res.resumed_from else ""
    kept = f"; kept the trained copy as {res.kept}" if res.kept else ""
    n = len(res.repeats)
    spread = f" ± {res.auc_sd:.4f} (SD of {n} probe seeds)" if n > 1 else ""
    floor = (
        f"; final loss {res.final_excess_loss:.4f} above the entropy floor {res.entropy_rate:.4f}"
        if res.entropy_rate is not None
        else ""
    )
    console.print(
        f"probe of {ckpt}{' (from scratch)' if res.from_scratch else ''} on {res.probe_lang}: "
        f"AUC [bold]{res.auc:.4f}[/bold]{spread}, val loss {res.curve[0]['val_loss']:.4f} → "
        f"{res.final_val_loss:.4f} over {res.steps:,} steps ({len(res.curve)} evals{resumed})"
        f"{floor}"
    )
    console.print(f"wrote [bold]{res.metrics_path}[/bold]{kept}")


def diagnose_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give `plc diagnose` one option per DiagnoseOptions field; it receives them as `options`."""
    from plc.options import DiagnoseOptions

    def option(f: dataclasses.Field) -> tuple[Any, Any]:
        kind = f.metadata["cli_type"]
        flag = typer.Option(f.default, *f.metadata["flag"].split(","), help=f.metadata["help"])
        return flag, kind if f.default is not None else kind | None

    return options_of(DiagnoseOptions, option, DiagnoseOptions)(command)


@app.command(rich_help_panel=PANEL)
@diagnose_options
def diagnose(
    ckpt: Path = typer.Argument(..., help="A checkpoint (.pt)."),
    data: Path = DataOpt,
    metrics: Path = MetricsOpt,
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
    options: Any = None,
) -> None:
    """Correlates of plasticity loss: mean |θ|, dormant units, lazy/collapsed heads, feature ranks,
    the last hidden state, the distance from θ₀ and the sensitivity to a perturbation."""
    from rich.progress import Progress

    from plc.diagnose import diagnose as run_diagnose

    with Progress(console=err_console, transient=True, disable=as_json) as bar:
        task = bar.add_task("diagnose", total=None)
        res = run_diagnose(
            ckpt,
            options,
            data=data,
            metrics=metrics,
            force=force,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if as_json:
        emit_json(res)
        return
    # Per-layer rows unless only --params was measured.
    layers = res.dormant_pct_per_layer or res.entropy or res.effective_rank or []
    if layers:
        table = Table(title=f"{ckpt} (task {res.task_index})")
        for col in ("layer", "dormant %", "entropy min/mean/max", "eff rank", "stable rank", "|h|"):
            table.add_column(col, justify="right")
        for i in range(len(layers)):
            ent = res.entropy[i] if res.entropy else None
            table.add_row(
                str(i),
                f"{res.dormant_pct_per_layer[i]:.1f}" if res.dormant_pct_per_layer else "",
                f"{min(ent):.3f} / {sum(ent) / len(ent):.3f} / {max(ent):.3f}" if ent else "",
                f"{res.effective_rank[i]:.1f}" if res.effective_rank else "",
                f"{res.stable_rank[i]:.2f}" if res.stable_rank else "",
                f"{res.feature_norm[i]:.3f}" if res.feature_norm else "",
            )
        console.print(table)
    parts = []
    if res.param_abs_mean is not None:
        parts.append(f"mean |θ| {res.param_abs_mean:.5f}")
    if res.dormant_pct is not None:
        parts.append(f"dormant {res.dormant_pct:.2f} % (ε {res.eps:g}, {res.dormant_lang})")
    if res.h_max is not None:
        parts.append(
            f"lazy {res.lazy_pct:.1f} %, collapsed {res.collapsed_pct:.1f} % of heads "
            f"(H_max {res.h_max:.4f}, queries {res.query_from}…{res.seq_len}, {res.entropy_lang})"
        )
    console.print("; ".join(parts))
    newer = []
    if res.last_hidden_norm is not None:
        newer.append(
            f"last hidden state |h| {res.last_hidden_norm:.4g}, variance "
            f"{res.last_hidden_var:.4g} ({res.dormant_lang})"
        )
    if res.init_distance is not None:
        newer.append(f"‖θ − θ₀‖ {res.init_distance:.5g}")
    if res.perturb_loss_increase is not None:
        newer.append(
            f"perturbed by σ = {res.perturb_sigma:g} init std: loss {res.perturb_loss:.4f} "
            f"{res.perturb_loss_increase:+.4f} ({res.perturb_lang}, {len(res.perturb_draws)} "
            "draws)"
        )
    if newer:
        console.print("; ".join(newer))
    console.print(f"wrote [bold]{res.metrics_path}[/bold] in {res.seconds:.1f} s")
