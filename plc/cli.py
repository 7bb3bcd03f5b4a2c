"""The `plc` command line: thin typer commands over the library.

Each command parses flags, calls one library function and renders its result (rich on a terminal,
one JSON object with --json). Heavy imports (torch, polars, zarr) happen inside the commands so
that `plc --help` and the light commands start in well under a second.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
from collections.abc import Callable
from inspect import Parameter, signature
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from plc import __version__
from plc.errors import PlcError

app = typer.Typer(
    name="plc",
    help="Measure loss of plasticity in GPT-style language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
# Piped output keeps whole table rows (rich would wrap at 80 columns).
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

JsonOpt = typer.Option(False, "--json", help="Write one JSON object to stdout.")
ForceOpt = typer.Option(False, "--force", help="Overwrite existing outputs.")
DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA if present), cpu or cuda.")
DataOpt = typer.Option(Path("data"), "--data", help="Folder of token stores (<lang>.zarr).")
MetricsOpt = typer.Option(Path("metrics"), "--metrics", help="Folder of metric files.")
PresetOpt = typer.Option(
    None, "--preset", help="Protocol preset for the defaults (default: the checkpoint's)."
)
EvalSeedOpt = typer.Option(
    None, "--eval-seed", help="Seed of the random evaluation windows (default: the run's)."
)


def options_of(
    cls: type, option: Callable[[dataclasses.Field], tuple[Any, Any]], build: Callable[..., Any]
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A decorator giving a command one option per field of the dataclass `cls`: `option(field)`
    is its (typer.Option, annotation); the command receives `build(**values)` as `options`."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        sig = signature(command, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "options"]
        added = []
        for f in dataclasses.fields(cls):
            default, annotation = option(f)
            added.append(
                Parameter(f.name, Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
            )

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> None:
            values = {f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls)}
            return command(**kwargs, options=build(**values))

        params = own + added
        wrapper.__signature__ = sig.replace(parameters=params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


def train_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command one option per TrainOptions field; it receives them as `options`.

    Every command that trains (train-task, probe) declares its training flags through this, so a
    new field of TrainOptions is a new flag of each of them, with the help written on the field.
    """
    from plc.options import TrainOptions

    def option(f: dataclasses.Field) -> tuple[Any, Any]:
        default = "auto" if f.name == "lr" else f.default
        kind = f.metadata["cli_type"]
        flag = typer.Option(
            default,
            f.metadata["flag"],
            help=f.metadata["help"],
            rich_help_panel=f.metadata["panel"],
        )
        return flag, kind if default is not None else kind | None

    return options_of(TrainOptions, option, TrainOptions)(command)


def plan_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give `plc plan` one option per PlanOptions field; it receives them as `options`. A field's
    flag text is parsed by the field's own parser (PlanOptions.from_flags)."""
    from plc.plan.options import PlanOptions

    def option(f: dataclasses.Field) -> tuple[Any, Any]:
        kind = f.metadata["cli_type"]
        default = None if f.metadata["parse"] else f.default
        flag = typer.Option(default, *f.metadata["flag"].split(","), help=f.metadata["help"])
        return flag, kind if default is not None else kind | None

    return options_of(PlanOptions, option, PlanOptions.from_flags)(command)


def emit_json(obj: Any) -> None:
    """One JSON object on stdout, for pipelines."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    sys.stdout.write(json.dumps(_finite(obj), default=str, allow_nan=False) + "\n")


def _finite(obj: Any) -> Any:
    """NaN and ±inf become null: strict JSON for the tools at the other end of the pipe."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _stop(progress) -> None:
    """Stop a progress display if it was started (a never-started one would print a blank line)."""
    if progress.live.is_started:
        progress.stop()


class _StepBar:
    """A progress bar of training steps for train-task and probe.

    Drawn at the first step, so bad input fails with its one line alone; a diverged loss ends the
    command with its message and exit status 1 (no output was written).
    """

    def __init__(self, label: str, columns: list[str], as_json: bool, **fields: Any):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            *(TextColumn(c) for c in columns),
            TimeRemainingColumn(),
            console=err_console,
            disable=as_json,
        )
        self.label, self.fields, self.task = label, fields, None

    def step(self, done: int, total: int, **fields: Any) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(
                self.label, total=total, completed=done - 1, **self.fields
            )
        self.update(completed=done, **fields)

    def update(self, **fields: Any) -> None:
        self.fields.update({k: v for k, v in fields.items() if k != "completed"})
        if self.task is not None:
            self.progress.update(self.task, **fields)

    def __enter__(self) -> _StepBar:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        from plc.train import TrainingDiverged

        _stop(self.progress)
        if exc_type is not None and issubclass(exc_type, TrainingDiverged):
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None


def _version(value: bool) -> None:
    if value:
        console.print(f"plc {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Measure loss of plasticity in GPT-style language models.

    Commands read and write checkpoints, Zarr token stores and Parquet metric files, so shell
    scripts or `make -j` chain the protocol. Add --debug anywhere for tracebacks.
    """


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(usage errors, aborts) of click, and of the copy of click that newer typer vendors."""
    import importlib

    usage, aborts = [], []
    for mod in ("click.exceptions", "typer._click.exceptions"):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        usage.append(m.ClickException)
        if hasattr(m, "Abort"):
            aborts.append(m.Abort)
    return tuple(usage), tuple(aborts)


def run_argv(argv: list[str]) -> int | None:
    """Run one `plc` command line in this process (the demo's workers run their jobs so)."""
    return app(args=argv, prog_name="plc", standalone_mode=False)


def main() -> None:
    """Entry point: bad input becomes one red line on stderr and exit status 2."""
    usage_errors, aborts = _click_exceptions()
    argv = sys.argv[1:]
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        code = app(args=argv, prog_name="plc", standalone_mode=False)
    except PlcError as e:
        if debug:
            raise
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except usage_errors as e:
        e.show()
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, *aborts):
        err_console.print("[red]interrupted[/red]")
        sys.exit(130)
    if code == 130:  # typer returns, rather than raises, on Ctrl-C outside standalone mode
        err_console.print("[red]interrupted[/red]")
    sys.exit(code if isinstance(code, int) else 0)


# -------------------------------------------------------------------------------------- data

data_app = typer.Typer(help="Token stores: look inside them.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.command("shard")
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
    workers: int = typer.Option(1, "--workers", help="Tokenizer processes."),
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
        )
    finally:
        _stop(progress)
    if as_json:
        emit_json(res)
        return
    console.print(
        f"wrote [bold]{res.path}[/bold] ({res.tokenizer}, {res.source}): "
        f"train {res.train_tokens:,} tokens / {res.train_docs:,} docs, "
        f"val {res.val_tokens:,} tokens / {res.val_docs:,} docs; "
        f"{res.text_bytes / 1e6:.2f} MB of text in {res.seconds:.1f} s"
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


# ------------------------------------------------------------------------------------ models


@app.command()
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


@app.command()
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


@app.command()
def init(
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (e.g. c0.pt)."),
    size: str = typer.Option(None, "--size", help="Preset: nano, micro, mini, 5M … 314M."),
    layers: int = typer.Option(None, "--layers", help="Custom shape: number of layers."),
    d_model: int = typer.Option(None, "--d-model", help="Custom shape: hidden size."),
    heads: int = typer.Option(None, "--heads", help="Attention heads (default d_model / 64)."),
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
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Write a freshly initialised checkpoint (task index 0)."""
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
        force=force,
    )
    if as_json:
        emit_json(res)
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


@app.command()
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


@app.command()
def export(
    ckpt: Path = typer.Argument(..., help="A checkpoint (.pt)."),
    out: Path = typer.Argument(..., help="Output folder."),
    fmt: str = typer.Option("hf", "--format", help="hf: a transformers GPT2LMHeadModel folder."),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Export a checkpoint for other tools (Hugging Face GPT-2 format)."""
    from plc.export import export_hf

    if fmt != "hf":
        raise PlcError(f"unknown export format {fmt!r}; the only one is hf")
    path = export_hf(ckpt, out, force=force)
    if as_json:
        emit_json({"path": str(path), "format": fmt})
        return
    console.print(f"wrote [bold]{path}[/bold] (load with GPT2LMHeadModel.from_pretrained)")


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


@app.command()
def intervene(
    method: str = typer.Argument(..., help="shrink-perturb or redo."),
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


# ---------------------------------------------------------------------------------- training


@app.command("train-task")
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

    bar = _StepBar(
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
    import os

    if os.environ.get("RANK", "0") != "0":
        return
    if as_json:
        emit_json(res)
        return
    resumed = f", resumed at step {res.resumed_from}" if res.resumed_from else ""
    console.print(
        f"wrote [bold]{res.out}[/bold]: task {res.task_index} ({res.lang}), {res.steps:,} steps, "
        f"{res.tokens:,} tokens, lr {res.lr:.3g}, final loss {res.final_loss:.4f}, "
        f"{res.tokens_per_s:,.0f} tokens/s{resumed}"
    )


# ------------------------------------------------------------------------------ measurements


@app.command("eval")
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


@app.command()
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
    import os

    from plc.probe import probe as run_probe

    bar = _StepBar(
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
    if os.environ.get("RANK", "0") != "0":
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


@app.command()
def diagnose(
    ckpt: Path = typer.Argument(..., help="A checkpoint (.pt)."),
    data: Path = DataOpt,
    metrics: Path = MetricsOpt,
    preset: str = PresetOpt,
    params: bool = typer.Option(True, "--params/--no-params", help="Mean |θ| (non-embedding)."),
    dormant: bool = typer.Option(True, "--dormant/--no-dormant", help="Dormant MLP units."),
    entropy: bool = typer.Option(True, "--entropy/--no-entropy", help="Attention entropy."),
    ranks: bool = typer.Option(
        True, "--ranks/--no-ranks", help="Effective/stable rank and norm of MLP features."
    ),
    dormant_lang: str = typer.Option("vi", "--dormant-lang", help="Data for dormant units."),
    dormant_seqs: int = typer.Option(None, "--dormant-seqs", help="Windows (paper: 256)."),
    eps: float = typer.Option(0.01, "--eps", help="Dormancy threshold on the normalised score."),
    entropy_lang: str = typer.Option("ru", "--entropy-lang", help="Data for attention entropy."),
    entropy_seqs: int = typer.Option(None, "--entropy-seqs", help="Windows (paper: 512)."),
    seq_len: int = typer.Option(None, "--seq-len", help="Window length (default: the context)."),
    query_from: int = typer.Option(
        None, "--query-from", help="First query position, 1-based (default: seq len / 8)."
    ),
    eval_seed: int = EvalSeedOpt,
    batch_size: int = typer.Option(None, "--batch-size", help="Windows per forward pass."),
    device: str = DeviceOpt,
    tensorboard: str = typer.Option(
        None, "--tensorboard", help="Also write the correlates to this TensorBoard folder."
    ),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Correlates of plasticity loss: mean |θ|, dormant units, lazy/collapsed heads, feature ranks."""
    from rich.progress import Progress

    from plc.diagnose import diagnose as run_diagnose

    with Progress(console=err_console, transient=True, disable=as_json) as bar:
        task = bar.add_task("diagnose", total=None)
        res = run_diagnose(
            ckpt,
            data=data,
            metrics=metrics,
            preset=preset,
            params=params,
            dormant=dormant,
            entropy=entropy,
            ranks=ranks,
            dormant_lang=dormant_lang,
            dormant_seqs=dormant_seqs,
            eps=eps,
            entropy_lang=entropy_lang,
            entropy_seqs=entropy_seqs,
            seq_len=seq_len,
            query_from=query_from,
            eval_seed=eval_seed,
            tensorboard=tensorboard,
            batch_size=batch_size,
            device=device,
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
    console.print(f"wrote [bold]{res.metrics_path}[/bold] in {res.seconds:.1f} s")


# ---------------------------------------------------------------------------------- analysis

ProbeAfterHelp = (
    "Keep only probes taken after these languages (App. B: zh,de,ru); all keeps every one."
)
NormalizeHelp = (
    "first: eq. 1, % change vs the first end-of-cycle (ru) probe; alone: AUC / AUC of the "
    "from-scratch probe."
)


@app.command("fit-onset")
def fit_onset_cmd(
    inputs: list[str] = typer.Argument(
        ...,
        help="Metric files (their probe rows are used) or onset tables (CSV/Parquet: n_params, onset[, size, seed]).",
    ),
    model: str = typer.Option(
        "all", "--model", help="linear, linlog, exp, loglog, all, or none (onsets only)."
    ),
    normalize: str = typer.Option("first", "--normalize", help=NormalizeHelp),
    probe_after: str = typer.Option(
        None,
        "--probe-after",
        help=ProbeAfterHelp + " Default: the plan's (plan.json beside the metrics), else zh,de,ru.",
    ),
    window: int = typer.Option(
        3,
        "--window",
        help="Window of Table IV's moving average (the descriptive minimum column; odd).",
    ),
    auc_from: str = typer.Option(
        "0",
        "--auc-from",
        help="0: the probe curve's area from step 0 (as probe stored it); first: recomputed without the step-0 evaluation.",
    ),
    alpha: float = typer.Option(
        0.05,
        "--alpha",
        help="False-alarm rate of the test of a rise after the minimum (per run).",
    ),
    keep_no_onset: bool = typer.Option(
        False, "--keep-no-onset", help="Fit runs with no onset detected too, at their minimum."
    ),
    ci: float = typer.Option(
        0.95, "--ci", help="Level of every interval (per run and of the fits)."
    ),
    bootstrap: int = typer.Option(
        None, "--bootstrap", help="Refit the models on N resamples of the runs (N ≥ 100)."
    ),
    resample: str = typer.Option(
        "cases",
        "--resample",
        help="cases: draw runs from all runs (sizes × seeds); within-size: from each size's runs.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of every resampling."),
    predict: str = typer.Option(
        None, "--predict", help="Extrapolate the onset to these sizes, e.g. 1e9,7B."
    ),
    task_tokens: str = typer.Option(
        None,
        "--task-tokens",
        help="Tokens per task for predictions (default: from the probes, else 5B).",
    ),
    suggest_dense: int = typer.Option(
        None,
        "--suggest-dense",
        help="Print per run the cycles within K of its minimum, for plc plan --dense-cycles.",
    ),
    out: Path = typer.Option(None, "--out", help="Write the per-run onset table here (Parquet)."),
    by: str = typer.Option(
        None,
        "--by",
        help="method: fit each method's runs apart (plc plan --mitigation) and compare onsets.",
    ),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Onset of plasticity loss per run, with intervals, and its scaling law: the fits of Table V."""
    from plc.onset import fit_onset, parse_models, parse_numbers, parse_probe_after
    from plc.plan import probe_after_of

    res = fit_onset(
        inputs,
        models=parse_models(model),
        normalize=normalize,
        probe_after=probe_after_of(inputs)
        if probe_after is None
        else parse_probe_after(probe_after),
        window=window,
        predict=parse_numbers(predict, "--predict"),
        task_tokens=(parse_numbers(task_tokens, "--task-tokens") or [None])[0],
        out=out,
        force=force,
        auc_from=auc_from,
        ci=ci,
        alpha=alpha,
        keep_no_onset=keep_no_onset,
        bootstrap=bootstrap,
        resample=resample,
        seed=seed,
        suggest=suggest_dense,
        by=by,
    )
    if as_json:
        emit_json(res.to_dict())
        return
    _print_onsets(res)


def _tasks(x: float) -> str:
    return f"{x:,.1f}" if abs(x) < 1e6 else f"{x:.3g}"


def _interval(lo: float | None, hi: float | None, fmt: str = "g") -> str:
    return "" if lo is None or hi is None else f"[{lo:{fmt}}, {hi:{fmt}}]"


def _print_onsets(res) -> None:
    """fit-onset's tables: runs with their verdicts, pooled sizes, fits, predictions, dense probing."""
    from plc.onset import view

    runs = Table(title="Onset of plasticity loss per run")
    for c in view.run_columns(res):
        runs.add_column(c.name, justify="right" if c.numeric else "left")
    for r, cells in zip(res.runs, view.run_rows(res), strict=True):
        runs.add_row(*cells, style=None if r.detected else "dim")
    console.print(runs)
    for r in res.runs:
        if r.p_value is not None or not r.detected:
            console.print(view.verdict(r))
    if any(r.noise_sd is not None for r in res.runs):
        console.print(view.method_text(res))
    if res.sizes:
        headers, rows = view.size_columns(res)
        sizes = Table(title="Onset per size, pooled over its seeds")
        for h in headers:
            sizes.add_column(h, justify="left" if h in ("size", "method") else "right")
        for row in rows:
            sizes.add_row(*row)
        console.print(sizes)
        console.print(view.POOLED)
    if res.excluded:
        console.print(
            f"The fits leave out {len(res.excluded)} run(s) with no onset detected: "
            f"{', '.join(res.excluded)} (--keep-no-onset fits them at their minimum)."
        )
    if res.fits_skipped:
        console.print(f"[yellow]No fit:[/yellow] {res.fits_skipped}")
    if res.fits:
        _print_fits(res, sum(r.fitted for r in res.runs), res)
    for g in (g for g in res.groups if g.fits or g.fits_skipped):  # none with --model none
        console.rule(f"[bold]method {g.method}[/bold]")
        if g.fits_skipped:
            console.print(f"[yellow]No fit for {g.method}:[/yellow] {g.fits_skipped}")
        if g.fits:
            _print_fits(g, len(g.runs), res)
    if res.by:
        _print_method_comparison(res)
    if res.dense:
        dense = Table(title="Cycles to probe densely (App. B's second stage)")
        for col in ("run", "size", "minimum (task)", "cycle", "dense cycles"):
            dense.add_column(col, justify="left" if col in ("run", "size") else "right")
        for d in res.dense:
            dense.add_row(
                d.run_id,
                d.size,
                str(d.minimum_task),
                str(d.cycle),
                f"{d.first_cycle}-{d.last_cycle}",
            )
        console.print(dense)
        console.print(f"all runs: plc plan … --dense-cycles [bold]{res.dense_cycles}[/bold]")
    if res.out:
        console.print(f"wrote [bold]{res.out}[/bold]")


def _print_method_comparison(res) -> None:
    """Does a method delay the onset? Each size's onsets side by side, one column per method."""
    from plc.onset.view import onset_cell

    methods = res.methods
    table = Table(title=f"Onset per size and method (task, {res.ci:.0%} interval)")
    table.add_column("size")
    for m in methods:
        table.add_column(m, justify="right")
    sizes = sorted({r.n_params for r in res.runs})
    for i, n in enumerate(sizes):
        at = [r for r in res.runs if r.n_params == n]
        cells = []
        for m in methods:
            mine = [r for r in at if r.method == m]
            several = len(mine) > 1
            cells.append("\n".join(f"{r.run_id}: " * several + onset_cell(r) for r in mine) or "–")
        table.add_row(at[0].size, *cells, end_section=i == len(sizes) - 1)
    groups = {g.method: g for g in res.groups}
    if any(g.law for g in res.groups):
        table.add_row("log-log law", *(groups[m].law or "no fit" for m in methods))
    if any(g.exponent for g in res.groups):
        table.add_row("log-log exponent", *(groups[m].exponent or "" for m in methods))
    console.print(table)


def _print_fits(group, points: int, res) -> None:
    """One set of fits (all runs, or one method's) with its intervals and predictions."""
    from plc.onset import format_count

    boot = group.bootstrap
    fits = Table(title=f"Fits of the onset T (tasks) to model size P ({points} points)")
    columns = ["model", "formula", "coef", "value", "STE"]
    columns += [f"{boot.ci:.0%} interval"] if boot else []
    columns += ["R²", "RMSE in-sample", "RMSE leave-one-out"]
    for col in columns:
        fits.add_column(col, justify="left" if col in ("model", "formula", "coef") else "right")
    for f in group.fits:
        a_ci = [_interval(*(f.a_ci or (None, None)), ".4g")] if boot else []
        b_ci = [_interval(*(f.b_ci or (None, None)), ".4g")] if boot else []
        fits.add_row(
            f.model,
            f.formula,
            "a",
            f"{f.a:.6g}",
            f"{f.a_se:.5g}",
            *a_ci,
            f"{f.r2:.4f}",
            f"{f.rmse:.3f}",
            f"{f.loo_rmse:.3f}",
        )
        fits.add_row(
            "", "", "b", f"{f.b:.6g}", f"{f.b_se:.5g}", *b_ci, "", "", "", end_section=True
        )
    console.print(fits)
    for f in group.fits:
        console.print(
            f"{f.model} law: [bold]{f.law}[/bold]" + (" (eq. 2)" if f.model == "loglog" else "")
        )
    if boot:
        if group.exponent:
            console.print(f"log-log exponent: [bold]{group.exponent}[/bold]")
        unfit = boot.resamples - boot.used
        failed = ", ".join(f"{m} {n}" for m, n in boot.failed.items() if n)
        console.print(
            f"Intervals of the fits: {boot.ci:.0%} percentile intervals over {boot.resamples:,} "
            f"resamples of the runs ({boot.resample}, seed {boot.seed}), each run's onset drawn "
            "from its distribution"
            + (f"; {unfit} resamples held a single size and were not fitted" if unfit else "")
            + (f"; fits that failed: {failed}" if failed else "")
            + "."
        )
    if group.predictions:
        pred = Table(
            title=f"Predicted onset ({format_count(res.task_tokens)} tokens per task: {res.task_tokens_source})"
        )
        columns = ["model", "n_params", "onset (tasks)"]
        columns += [f"{boot.ci:.0%} interval"] if boot else []
        columns += ["onset (tokens)"]
        columns += [f"{boot.ci:.0%} interval (tokens)"] if boot else []
        for col in columns:
            pred.add_column(col, justify="left" if col == "model" else "right")
        for pr in group.predictions:
            cells = [
                pr.model,
                format_count(pr.n_params),
                _tasks(pr.onset_tasks),
            ]
            if boot:
                lo, hi = pr.onset_tasks_ci or (None, None)
                cells.append("" if lo is None else f"[{_tasks(lo)}, {_tasks(hi)}]")
            cells.append(format_count(pr.onset_tokens))
            if boot:
                lo, hi = pr.onset_tokens_ci or (None, None)
                cells.append("" if lo is None else f"[{format_count(lo)}, {format_count(hi)}]")
            pred.add_row(*cells)
        console.print(pred)


@app.command("simulate-onset")
def simulate_onset_cmd(
    reps: int = typer.Option(100, "--reps", help="Studies per case."),
    seed: int = typer.Option(0, "--seed", help="Seed of the simulation."),
    cycles: int = typer.Option(8, "--cycles", help="Cycles of probes after zh, de and ru."),
    alpha: float = typer.Option(0.05, "--alpha", help="False-alarm rate of the test."),
    ci: float = typer.Option(0.95, "--ci", help="Level of the onset's interval."),
    as_json: bool = JsonOpt,
) -> None:
    """Calibrate fit-onset's test and interval on synthetic studies with a known onset."""
    from plc.onset.calibrate import calibrate
    from plc.onset.detect import check_alpha

    check_alpha(alpha)
    res = calibrate(reps=reps, seed=seed, cycles=cycles, alpha=alpha, ci=ci)
    if as_json:
        emit_json(res.to_dict())
        return
    level = f"{ci:.0%}"
    table = Table(
        title=f"fit-onset on synthetic studies ({reps} per case, {cycles} cycles, seed {seed})"
    )
    columns = ["trend", "noise", "offsets", "seeds", "runs", f"onset detected (α = {alpha:g})"]
    columns += [f"{level} coverage", "median width (tasks)", "pooled coverage / width"]
    for c in columns:
        table.add_column(c, justify="left" if c in ("trend", "noise") else "right")
    for r in res.rows:
        c = r.case
        table.add_row(
            c.name,
            "white" if c.rho == 0 else f"AR({c.rho:g})",
            "+3/−2/0 %" if c.offsets else "none",
            str(c.seeds),
            str(r.runs),
            f"{r.detected:.0%} ± {r.detected_se:.0%}",
            "" if r.coverage is None else f"{r.coverage:.0%} ± {r.coverage_se:.0%}",
            "" if r.width is None else f"{r.width:.1f} ± {r.width_se:.1f}",
            "" if r.pooled_coverage is None else f"{r.pooled_coverage:.0%} / {r.pooled_width:.1f}",
        )
    console.print(table)
    console.print(
        "Onset detected: the false-alarm rate where the trend is flat, the power otherwise. Noise "
        "SD 1 %; an onset's rise is 10 % to the last probe. ± Monte-Carlo standard errors."
    )


@app.command("fit-lr")
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
    many = any(sum(g.d_model == d for g in res.grid) > 1 for d in grid_sizes)
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


@app.command("plot")
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
        None, "--probe-after", help=ProbeAfterHelp + " Default: all for auc, zh,de,ru otherwise."
    ),
    window: int = typer.Option(3, "--window", help="Centred moving-average window for the onset."),
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

    res = plot(
        kind,
        inputs,
        out,
        x=x,
        normalize=normalize,
        probe_after="default" if probe_after is None else parse_probe_after(probe_after),
        window=window,
        models=parse_models(model),
        layer=layer,
        by=by,
        force=force,
    )
    if as_json:
        emit_json(res)
        return
    for note in res.notes:
        err_console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    console.print(f"wrote [bold]{res.path}[/bold] ({res.kind}, {len(res.runs)} runs)")


@app.command("transfer-table")
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


@app.command("status")
def status_cmd(
    directory: Path = typer.Argument(Path("."), help="The study's folder (a plan's or demo's)."),
    stale_minutes: float = typer.Option(
        30.0, "--stale-minutes", help="In-progress files older than this are stale (job died)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Where a study stands, from its files alone: one row per run, stale jobs, time left."""
    from plc.status import format_duration, run_rows, status

    res = status(directory, stale_minutes=stale_minutes)
    if as_json:
        emit_json(res)
        return
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


@app.command("report")
def report_cmd(
    directory: Path = typer.Argument(..., help="The study's folder (a plan's or demo's)."),
    out: Path = typer.Option(..., "--out", "-o", help="The HTML page to write."),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """A study on one self-contained HTML page: onsets, fits, figures, correlates, provenance."""
    from plc.report import report

    res = report(directory, out, force=force)
    if as_json:
        emit_json(res)
        return
    for note in res.notes:
        err_console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    console.print(
        f"wrote [bold]{res.path}[/bold] ({res.bytes / 1e6:.1f} MB): {res.runs} runs, "
        f"{len(res.figures)} figures, {len(res.tables)} tables"
    )


metrics_app = typer.Typer(help="Metric files: convert them for other tools.", no_args_is_help=True)
app.add_typer(metrics_app, name="metrics")


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


# -------------------------------------------------------------------------------- protocol


@app.command()
@plan_options
def plan(
    problem: str = typer.Argument(
        ..., help="continual, stationary, control (Markov chains), transfer (Table III) or lr-grid."
    ),
    fmt: str = typer.Option(
        "make", "--format", help="make (a Makefile) or snakemake (a Snakefile, for Slurm too)."
    ),
    output: Path = typer.Option(
        None, "--output", "-o", help="Write the plan file here, and plan.json beside it."
    ),
    force: bool = ForceOpt,
    *,
    options,
) -> None:
    """Write a protocol as a Makefile (`make -j2` runs it) or a Snakefile (`snakemake -c2`, or
    Slurm); a rerun finishes what is missing."""
    from plc.plan import build_plan, render, write_plan

    the_plan = build_plan(problem, options)
    if output is None:
        sys.stdout.write(render(the_plan, fmt))
        return
    path, data = write_plan(the_plan, output, fmt, force=force)
    err_console.print(
        f"wrote [bold]{path}[/bold] and {data.name}: {len(the_plan.jobs)} jobs, "
        f"{the_plan.n_tasks} tasks"
    )


@app.command()
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
            execute=run_argv,
            on_start=on_start,
            on_done=on_done,
        )
    if as_json:
        emit_json(res)
        return
    from plc.onset import view

    table = Table(title=f"Onset of plasticity loss ({res.preset} preset, {res.cycles} cycles)")
    for col in ("size", "non-emb params", "probes", "onset (task)", "onset (tokens)"):
        table.add_column(col, justify="left" if col == "size" else "right")
    for r in res.onsets:
        table.add_row(
            str(r["size"]),
            f"{r['n_params']:,}",
            str(r.get("n_probes") or ""),
            view.onset_cell(r),
            f"{r['onset_tokens']:,}" if r.get("onset_tokens") else "",
        )
    console.print(table)
    for r in res.onsets:
        console.print(view.verdict(r))
    console.print(f"log-log law: [bold]{res.law}[/bold]")
    for r in (res.control or {}).get("runs", []):
        console.print(
            f"positive control ({r['size']}, Markov-chain tasks): probe AUC at task "
            f"{r['last_task']} {r['rise_pct']:+.1f} % vs the first probe "
            f"({r['rise_pct'] / r['noise_sd_pct']:.1f} noise SDs of {r['noise_sd_pct']:.1f} %); "
            f"[bold]{view.verdict(r)}[/bold]"
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


if __name__ == "__main__":
    main()
