"""Build a head from its registered name, the data's sizes and `key=value` overrides.

Sizes that come from the data (vocabulary size, region and token widths, label count, label
weights) are a `DataInfo`, measured by the task layer from the store; the head's
`from_config(cfg, data)` passes the ones it needs to its constructor. Hyper-parameters live in
the head's config dataclass: paper defaults, then the dataset's defaults (a config class may
declare `DATASET_DEFAULTS = {"coco": {"lr": 5e-4}}`), then the user's overrides.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, Sequence

from lighthead.heads.base import HEADS, DataInfo, Head

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null"}


def config_fields(config_class: type) -> dict[str, Any]:
    """Field name -> resolved type of a config dataclass."""
    hints = typing.get_type_hints(config_class)
    return {f.name: hints.get(f.name, str) for f in dataclasses.fields(config_class)}


def parse_value(text: Any, tp: Any, key: str = "value") -> Any:
    """Parse a command-line string into `tp` (bool, int, float, str, X | None, tuple/list of X).

    "none" or "null" give None for `X | None`; for `str | None` only "null" does.

    Non-string values are returned unchanged (sweeps pass typed values).
    """
    if not isinstance(text, str):
        return text
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        # "none" is a word a string field may mean (attn_norm=none: no normalisation), so there
        # only "null" leaves the field to its default (e.g. the recipe's value)
        nulls = {"null"} if inner == [str] else _NONE
        if text.strip().lower() in nulls and type(None) in args:
            return None
        return parse_value(text, inner[0], key) if len(inner) == 1 else text
    if origin in (tuple, list):
        item = args[0] if args else str
        items = [parse_value(p.strip(), item, key) for p in text.split(",") if p.strip()]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{key}: expected a boolean (true/false), got {text!r}")
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{key}: expected a number, got {text!r}") from None
    if tp is int:
        try:
            value = float(text)  # accepts "1e3"
        except ValueError:
            raise ValueError(f"{key}: expected an integer, got {text!r}") from None
        if not value.is_integer():
            raise ValueError(f"{key}: expected an integer, got {text!r}")
        return int(value)
    return text


def parse_overrides(items: list[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """`["lr=1e-4", "embed_size=256"]` -> {"lr": "1e-4", "embed_size": "256"} (dicts pass through)."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def make_config(
    config_class: type,
    overrides: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    what: str = "head",
    profiles: Sequence[str] = (),
) -> Any:
    """Instantiate `config_class` with dataset defaults and parsed overrides.

    `profiles` are extra DATASET_DEFAULTS keys applied before the dataset's own (e.g. "precomp"
    for a store imported from a SCAN precomp folder, which holds region features only).
    An unknown key raises KeyError naming the valid ones.
    """
    fields = config_fields(config_class)
    values: dict[str, Any] = {}
    defaults = getattr(config_class, "DATASET_DEFAULTS", {}) or {}
    for key in (*profiles, dataset):
        if key and key in defaults:
            values.update(defaults[key])
    for key, raw in (overrides or {}).items():
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise KeyError(f"unknown {what} config key {key!r}; valid keys: {valid}")
        values[key] = parse_value(raw, fields[key], key)
    return config_class(**values)


def fill_recipe(
    cfg: Any,
    recipes: Mapping[str, Mapping[str, Any]],
    what: str = "",
    choices: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Resolve a config's `recipe`: each field still None takes `recipes[cfg.recipe]`'s value,
    then each field named in `choices` must be one of its allowed values.

    `what` prefixes the errors (e.g. "itm"); an unknown recipe or choice raises ValueError.
    """
    prefix = f"{what}: " if what else ""
    if cfg.recipe not in recipes:
        raise ValueError(f"{prefix}recipe must be one of {', '.join(recipes)}, got {cfg.recipe!r}")
    for name, value in recipes[cfg.recipe].items():
        if getattr(cfg, name) is None:
            setattr(cfg, name, value)
    for name, allowed in (choices or {}).items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{prefix}{name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")


def head_class(name: str) -> type[Head]:
    import lighthead.heads  # noqa: F401  (importing the package registers every head)

    return HEADS.get(name)


def build_head(name: str, data: DataInfo | Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Head:
    """The head `name` with config = paper defaults + dataset defaults + `overrides`, built by
    its `from_config` for the data's sizes.

    data: a `DataInfo`, or its mapping (a task's `data_info()`, a run's data_info.json, e.g.
    {"dataset": "coco", "region_dim": 2048, "vocab_size": 10000}); an unknown key raises ValueError.
    """
    cls = head_class(name)
    data = DataInfo.of(data)
    cfg = make_config(cls.config_class, overrides, data.dataset, what=name)
    return cls.from_config(cfg, data)
