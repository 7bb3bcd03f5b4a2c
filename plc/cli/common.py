"""What every `plc` command shares: the typer app, its consoles and common options, --json
output, the generator of options from a dataclass, and the entry point that turns bad input, what
the system refuses and bugs into one line each (plc.errors). The commands themselves live in the sibling modules."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
from collections.abc import Callable
from inspect import Parameter, signature
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from plc import __version__
from plc.errors import EXIT_BAD_INPUT, EXIT_BUG, EXIT_DIVERGED, PlcError, refusal

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


def stop_progress(progress) -> None:
    """Stop a progress display if it was started (a never-started one would print a blank line)."""
    if progress.live.is_started:
        progress.stop()


ProbeAfterHelp = (
    "Keep only probes taken after these languages (App. B: zh,de,ru); all keeps every one."
)
NormalizeHelp = (
    "first: eq. 1, % change vs the first end-of-cycle (ru) probe; alone: AUC / AUC of the "
    "from-scratch probe."
)


class StepBar:
    """A progress bar of training steps for train-task and probe.

    Drawn at the first step, so bad input fails with its one line alone; a diverged loss ends the
    command with its message and exit status 3 (plc.errors.EXIT_DIVERGED: no checkpoint written,
    the train metric file records the divergence), SIGTERM or SIGUSR1 with its message and 128 +
    the signal (resumable state was saved).
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

    def __enter__(self) -> StepBar:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        from plc.train import TrainingDiverged, TrainingInterrupted

        stop_progress(self.progress)
        if exc_type is not None and issubclass(exc_type, TrainingDiverged):
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_DIVERGED) from None
        if exc_type is not None and issubclass(exc_type, TrainingInterrupted):
            err_console.print(f"[yellow]stopped:[/yellow] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_status) from None


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
    """Entry point: bad input and what the system refuses (a full disk, a read-only folder, …)
    become one red line on stderr and exit status 2; a bug one line naming the file that holds
    its traceback, exit status 1. `--debug` anywhere shows the traceback instead."""
    usage_errors, aborts = _click_exceptions()
    argv = sys.argv[1:]
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        code = app(args=argv, prog_name="plc", standalone_mode=False)
    except PlcError as e:
        if debug:
            raise
        _fail(str(e), EXIT_BAD_INPUT)
    except usage_errors as e:
        e.show()
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, *aborts):
        err_console.print("[red]interrupted[/red]")
        sys.exit(130)
    except Exception as e:
        if debug:
            raise
        if isinstance(e, BrokenPipeError):  # `plc … | head` closed the pipe: nothing to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_BUG)
        line = refusal(e)
        if line is not None:
            _fail(line, EXIT_BAD_INPUT)
        _fail(_bug_line(e, ["plc", *argv]), EXIT_BUG)
    if code == 130:  # typer returns, rather than raises, on Ctrl-C outside standalone mode
        err_console.print("[red]interrupted[/red]")
    sys.exit(code if isinstance(code, int) else 0)


def _fail(line: str, status: int) -> NoReturn:
    from rich.markup import escape

    err_console.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    sys.exit(status)


def _bug_line(exc: BaseException, argv: list[str]) -> str:
    """One line for a bug, naming the file its traceback went to (where one could be written)."""
    import platform
    import tempfile
    import traceback

    what = type(exc).__name__
    detail = str(exc).strip().splitlines()
    if detail:
        what += f": {detail[0][:200]}"
    try:
        fd, log = tempfile.mkstemp(prefix="plc-bug-", suffix=".txt", text=True)
        with os.fdopen(fd, "w") as f:
            f.write(f"{' '.join(argv)}\nplc {__version__}, Python {platform.python_version()}\n\n")
            f.write("".join(traceback.format_exception(exc)))
        where = f"the traceback is in {log}, and --debug shows it"
    except OSError:
        where = "--debug shows the traceback"
    return f"bug in plc ({what}); {where}; please report it"
