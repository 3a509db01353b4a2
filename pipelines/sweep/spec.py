"""What a sweep is: a head, the values to try per config key, and the trials they expand to.

A sweep comes from the command line (`--grid key=v1,v2`, `--set key=value`, `--random N`)
or from a sweep file (YAML or TOML):

    head: casc
    metric: rsum            # validation metric to rank trials by (default: the task's)
    epochs: 3
    random: 8               # optional: sample 8 trials instead of the full grid
    seed: 0
    grid:
      lambda1: [4, 9, 20]
      lr_local: {low: 1.0e-5, high: 1.0e-3, log: true}   # ranges need `random`
    set:                    # fixed overrides shared by every trial
      batch_size: 64

Override values travel as strings (what `lighthead.pipelines.training.loop.train` takes), so a trial's id is a
hash of exactly what the training function receives.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random as _random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

# Metric names where smaller is better; anything else is maximised.
_MINIMISED_SUFFIXES = ("loss", "kl", "error", "err", "nll", "perplexity")


def as_value(v: Any) -> str:
    """One override value as the string the training function parses."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return ",".join(as_value(x) for x in v)
    if v is None:
        return "none"
    return str(v)


@dataclass(frozen=True)
class Range:
    """A continuous or integer range to sample from (random search only)."""

    low: float  # inclusive lower bound
    high: float  # upper bound (inclusive for integers)
    log: bool = False  # sample uniformly in log space (learning rates)
    integer: bool = False  # round to an integer (layer counts, sizes)

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"range needs low < high, got {self.low}..{self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")

    def sample(self, rng: _random.Random) -> str:
        if self.log:
            x = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            x = rng.uniform(self.low, self.high)
        if self.integer:
            return str(min(int(self.high), max(int(self.low), round(x))))
        return f"{x:.4g}"  # short ids and readable tables; 4 digits is plenty for a search

    def describe(self) -> str:
        return f"{'log:' if self.log else ''}{self.low:g}..{self.high:g}"


Values = list | Range


def parse_range(text: str) -> Range | None:
    """`1e-5..1e-2`, `log:1e-5..1e-2` or `1..8` (integers) -> Range; None if not a range."""
    log = text.startswith("log:")
    body = text[4:] if log else text
    if ".." not in body:
        return None
    lo, _, hi = body.partition("..")
    try:
        low, high = float(lo), float(hi)
    except ValueError:
        raise ValueError(f"bad range {text!r}: expected low..high or log:low..high") from None
    integer = _is_int(lo) and _is_int(hi) and not log
    return Range(low, high, log=log, integer=integer)


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False


def parse_grid_arg(arg: str) -> tuple[str, Values]:
    """`key=v1,v2,v3` -> (key, [values]); `key=low..high` or `key=log:low..high` -> Range."""
    key, sep, rest = arg.partition("=")
    key = key.strip()
    if not sep or not key or not rest:
        raise ValueError(f"bad --grid {arg!r}: expected key=v1,v2 or key=low..high")
    rng = parse_range(rest.strip())
    if rng is not None:
        return key, rng
    values = [v.strip() for v in rest.split(",")]
    if any(v == "" for v in values):
        raise ValueError(f"bad --grid {arg!r}: empty value")
    return key, values


def parse_set_arg(arg: str) -> tuple[str, str]:
    """`key=value` -> (key, value)."""
    key, sep, value = arg.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"bad --set {arg!r}: expected key=value")
    return key.strip(), value.strip()


@dataclass(frozen=True)
class Trial:
    """One point of a sweep: the head and every override the training function receives."""

    head: str  # registered head name
    overrides: tuple[tuple[str, str], ...]  # (key, value) sorted by key: fixed + swept
    swept: tuple[str, ...] = ()  # which override keys vary across the sweep
    epochs: int | None = None  # None: the head's default
    dataset: str | None = None  # None: the dataset recorded in the store

    @property
    def id(self) -> str:
        """Stable across runs and machines: the same head and overrides give the same id."""
        key = {"head": self.head, "overrides": dict(self.overrides)}
        if self.epochs is not None:
            key["epochs"] = self.epochs
        if self.dataset is not None:
            key["dataset"] = self.dataset
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return f"{self.head}-{digest[:10]}"

    @property
    def params(self) -> dict[str, str]:
        """The swept values only (the columns of the summary table)."""
        o = dict(self.overrides)
        return {k: o[k] for k in self.swept}

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "head": self.head,
            "overrides": dict(self.overrides),
            "swept": list(self.swept),
            "epochs": self.epochs,
            "dataset": self.dataset,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Trial:
        return cls(
            head=obj["head"],
            overrides=tuple(sorted((str(k), str(v)) for k, v in obj["overrides"].items())),
            swept=tuple(obj.get("swept", ())),
            epochs=obj.get("epochs"),
            dataset=obj.get("dataset"),
        )


@dataclass
class SweepSpec:
    """A grid or random search over one head's config."""

    head: str  # registered head name
    grid: dict[str, Values] = field(default_factory=dict)  # key -> values to try (or a Range)
    fixed: dict[str, str] = field(default_factory=dict)  # overrides shared by every trial
    random: int | None = None  # sample this many trials instead of the full grid
    seed: int = 0  # random search seed (same seed, same trials, so reruns skip them)
    metric: str | None = None  # validation metric to rank by; None: rsum / macro_f1 / accuracy
    mode: str = "auto"  # "max", "min" or "auto" (minimise names like *loss, *kl)
    epochs: int | None = None  # epochs per trial; None: the head's default
    dataset: str | None = None  # None: the dataset recorded in the store

    def __post_init__(self) -> None:
        if not self.head:
            raise ValueError("a sweep needs a head")
        grid: dict[str, Values] = {}
        for k, v in self.grid.items():
            if isinstance(v, Range):
                grid[k] = v
            elif isinstance(v, Mapping):
                grid[k] = Range(
                    float(v["low"]),
                    float(v["high"]),
                    bool(v.get("log", False)),
                    bool(v.get("integer", False)),
                )
            else:
                vals = list(v) if isinstance(v, (list, tuple)) else [v]
                if not vals:
                    raise ValueError(f"grid key {k!r} has no values")
                grid[k] = [as_value(x) for x in vals]
        self.grid = grid
        self.fixed = {k: as_value(v) for k, v in self.fixed.items()}
        both = sorted(set(self.grid) & set(self.fixed))
        if both:
            raise ValueError(f"keys both swept and fixed: {', '.join(both)}")
        if self.random is not None and self.random < 1:
            raise ValueError(f"random must be >= 1, got {self.random}")
        ranged = [k for k, v in self.grid.items() if isinstance(v, Range)]
        if ranged and self.random is None:
            raise ValueError(f"ranges ({', '.join(ranged)}) need a random search (--random N)")
        if self.mode not in ("auto", "max", "min"):
            raise ValueError(f"mode must be auto, max or min, got {self.mode!r}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")

    @property
    def keys(self) -> list[str]:
        """Every override key the sweep sets (swept and fixed)."""
        return sorted(set(self.grid) | set(self.fixed))

    def maximise(self, metric: str) -> bool:
        if self.mode != "auto":
            return self.mode == "max"
        return not metric.lower().endswith(_MINIMISED_SUFFIXES)

    def trials(self) -> list[Trial]:
        """The trials in a stable order: the grid's product, or `random` seeded samples."""
        swept = tuple(self.grid)
        if self.random is None:
            points = [dict(zip(swept, combo)) for combo in itertools.product(*self.grid.values())]
        else:
            points = self._sample(swept)
        return [self._trial(p, swept) for p in points]

    def _sample(self, swept: tuple[str, ...]) -> list[dict[str, str]]:
        rng = _random.Random(self.seed)
        assert self.random is not None
        if all(isinstance(v, list) for v in self.grid.values()):
            # Finite grid: sample without replacement so no trial is drawn twice.
            combos = list(itertools.product(*self.grid.values()))
            picked = rng.sample(combos, min(self.random, len(combos)))
            return [dict(zip(swept, c)) for c in picked]
        points: list[dict[str, str]] = []
        seen: set[tuple[str, ...]] = set()
        for _ in range(self.random * 20):  # bounded: tiny integer ranges may repeat
            p = {k: (v.sample(rng) if isinstance(v, Range) else rng.choice(v)) for k, v in self.grid.items()}
            sig = tuple(p[k] for k in swept)
            if sig not in seen:
                seen.add(sig)
                points.append(p)
            if len(points) == self.random:
                break
        return points

    def _trial(self, point: Mapping[str, str], swept: tuple[str, ...]) -> Trial:
        overrides = {**self.fixed, **point}
        return Trial(self.head, tuple(sorted(overrides.items())), swept, self.epochs, self.dataset)

    def to_json(self) -> dict[str, Any]:
        obj = asdict(self)
        obj["grid"] = {k: (v.describe() if isinstance(v, Range) else v) for k, v in self.grid.items()}
        return obj


def from_args(
    head: str,
    grid: Iterable[str] = (),
    sets: Iterable[str] = (),
    **kwargs: Any,
) -> SweepSpec:
    """A SweepSpec from CLI strings (`key=v1,v2`, `key=value`); kwargs go to SweepSpec."""
    g: dict[str, Values] = {}
    for arg in grid:
        k, v = parse_grid_arg(arg)
        if k in g:
            raise ValueError(f"--grid {k} given twice")
        g[k] = v
    fixed = dict(parse_set_arg(a) for a in sets)
    return SweepSpec(head=head, grid=g, fixed=fixed, **kwargs)


_FILE_KEYS = {"head", "grid", "set", "random", "seed", "metric", "mode", "epochs", "dataset"}


def _parse(text: str, suffix: str) -> Any:
    """TOML or YAML text -> plain values; a syntax error raises ValueError(":<line>: <what>")
    (one line, for the caller to put after the file name)."""
    if suffix == ".toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f": not valid TOML ({e})") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f":{mark.line + 1}" if mark is not None else ""
        if isinstance(e, yaml.constructor.ConstructorError) and "tag" in str(e.problem):
            # `!!python/object/apply:...` and friends: refused by safe_load, said in one line
            raise ValueError(f"{where}: {e.problem}; a sweep file holds plain values only (no YAML tags)") from None
        what = "; ".join(x.strip() for x in (e.context, e.problem) if x)
        raise ValueError(f"{where}: not valid YAML ({what})") from None
    except yaml.YAMLError as e:  # without a position (e.g. a reader error)
        raise ValueError(f": not valid YAML ({' '.join(str(e).split())})") from None


def load_sweep_file(path: Path | str) -> SweepSpec:
    """Read a YAML (.yaml/.yml) or TOML (.toml) sweep file; unknown keys are an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file not found: {path}")
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ValueError(f"{path}: a sweep file ends in .yaml, .yml or .toml")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as UTF-8"
        ) from None
    try:
        obj = _parse(text, path.suffix)
    except RecursionError:
        raise ValueError(f"{path}: nested too deeply") from None
    except ValueError as e:
        raise ValueError(f"{path}{e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a mapping with head, grid, ...")
    unknown = sorted(set(obj) - _FILE_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(_FILE_KEYS))}")
    grid = obj.get("grid") or {}
    if not isinstance(grid, dict):
        raise ValueError(f"{path}: grid must map keys to lists of values")
    # A string value in a file may be a range ("log:1e-5..1e-2") or one value.
    grid = {k: (parse_range(v) or [v]) if isinstance(v, str) else v for k, v in grid.items()}
    try:
        return SweepSpec(
            head=obj.get("head") or "",
            grid=grid,
            fixed=obj.get("set") or {},
            random=obj.get("random"),
            seed=int(obj.get("seed", 0)),
            metric=obj.get("metric"),
            mode=obj.get("mode", "auto"),
            epochs=obj.get("epochs"),
            dataset=obj.get("dataset"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
