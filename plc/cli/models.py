"""Checkpoints and their shapes: `plc sizes`, `presets`, `init`, `inspect`, `export`, `intervene`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from plc.cli.common import (
    DataOpt,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    app,
    console,
    emit_json,
)
from plc.errors import PlcError

PANEL = "Checkpoints"  # of `plc --help`


@app.command(rich_help_panel=PANEL)
def sizes(
    vocab_size: int = typer.Option(
        151_680, "--vocab-size", help="Embedding rows (Qwen3: 151,680)."
    ),
    context: int = typer.Option(2048, "--context", help="Positions in the position table."),
    as_json: bool = JsonOpt,
) -> None:
    """The size presets (Table I) with parameter counts and the paper's learning rate (Table II)."""
    from plc.sizes import size_table

    rows = size_table(vocab_size, context)
    if as_json:
        emit_json({"vocab_size": vocab_size, "context": context, "sizes": rows})
        return
    table = Table(title=f"plc size presets (vocab {vocab_size:,}, context {context:,})")
    for col in (
        "size",
        "layers",
        "d_model",
        "heads",
        "d/L",
        "non-emb params",
        "total params",
        "lr",
    ):
        table.add_column(col, justify="left" if col == "size" else "right")
    for r in rows:
        table.add_row(
            r["size"],
            str(r["layers"]),
            str(r["d_model"]),
            str(r["heads"]),
            f"{r['d_over_l']:.1f}",
            f"{r['n_params']:,}",
            f"{r['n_params_total']:,}",
            f"{r['lr']:.2e}",
        )
    console.print(table)


@app.command(rich_help_panel=PANEL)
def presets(as_json: bool = JsonOpt) -> None:
    """The protocol presets: tokens per task, batch, context, probe and diagnose budgets."""
    from plc.presets import PRESETS

    if as_json:
        emit_json({name: p.to_dict() for name, p in PRESETS.items()})
        return
    table = Table(title="plc protocol presets")
    cols = (
        "preset",
        "tokens/task",
        "batch tokens",
        "seq len",
        "steps",
        "warm-up",
        "probe eval",
        "tokenizer",
        "sizes",
        "cycles",
    )
    for col in cols:
        table.add_column(
            col, justify="left" if col in ("preset", "tokenizer", "sizes") else "right"
        )
    for p in PRESETS.values():
        table.add_row(
            p.name,
            f"{p.task_tokens:,}",
            f"{p.batch_tokens:,}",
            str(p.seq_len),
            f"{p.steps:,}",
            str(p.warmup_steps),
            f"{p.probe_eval_seqs}×{p.seq_len} / {p.probe_eval_every} steps",
            p.tokenizer,
            ",".join(p.sizes),
            str(p.cycles),
        )
    console.print(table)


@app.command(rich_help_panel=PANEL)
def init(
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (e.g. c0.pt)."),
    size: str = typer.Option(None, "--size", help="Preset: nano, micro, mini, 5M … 314M."),
    layers: int = typer.Option(
        None, "--layers", help="Custom shape, instead of --size: number of layers."
    ),
    d_model: int = typer.Option(
        None, "--d-model", help="Custom shape, instead of --size: hidden size."
    ),
    heads: int = typer.Option(
        None, "--heads", help="Custom shape: attention heads (default d_model / 64)."
    ),
    tokenizer: str = typer.Option(None, "--tokenizer", help="byte, qwen3 or hf:NAME (sets vocab)."),
    vocab_size: int = typer.Option(None, "--vocab-size", help="Vocabulary, if no --tokenizer."),
    context: int = typer.Option(None, "--context", help="Maximum sequence length (default 2048)."),
    preset: str = typer.Option(
        None,
        "--preset",
        help="The run's protocol preset: sets --context and --tokenizer, and later commands on "
        "this run default to it.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights and of the run."),
    run_id: str = typer.Option(None, "--run-id", help="Name of the run (default: size-s<seed>)."),
    sink_tokens: int = typer.Option(
        0, "--sink-tokens", help="Learnable attention-sink vectors prepended to every sequence."
    ),
    qk_norm: bool = typer.Option(
        False, "--qk-norm", help="LayerNorm on queries and keys (4·head_dim parameters a layer)."
    ),
    source: str = typer.Option(
        None,
        "--from",
        help="Start from a pretrained Hugging Face causal LM instead: hf:ID_OR_PATH[@REVISION] "
        "(GPT-2, GPT-NeoX/Pythia, Llama, Qwen2, Qwen3, OLMo, OLMo-2; docs/models.md).",
    ),
    along_pretraining: bool = typer.Option(
        False,
        "--along-pretraining",
        help="--from: record the revision as a point of its suite's pretraining (task index = "
        "its step, tokens = step × --tokens-per-step), as plc plan checkpoints does.",
    ),
    tokens_per_step: int = typer.Option(
        None, "--tokens-per-step", help="--from: the suite's pretraining tokens per step."
    ),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Write a freshly initialised checkpoint (task index 0), or one of a pretrained model."""
    from plc.init import init_checkpoint

    res = init_checkpoint(
        out,
        size=size,
        layers=layers,
        d_model=d_model,
        heads=heads,
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        context=context,
        preset=preset,
        seed=seed,
        run_id=run_id,
        sink_tokens=sink_tokens,
        qk_norm=qk_norm,
        source=source,
        along_pretraining=along_pretraining,
        tokens_per_step=tokens_per_step,
        force=force,
    )
    if as_json:
        emit_json(res)
        return
    if res.source is not None:
        where = (
            f", task {res.task_index} ({res.tokens_seen:,} pretraining tokens)"
            if along_pretraining
            else ""
        )
        console.print(
            f"wrote [bold]{res.path}[/bold]: {res.source} ({res.architecture}), "
            f"{res.n_params:,} non-embedding parameters ({res.n_params_total:,} total), vocab "
            f"{res.vocab_size:,}, context {res.context:,}{where}"
        )
        return
    extras = (
        f", {res.sink_tokens} sink tokens ({res.n_sink_params:,} parameters)"
        if res.sink_tokens
        else ""
    ) + (", QK-norm" if res.qk_norm else "")
    console.print(
        f"wrote [bold]{res.path}[/bold]: {res.size}, {res.n_params:,} non-embedding parameters "
        f"({res.n_params_total:,} total), vocab {res.vocab_size:,}, context {res.context:,}{extras}"
    )


@app.command(rich_help_panel=PANEL)
def inspect(
    ckpt: Path = typer.Argument(..., help="A checkpoint (.pt)."),
    as_json: bool = JsonOpt,
) -> None:
    """Config, parameter counts, task index and task history of a checkpoint."""
    from plc.init import describe_checkpoint

    info = describe_checkpoint(ckpt)
    if as_json:
        emit_json(info)
        return
    table = Table(title=str(ckpt), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for k, v in info.items():
        if k != "history":
            table.add_row(k, _cell(v))
    console.print(table)
    if info["history"]:
        from plc.store import history_method

        methods = [history_method(h) for h in info["history"]]
        hist = Table(title="tasks trained")
        for col in ("#", "lang", "tokens", "steps", "lr", *(["method"] if any(methods) else [])):
            hist.add_column(col, justify="right")
        for i, (h, method) in enumerate(zip(info["history"], methods, strict=True), 1):
            hist.add_row(
                str(i),
                str(h.get("lang")),
                f"{h.get('tokens', 0):,}",
                str(h.get("steps")),
                f"{h.get('lr', 0):.2e}",
                *([method] if any(methods) else []),
            )
        console.print(hist)


def _cell(v: Any) -> str:
    if isinstance(v, bool):  # before int: True is an int
        return "yes" if v else "no"
    return f"{v:,}" if isinstance(v, int) else f"{v:.4g}" if isinstance(v, float) else str(v)


@app.command(rich_help_panel=PANEL)
def export(
    ckpt: Path = typer.Argument(..., help="A checkpoint (.pt)."),
    out: Path = typer.Argument(..., help="Output folder."),
    fmt: str = typer.Option(
        "hf",
        "--format",
        help="hf: a transformers folder (plc's GPT as GPT2LMHeadModel; a model started with "
        "--from in its own family's format).",
    ),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Export a checkpoint for other tools (Hugging Face format)."""
    from plc.export import export_hf

    if fmt != "hf":
        raise PlcError(f"unknown export format {fmt!r}; the only one is hf")
    path = export_hf(ckpt, out, force=force)
    if as_json:
        emit_json({"path": str(path), "format": fmt})
        return
    console.print(f"wrote [bold]{path}[/bold] (load with AutoModelForCausalLM.from_pretrained)")


def _remedy_option(method: str, name: str, flag: str | None = None) -> Any:
    """`plc intervene METHOD`'s option for the remedy field `name` (plc.options.MitigationOptions):
    its flag (or `flag`), its help, and the default of the `plc plan --mitigation METHOD` arm."""
    from plc.options import ARMS, MitigationOptions

    f = next(f for f in dataclasses.fields(MitigationOptions) if f.name == name)
    default = ARMS[method][2] if method in ARMS else None
    return typer.Option(
        None if default is None else f.metadata["cli_type"](default),
        flag or f.metadata["flag"],
        help=f"{method}: {f.metadata['help']}",
    )


@app.command(rich_help_panel=PANEL)
def intervene(
    method: str = typer.Argument(..., help="shrink-perturb, redo or embed-reset."),
    ckpt: Path = typer.Argument(..., help="A checkpoint (.pt)."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (e.g. c47x.pt)."),
    shrink_perturb: str = _remedy_option("shrink-perturb", "shrink_perturb"),
    tau: float = _remedy_option("redo", "redo", "--tau"),
    data: Path = DataOpt,
    lang: str = typer.Option(None, "--lang", help="redo: language whose windows score units."),
    seqs: int = typer.Option(256, "--seqs", help="redo: evaluation windows scored."),
    seq_len: int = typer.Option(None, "--seq-len", help="redo: window length (default context)."),
    seed: int = typer.Option(None, "--seed", help="Seed of the new weights (default the run's)."),
    run_id: str = typer.Option(None, "--run-id", help="Rename the run (default: keep its id)."),
    device: str = DeviceOpt,
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Apply one plasticity remedy once to a checkpoint, e.g. between two train-tasks."""
    from plc.mitigations import intervene as run_intervene

    res = run_intervene(
        method,
        ckpt,
        out=out,
        shrink_perturb=shrink_perturb,
        tau=tau,
        data=data,
        lang=lang,
        seqs=seqs,
        seq_len=seq_len,
        seed=seed,
        run_id=run_id,
        device=device,
        force=force,
    )
    if as_json:
        emit_json(res)
        return
    what = method
    if res.reset_units is not None:
        n = sum(len(r) for r in res.reset_units)
        total = res.units_per_layer * len(res.reset_units)
        what += f": reset {n:,} of {total:,} MLP units (dormancy ≤ {tau:g} on {lang})"
    console.print(f"wrote [bold]{res.out}[/bold] ({what})")
