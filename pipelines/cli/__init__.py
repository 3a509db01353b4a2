"""The `lighthead` command line: thin typer commands over the functions tests and sweeps call.

Each command group lives in its own module; heavy imports happen inside the commands so
`--help` is instant.
"""

from __future__ import annotations

import sys

import typer

from lighthead.pipelines.cli import demo_cmd, evaluate_cmd, extract_cmd, show_cmd, store_cmd, sweep_cmd, train_cmd
from lighthead.pipelines.cli.help import readable_help

readable_help()  # `--flag` instead of `--flag <bool>`, `--set KEY=VALUE` instead of `<list[str]>`

app = typer.Typer(
    help="Offline vision-language features (regions, tokens, global CNN) into a sharded HDF5 store, "
    "and light heads trained on them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("demo")(demo_cmd.demo)
app.command("extract")(extract_cmd.extract)
app.add_typer(train_cmd.app, name="train")
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("sweep")(sweep_cmd.sweep)
app.add_typer(store_cmd.app, name="store")
app.command("show")(show_cmd.show)


def main() -> None:
    """Console entry point: a known error becomes one line on stderr and a non-zero exit."""
    from lighthead.pipelines.cli.common import run_app

    sys.exit(run_app(app))
