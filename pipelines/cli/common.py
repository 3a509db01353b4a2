"""Helpers shared by the CLI modules."""

from __future__ import annotations


import typer


class NotBuiltError(Exception):
    """A command of the SPEC's CLI that is not implemented yet."""


def not_built(command: str) -> typer.Exit:
    """Print that `command` is not built yet and return the Exit to raise."""
    typer.echo(f"error: `lighthead {command}` is not built yet", err=True)
    return typer.Exit(2)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def known_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input (not a bug): reported in one line, no traceback."""
    errors: list[type[BaseException]] = [FileNotFoundError, KeyError, ValueError]
    try:
        from lighthead.store import StoreError

        errors.append(StoreError)
    except ImportError:
        pass
    from lighthead.pipelines.datasets.base import DatasetError

    errors.append(DatasetError)
    return tuple(errors)


def run_app(app: typer.Typer) -> int:
    """Run the typer app; known errors become `error: ...` on stderr and exit code 1."""
    try:
        rv = app(standalone_mode=False)  # click returns (not raises) the exit code here
    except typer.Exit as e:
        return e.exit_code
    except SystemExit as e:  # click's own usage errors
        return int(e.code or 0)
    except known_errors() as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        typer.echo(f"error: {msg}", err=True)
        return 1
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except typer.TyperException as e:  # usage errors, bad parameters (typer's click exceptions)
        if hasattr(e, "show"):
            e.show()
        else:
            typer.echo(f"error: {e}", err=True)
        return int(getattr(e, "exit_code", 2))
    return rv if isinstance(rv, int) else 0
