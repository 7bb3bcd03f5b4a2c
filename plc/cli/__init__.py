"""The `plc` command line: thin typer commands over the library.

Each command parses flags, calls one library function and renders its result (rich on a terminal,
one JSON object with --json). `common` holds what the commands share (the typer app, the common
options, --json, errors, the generator of options from a dataclass); each other module is one
group of commands and registers them on import. Heavy imports (torch, polars, zarr) happen inside
the commands so that `plc --help` and the light commands start in well under a second.
"""

# Imported in the order of the protocol, which is the order of `plc --help`.
# isort: off
from plc.cli import data, models, train, measure, onset, analysis, study  # noqa: F401

# isort: on
from plc.cli.common import app, main, run_argv

__all__ = ["app", "main", "run_argv"]
