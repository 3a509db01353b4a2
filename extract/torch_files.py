"""Reading `.pth`/`.pt` weight files without running code, with one-line refusals.

`torch.load(weights_only=True)` refuses a file holding anything but tensors and plain
containers, which is what keeps a weights file from running code. Its refusal, though, spans
several lines and recommends reloading with `weights_only=False`: the one thing that would run
the file's code. `load_tensors` keeps only torch's reason (the class or opcode it refused),
drops every sentence of advice, and raises `TorchFileError` naming the file.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch


class TorchFileError(ValueError):
    """A `.pth`/`.pt` file that was refused or could not be read; the message is one line."""


# Sentences of torch's messages that explain its defaults or give advice (never to be shown:
# some tell the user to turn the safe loading off).
_ADVICE = re.compile(
    r"weights_only|weights only load failed|WeightsUnpickler error|safe_globals|allowlist|"
    r"you trust|trusted source|file an issue|documentation|pytorch\.org|In PyTorch \d",
    re.IGNORECASE,
)


def reason(exc: BaseException) -> str:
    """torch's reason for refusing or failing to read a file, as one line without its advice."""
    sentences = re.split(r"(?<=[.:])\s+|\n+", str(exc))
    kept = [s.strip().rstrip(":.").strip() for s in sentences if s.strip() and not _ADVICE.search(s)]
    return "; ".join([s for s in kept if s][:2])[:300] or type(exc).__name__


def load_tensors(path: str | Path) -> Any:
    """What `torch.load(path, map_location="cpu", weights_only=True)` returns; a refused,
    truncated or foreign file raises TorchFileError `<path>: <why>` (one line)."""
    path = Path(path)
    with warnings.catch_warnings():
        # torch's note that a protocol-4 pickle "might not be supported" speaks to torch's developers
        warnings.filterwarnings("ignore", message=r"Detected pickle protocol")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except pickle.UnpicklingError as exc:
            if not _looks_pickled(path):  # text, an image, ...: torch reports its first byte as an opcode
                raise TorchFileError(f"{path}: not a torch weights file (neither a zip archive nor a pickle)") from None
            raise TorchFileError(
                f"{path}: refused to load: it holds more than tensors and plain containers ({reason(exc)}); "
                "loading such a file could run code (is this file what you think it is?)"
            ) from None
        except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, a zip of something else
            raise TorchFileError(f"{path}: not a readable torch weights file ({reason(exc)})") from None


def _looks_pickled(path: Path) -> bool:
    """The file starts as torch's zip format or a protocol 2+ pickle does."""
    with open(path, "rb") as fh:
        return fh.read(2)[:2] in (b"PK", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
