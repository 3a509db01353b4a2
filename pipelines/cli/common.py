"""Helpers shared by the CLI modules."""

from __future__ import annotations

import errno
import os
import signal
import traceback
import warnings

import typer


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
    from lighthead.pipelines.cluster.batch import BatchError  # batch jobs refused, or all ended
    from lighthead.pipelines.datasets.base import DatasetError

    errors += [DatasetError, BatchError]
    for module, name in (
        ("lighthead.extract.regions.checkpoints", "CheckpointError"),
        ("lighthead.extract.images", "ImageReadError"),
        ("lighthead.extract.per_image", "DeviceError"),
    ):
        try:  # imported only now, after an error, so `--help` stays instant
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except ImportError:
            pass
    return tuple(errors)


DEBUG_ENV = "LIGHTHEAD_DEBUG"  # =1: a failing command prints the traceback too
INTERRUPTED = (
    "interrupted: everything committed so far is kept; rerun the same command to resume (`train heads` with --resume)"
)

# errno -> what to say after the file name; the rest use the system's own text.
_ERRNO_HINTS = {
    errno.ENOSPC: "no space left on device; free space and rerun the same command (committed work is kept)",
    errno.EDQUOT: "disk quota exceeded; free space and rerun the same command (committed work is kept)",
    errno.EFBIG: "file too large for this file system (or the process's file-size limit)",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a file is where a folder is expected",
    errno.EISDIR: "a folder is where a file is expected",
    errno.EEXIST: "already exists (a file where a folder is expected?)",
}


def describe_error(e: BaseException) -> str:
    """The text after `error: `: the file or id first, then what happened."""
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    if isinstance(e, UnicodeDecodeError):
        return (
            f"input is not UTF-8 text ({e.reason} at byte {e.start}); save the file as UTF-8 "
            f"(set {DEBUG_ENV}=1 to see where it was read)"
        )
    if isinstance(e, OSError) and e.errno is not None and (e.filename is not None or e.errno in _ERRNO_HINTS):
        what = _ERRNO_HINTS.get(e.errno) or e.strerror or str(e)
        names = [str(n) for n in (e.filename, e.filename2) if n is not None]
        return f"{' -> '.join(names)}: {what}" if names else what
    if isinstance(e, known_errors()):
        return str(e)
    if isinstance(e, OSError):  # h5py, zipfile and friends: their text names what they can
        return str(e) or type(e).__name__
    # Anything else is a bug, or bad input we failed to recognise: still one line.
    return f"{type(e).__name__}: {e} (set {DEBUG_ENV}=1 for the traceback)"


def _one_line_error(e: BaseException) -> int:
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exception(type(e), e, e.__traceback__)
    typer.echo(f"error: {describe_error(e)}", err=True)
    return 1


def run_app(app: typer.Typer, args: list[str] | None = None) -> int:
    """Run the typer app (on `args`, default sys.argv); returns the exit code.

    Every failure becomes one line `error: <file or id>: <what happened>` on stderr and exit
    code 1 (the traceback too with LIGHTHEAD_DEBUG=1); a usage error (missing argument, unknown
    option, bad value) one line `error: <what>; see <command> --help` and exit code 2; Ctrl-C
    one line saying how to resume (130).
    """
    interrupted: list[bool] = []

    def on_sigint(signum, frame):  # noqa: ANN001
        interrupted.append(True)  # typer turns KeyboardInterrupt into a silent exit code 130
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            code = _run(app, args, interrupted)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if interrupted and code == 130:
        typer.echo(INTERRUPTED, err=True)
    return code


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """`warning: <message>` on stderr, without the source line Python shows by default."""
    typer.echo(f"warning: {message}", err=True)


def usage_error_line(e: BaseException) -> str:
    """click's `Usage: ... Error: <what>` box as one line: `error: <what>; see <command> --help`."""
    message = e.format_message() if hasattr(e, "format_message") else str(e)
    text = " ".join(line.strip() for line in message.splitlines() if line.strip()).rstrip(".")
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]  # "Missing option '--store'" -> "missing option '--store'"
    ctx = getattr(e, "ctx", None)
    hint = f"; see {ctx.command_path} --help" if ctx is not None and getattr(ctx, "command_path", "") else ""
    return f"error: {text}{hint}"


def _usage_error(e: typer.TyperException) -> int:
    if type(e).__name__ == "NoArgsIsHelpError":  # a bare `lighthead` or `lighthead train`: the help, as before
        e.show()
    else:
        typer.echo(usage_error_line(e), err=True)
    return int(getattr(e, "exit_code", 2))


def _run(app: typer.Typer, args: list[str] | None, interrupted: list[bool]) -> int:
    try:
        rv = app(args=args, standalone_mode=False)  # click returns (not raises) the exit code here
    except typer.Exit as e:
        return e.exit_code
    except SystemExit as e:  # click's own usage errors
        return int(e.code or 0)
    except (typer.Abort, KeyboardInterrupt):  # EOF on a prompt, or an interrupt outside the command
        interrupted.append(True)
        return 130
    except typer.TyperException as e:  # usage errors, bad parameters (typer's click exceptions)
        return _usage_error(e)
    except Exception as e:  # noqa: BLE001 - the one top-level handler
        if interrupted:  # Ctrl-C surfaced as another error (a DataLoader worker killed by it, ...)
            return 130
        return _one_line_error(e)
    return rv if isinstance(rv, int) else 0
