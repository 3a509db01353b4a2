"""What a feature job is given: the `lighthead extract` options, and the helpers every job reads them with.

- `ExtractOptions`: the flags shared by every job; `JobOption`: a `-o KEY=VALUE` setting a job declares;
- `job_option(options, job, key, default)`: `options.job_options["<job>.<key>"]`, else `["<key>"]`;
- `random_weights(options, job)`: `--random-weights`, or its per-job override;
- `job_precision(options, job, gpu)`: the resolved `precision` option (fp32, bf16, fp16), and
  `precision_attrs(store, name, precision)`: what the feature set records, refusing another one's;
- `progress_bar(description, total, enabled)`: items/s and ETA (a bar, or plain lines in a log); yields `advance(n)`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from lighthead.pipelines.console import progress

FEATURE_DTYPES = ("float16", "float32")  # what a feature field may be stored as


@dataclass
class ExtractOptions:
    """Options shared by every feature job (the `lighthead extract` flags)."""

    weights: Path | None = None  # checkpoint for the job's model; None = the job's default location
    random_weights: bool = False  # random model weights (tests, demo); recorded in the store
    batch_size: int = 8  # items per forward pass
    device: str = "cpu"  # "cpu" or "cuda[:i]"
    workers: int = 1  # processes (or GPUs) sharing the work, each writing its own shards
    loader_workers: int = 2  # DataLoader workers decoding images
    dtype: str = "float16"  # storage dtype of feature fields
    progress: bool = True  # show rich progress bars
    scheduler: str | None = None  # dask scheduler address to spread the work on, instead of local processes
    cluster: Any = None  # sweep.ClusterOptions: region jobs run on this dask cluster (SLURM/PBS jobs, a local one)
    job_options: dict[str, Any] = field(
        default_factory=dict
    )  # per-job settings, e.g. {"text_model": PATH, "resnet152.weights": PATH}

    def __post_init__(self) -> None:
        if self.dtype not in FEATURE_DTYPES:  # float64 doubles the store for digits no model gives; ints truncate
            raise ValueError(f"--dtype {self.dtype!r}: feature fields are stored as {' or '.join(FEATURE_DTYPES)}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.loader_workers < 0:
            raise ValueError(
                f"--loader-workers must be >= 0 (0 decodes in the main process), got {self.loader_workers}"
            )


@dataclass(frozen=True)
class JobOption:
    """A setting a job reads from `--job-option` (`-o`): as `<job>.<key>`, or for every job that
    reads it under its shared key. Checked before any job runs (`runner.check_job_options`)."""

    type: Any = str  # bool, int, float, str or `int | None`: what a `-o` string is parsed into
    shared: str | None = (
        None  # the bare key setting it for every job reading it ("text_layer"); None: `<job>.<key>` only
    )
    choices: tuple[str, ...] = ()  # the values a str setting may take (empty: any)


# `-o precision=`: lighthead.extract.precision.PRECISIONS, named here so that reading the settings
# does not import torch (`--help` stays instant).
PRECISION_OPTION = JobOption(str, shared="precision", choices=("auto", "fp32", "bf16", "fp16"))


def job_option(options: ExtractOptions, job: str, key: str, default: Any = None) -> Any:
    """A per-job setting: `job_options["<job>.<key>"]`, else `job_options["<key>"]`, else default."""
    opts = options.job_options or {}
    return opts.get(f"{job}.{key}", opts.get(key, default))


def random_weights(options: ExtractOptions, job: str) -> bool:
    """`--random-weights`, unless `--job-option <job>.random_weights=false` overrides it for one job
    (e.g. the demo keeps the real bundled MiniLM while the detector runs untrained)."""
    return bool(options.job_options.get(f"{job}.random_weights", options.random_weights))


def job_precision(options: ExtractOptions, job: str, gpu: str) -> str:
    """`-o <job>.precision=` / `-o precision=` (fp32, bf16, fp16, or auto: `gpu` on CUDA, fp32 on a
    CPU) resolved for `options.device` (`lighthead.extract.precision`)."""
    from lighthead.extract.precision import resolve

    return resolve(str(job_option(options, job, "precision", "auto")), options.device, gpu)


def precision_attrs(store: Any, name: str, precision: str) -> dict[str, str]:
    """{"precision": precision} for feature set `name`'s attrs. A set that holds another precision
    is refused (a CPU run computes fp32 features, a GPU run bf16 or fp16: one set must not mix
    them); a set written before precision was recorded resumes as it was (its precision is unknown)."""
    if name not in store:
        return {"precision": precision}
    held = store[name].attrs.get("precision")
    if held is None:
        return {}
    if held != precision:
        raise ValueError(
            f"{name}: the feature set holds {held} features and this run computes {precision} ones; "
            f"rerun with -o precision={held} (on a device that supports it) or write to another store"
        )
    return {"precision": precision}


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Progress of one extractor on stderr (a bar on a terminal, plain lines in a log);
    yields `advance(n)`. Disabled: a no-op."""
    with progress(description, total, enabled) as tracker:
        yield tracker.advance
