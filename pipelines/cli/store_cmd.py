"""`lighthead store ...` (placeholder until the store lands)."""

import typer

app = typer.Typer(help="Inspect, verify, import and export feature stores.", no_args_is_help=True)
