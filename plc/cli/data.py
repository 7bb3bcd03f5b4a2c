"""`plc shard` and `plc data`: token stores."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from plc.cli.common import (
    ForceOpt,
    JsonOpt,
    app,
    console,
    emit_json,
    err_console,
    stop_progress,
)

# -------------------------------------------------------------------------------------- data

PANEL = "Token stores"  # of `plc --help`

data_app = typer.Typer(help="Token stores: look inside them.", no_args_is_help=True)
app.add_typer(data_app, name="data", rich_help_panel=PANEL)


@app.command("shard", rich_help_panel=PANEL)
def shard_cmd(
    lang: str = typer.Option(
        ..., "--lang", help="Language code (en, zh, fr, ja, es, de, pt, ru, vi)."
    ),
    source: str = typer.Option(
        "embedded",
        "--source",
        help="embedded, a .txt/.jsonl/.parquet file or folder (.gz/.zst too), hf:DATASET[:CONFIG], "
        "or markov:SEED[,symbols=64,successors=4,alpha=1,shared=β,shared_seed=0] (a random Markov chain: a loss floor; shared: a map every chain shares).",
    ),
    tokenizer: str = typer.Option("byte", "--tokenizer", help="byte, qwen3 or hf:NAME_OR_PATH."),
    out: Path = typer.Option(
        None, "--out", "-o", help="Store to write (default data/<lang>.zarr)."
    ),
    train_tokens: int = typer.Option(
        None, "--train-tokens", help="Train budget (default: all; markov 262,144)."
    ),
    val_tokens: int = typer.Option(
        None, "--val-tokens", help="Val budget (default ~10 % of docs; markov 16,384)."
    ),
    workers: int = typer.Option(
        1, "--workers", help="Processes: tokenizers, or with --parts the parts written at once."
    ),
    part: str = typer.Option(
        None,
        "--part",
        help="I/N: write only part I of N of a folder or hf: source (one job of N), as "
        "<out>.parts/I-of-N.zarr.",
    ),
    parts: int = typer.Option(
        1,
        "--parts",
        help="N: read the source in N parts, write those not yet written, and merge them "
        "into --out (after N --part jobs: only the merge).",
    ),
    seed: int = typer.Option(
        0, "--seed", help="Seed of the train/val split by document (markov: of the sample)."
    ),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Tokenize a text source into the Zarr token store of one language (train + val)."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from plc.data.shard import shard
    from plc.errors import PlcError

    part_of = None
    if part is not None:
        i, sep, n = part.partition("/")
        if not (sep and i.strip().isdigit() and n.strip().isdigit()):
            raise PlcError(f"--part takes I/N, e.g. 3/8, got {part!r}")
        part_of = (int(i), int(n))
    progress = Progress(
        TextColumn(f"[bold]shard {lang}"),
        BarColumn(),
        TextColumn("{task.completed:,} tokens"),
        TextColumn("{task.fields[docs]:,} docs"),
        TextColumn("{task.fields[rate]:,.0f} tok/s"),
        TextColumn("{task.fields[mbps]:.1f} MB/s"),
        TimeElapsedColumn(),
        console=err_console,
        disable=as_json or not err_console.is_terminal,  # a log gets the summary line only
    )
    bar = progress.add_task("shard", total=None, docs=0, rate=0.0, mbps=0.0)
    start = time.perf_counter()

    def report(p) -> None:
        progress.start()  # on the first batch: bad input fails before any bar is drawn
        dt = max(time.perf_counter() - start, 1e-9)
        progress.update(
            bar,
            completed=p.tokens,
            total=p.total_tokens,
            docs=p.docs,
            rate=p.tokens / dt,
            mbps=p.text_bytes / dt / 1e6,
        )

    try:
        res = shard(
            lang,
            out,
            source=source,
            tokenizer=tokenizer,
            train_tokens=train_tokens,
            val_tokens=val_tokens,
            workers=workers,
            seed=seed,
            force=force,
            progress=report,
            part=part_of,
            parts=parts,
        )
    finally:
        stop_progress(progress)
    if as_json:
        emit_json(res)
        return
    console.print(
        f"wrote [bold]{res.path}[/bold] ({res.tokenizer}, {res.source}): "
        f"train {res.train_tokens:,} tokens / {res.train_docs:,} docs, "
        f"val {res.val_tokens:,} tokens / {res.val_docs:,} docs; "
        f"{res.text_bytes / 1e6:.2f} MB of text in {res.seconds:.1f} s"
        + (
            f"; {res.parts} parts, {res.parts_reused} of them written before"
            if res.parts > 1 and part_of is None
            else ""
        )
        + (
            f"; entropy rate {res.entropy_rate:.4f} nats/token"
            if res.entropy_rate is not None
            else ""
        )
    )


@data_app.command("info")
def data_info(
    store: Path = typer.Argument(..., help="A token store (e.g. data/vi.zarr)."),
    sample: int = typer.Option(64, "--sample", help="Train tokens to decode as a sample."),
    as_json: bool = JsonOpt,
) -> None:
    """Attributes, token and document counts, and a decoded sample of a token store."""
    from plc.data.tokenstore import describe_store

    info = describe_store(store, sample)
    if as_json:
        emit_json(info)
        return
    tok = info.tokenizer
    table = Table(title=str(store), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = {
        "lang": info.lang,
        "source": info.source,
        "tokenizer": f"{tok.get('name')} (vocab {tok.get('vocab_size', 0):,}, EOS {tok.get('eos_id')}, "
        f"fingerprint {tok.get('fingerprint')})",
        "train": f"{info.train_tokens:,} tokens, {info.train_docs:,} documents",
        "val": f"{info.val_tokens:,} tokens, {info.val_docs:,} documents",
        "split seed": str(info.attrs.get("seed", "")),
        "on disk": f"format {info.format_version}, {info.dtype} ids, {info.files:,} files, "
        f"{info.disk_bytes / 1e6:,.1f} MB ({info.bytes_per_token:.2f} bytes a token)",
        "plc version": info.plc_version,
    }
    chain = info.attrs.get("markov")
    if chain:
        rows["markov chain"] = (
            f"{chain['symbols']} symbols, {chain['successors']} successors each, "
            f"Dirichlet({chain['alpha']:g}) weights, seed {chain['seed']}; "
            f"documents of {chain['doc_symbols']:,} symbols"
        )
        if chain.get("shared"):
            rows["markov chain"] += (
                f"; with probability {chain['shared']:g} the shared map of seed "
                f"{chain['shared_seed']} applied to the symbol two back"
            )
    if info.entropy_rate is not None:
        rows["entropy rate"] = f"{info.entropy_rate:.4f} nats/token (the floor of the loss)"
    for k, v in rows.items():
        table.add_row(k, v)
    console.print(table)
    if info.sample_text is not None:
        console.print(f"[bold]first {len(info.sample_ids)} train tokens:[/bold]")
        console.print(info.sample_text, markup=False, highlight=False)
    else:
        console.print(
            f"first train tokens: {info.sample_ids} ({info.sample_note})", highlight=False
        )
