"""`lighthead extract`: run every feature job a dataset's heads need into its store.

`run_extract` loads the dataset's records (saving them, and the dataset name, into the store
as JSON artifacts "records" and "dataset"), runs each feature job into its own feature set,
and prints a summary with every skipped input and its reason. Jobs are resumable: a rerun
skips the ids a feature set already holds.

The helpers job modules read their settings with are in `features/options.py`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

from lighthead.pipelines.console import console as make_console
from lighthead.pipelines.features import FEATURES, ExtractOptions, RunSummary, load_all
from lighthead.pipelines.features.options import random_weights

# What each dataset's heads read (their README rows): retrieval heads want 36 regions, BERT tokens,
# GRU word ids, ResNet-152 and thumbnails (mFSR); ITM wants 100 regions and RoBERTa pairs;
# ITIN wants regions, BERT tokens and the ResNet-18 context.
DEFAULT_FEATURES: dict[str, list[str]] = {
    "coco": ["regions36", "bert", "words", "resnet152", "thumbs"],
    "f30k": ["regions36", "bert", "words", "resnet152", "thumbs"],
    "twitter15": ["regions100", "roberta"],
    "twitter17": ["regions100", "roberta"],
    "itm": ["regions100", "roberta"],
    "mvsa-single": ["regions36", "bert", "resnet18"],
    "mvsa-multiple": ["regions36", "bert", "resnet18"],
    "demo": ["given-boxes", "regions36", "minilm", "words", "resnet18", "thumbs"],
    # any folder of images: the retrieval heads' jobs; the text jobs only when captions.jsonl gives captions
    "images": ["regions36", "bert", "words", "resnet152", "thumbs"],
}
# Job settings a dataset starts from (the user's `-o KEY=VALUE` win). The demo's 192px images
# and random CNNs need no full-size detector: the slim preset runs at tens of images/s on a CPU,
# and MiniLM keeps its real bundled weights even under --random-weights.
DATASET_JOB_OPTIONS: dict[str, dict[str, Any]] = {
    "demo": {"detector": "slim", "minilm.random_weights": False},
}
# MVSA's inputs as ITIN's released Demo.py prepares them: the post's bytes read as ASCII (others
# dropped), [CLS] text [SEP] cut to its first 100 BERT tokens, the image as PIL's convert("RGB").
ITIN_RELEASE = {"bert.ascii_only": True, "bert.max_length": 100, "bert.truncate": "head", "resnet18.decode": "plain"}
DATASET_JOB_OPTIONS.update({"mvsa-single": ITIN_RELEASE, "mvsa-multiple": ITIN_RELEASE})


def default_features(dataset: str) -> list[str]:
    """The feature jobs `dataset`'s heads need."""
    try:
        return list(DEFAULT_FEATURES[dataset])
    except KeyError:
        raise KeyError(
            f"no default features for dataset {dataset!r}; pass --features (jobs: {', '.join(FEATURES.names())})"
        ) from None


def check_features(names: Sequence[str]) -> list[str]:
    """The job names, validated (an unknown one names the valid ones), duplicates removed."""
    load_all()
    out: list[str] = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name not in FEATURES:
            raise KeyError(f"unknown feature {name!r}; valid: {', '.join(FEATURES.names()) or '(none)'}")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError("no feature job selected")
    return out


def check_job_options(job_options: dict[str, Any]) -> dict[str, Any]:
    """`-o KEY=VALUE` settings, checked and typed before any job runs: KEY is `<job>.<key>` or a
    shared key some job reads (`FeatureJob.settings`); VALUE parses as that setting's type.

    An unknown key lists the valid ones; a value that does not parse names the key and the type
    it expects. Values that are not strings (set from Python) are checked the same way.
    """
    from lighthead.heads.build import parse_value

    load_all()
    jobs = {name: FEATURES.get(name) for name in FEATURES.names()}
    shared: dict[str, list[Any]] = {}  # bare key -> the settings it sets
    for job in jobs.values():
        for setting in job.settings.values():
            if setting.shared:
                shared.setdefault(setting.shared, []).append(setting)
    out: dict[str, Any] = {}
    for key, value in job_options.items():
        job_name, dot, name = key.partition(".")
        if dot:
            if job_name not in jobs:
                raise KeyError(f"-o {key}: no feature job {job_name!r}; jobs: {', '.join(jobs)}")
            if name not in jobs[job_name].settings:
                raise KeyError(
                    f"unknown -o key {key!r}; {job_name} reads: "
                    f"{', '.join(sorted(jobs[job_name].settings)) or '(nothing)'}"
                )
            settings = [jobs[job_name].settings[name]]
        elif key in shared:
            settings = shared[key]
        else:
            raise KeyError(
                f"unknown -o key {key!r}; valid: {', '.join(sorted(shared))}, or JOB.KEY for one job "
                f"({_settings_by_job(jobs)})"
            )
        text = value if isinstance(value, str) else "none" if value is None else str(value)
        for setting in settings:
            value = parse_value(text, setting.type, f"-o {key}")
            if setting.choices and value not in setting.choices:
                raise ValueError(f"-o {key}: expected one of {', '.join(setting.choices)}, got {text!r}")
        out[key] = value
    return out


def _settings_by_job(jobs: dict[str, Any]) -> str:
    """ "a/b: k1, k2; c: k3": each job's keys, jobs with the same keys together."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, job in jobs.items():
        if job.settings:
            groups.setdefault(tuple(sorted(job.settings)), []).append(name)
    return "; ".join(f"{'/'.join(names)}: {', '.join(keys)}" for keys, names in groups.items())


def random_weights_banner(console: Console, flag: bool = True) -> None:
    """The warning about untrained models: about the `--random-weights` flag of this command, or
    (flag False) about the stored feature sets the summary marks RANDOM."""
    if flag:
        text = (
            "WARNING: --random-weights: every model runs UNTRAINED; the features are for tests and "
            "demos only (recorded in the store)"
        )
    else:
        text = (
            "WARNING: the feature sets marked RANDOM hold features of UNTRAINED models (extracted with "
            "--random-weights): for tests and demos only"
        )
    console.print(f"[bold red]{text}[/]")


def stored_random_weights(store: Any, name: str, default: bool = False) -> bool:
    """Whether feature set `name` holds features of random weights, as its attributes record
    (a rerun without `--random-weights` on a random set still reports it); `default` if absent."""
    if name not in store:
        return default
    return bool(store[name].attrs.get("random_weights", default))


def summary_table(summaries: Sequence[RunSummary], title: str = "extraction summary") -> Table:
    table = Table(title=title)
    table.add_column("job", no_wrap=True)
    table.add_column("feature set", no_wrap=True)
    for col in ("new", "had", "skipped", "seconds"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("weights", no_wrap=True)
    for s in summaries:
        table.add_row(
            s.job,
            s.feature_set,
            str(s.written),
            str(s.already_done),
            str(len(s.skipped)),
            f"{s.seconds:.1f}",
            "[bold red]RANDOM[/]" if s.random_weights else "",
        )
    return table


def print_summary(
    summaries: Sequence[RunSummary], console: Console | None = None, max_skipped: int = 50, banner: bool = True
) -> None:
    """The summary table, then every skipped input with its reason (first `max_skipped` per job),
    then (banner) a warning when a feature set holds random-weight features."""
    console = console or make_console()
    console.print(summary_table(summaries))
    for s in summaries:
        if not s.skipped:
            continue
        console.print(f"[yellow]{s.job}: {len(s.skipped)} skipped input(s)[/]")
        for item_id, reason in s.skipped[:max_skipped]:
            console.print(f"  {item_id}: {reason}", markup=False, highlight=False)
        if len(s.skipped) > max_skipped:
            console.print(f"  ... and {len(s.skipped) - max_skipped} more (all listed in the store's extract_summary)")
    if banner and any(s.random_weights for s in summaries):
        random_weights_banner(console, flag=False)


def _summary_json(s: RunSummary) -> dict[str, Any]:
    return {
        "job": s.job,
        "feature_set": s.feature_set,
        "written": s.written,
        "already_done": s.already_done,
        "skipped": [list(x) for x in s.skipped],
        "seconds": round(s.seconds, 3),
        "random_weights": s.random_weights,
    }


def missing_images(records: Sequence[Any]) -> tuple[list[Any], list[tuple[str, str]]]:
    """The records whose image file exists, and (image id, reason) once per image that does not
    (a dataset read without its images: text jobs run, image jobs list what is missing)."""
    from lighthead.extract.images import file_problem

    exists: dict[str, bool] = {}
    missing: list[tuple[str, str]] = []
    for r in records:
        if r.image_id not in exists:
            problem = file_problem(r.image_path)
            exists[r.image_id] = problem is None
            if problem:
                missing.append((r.image_id, f"image {problem}: {r.image_path}"))
    return [r for r in records if exists[r.image_id]], missing


def _run_job(name: str, job: Any, records: list[Any], store: Any, options: ExtractOptions) -> RunSummary:
    """One job; an image job gets only the records whose image exists and lists the others as skipped
    (with no image at all it loads no model)."""
    if job.kind != "image":
        return job.run(records, store, options)
    present, missing = missing_images(records)
    done = set(store[job.feature_set].ids) if job.feature_set in store else set()
    missing = [(i, why) for i, why in missing if i not in done]
    if present:
        summary = job.run(present, store, options)
    else:
        summary = RunSummary(
            job=name,
            feature_set=job.feature_set,
            random_weights=random_weights(options, name),
            already_done=len(done & {r.image_id for r in records}),
        )
    summary.skipped = missing + list(summary.skipped)
    return summary


def run_extract(
    dataset: str,
    root: str | Path | None,
    store_path: str | Path,
    features: list[str] | None = None,
    options: ExtractOptions | None = None,
    console: Console | None = None,
) -> list[RunSummary]:
    """Extract `features` (default: what the dataset's heads need) of `dataset` into the store.

    Saves the records and the dataset name into the store, runs each job in turn, prints
    the summary (skipped inputs with reasons, random weights flagged) and stores it as the
    JSON artifact "extract_summary". A job that fails stops the run after printing what the
    jobs before it did.
    """
    from lighthead.pipelines.datasets import DATASETS, load_records
    from lighthead.store import StoreError, open_store

    DATASETS.get(dataset)  # an unknown name lists the valid ones, before anything else
    options = options or ExtractOptions()
    console = console or make_console()
    names = check_features(features if features else default_features(dataset))
    # Every job's settings are checked now: a bad value fails before the first job's work.
    options = dataclasses.replace(
        options, job_options=check_job_options({**DATASET_JOB_OPTIONS.get(dataset, {}), **options.job_options})
    )
    for name in names:
        check = FEATURES.get(name).check
        if check is not None:
            check(options)
    records = load_records(dataset, root)
    if not features and not any(r.texts for r in records):  # no captions (a folder of images): no text jobs
        names = [n for n in names if FEATURES.get(n).kind != "text"] or names
    # Jobs read which others run alongside (e.g. `--weights` goes to a ResNet job only when it runs alone).
    options = dataclasses.replace(options, job_options={**options.job_options, "_jobs": names})
    store = open_store(store_path, create=True)
    if store.has_json("dataset"):
        held = store.read_json("dataset").get("name")
        if held != dataset:
            raise StoreError(f"{store.path} holds dataset {held!r}, not {dataset!r}: use one store per dataset")
    for name in names:  # what a setting names in the store (e.g. boxes_from) exists, before any job runs
        check_store = FEATURES.get(name).check_store
        if check_store is not None:
            check_store(store, options)
    store.write_json("dataset", {"name": dataset, "root": str(Path(root).resolve()) if root else None})
    store.write_json("records", [r.to_json() for r in records])
    log = make_console(stderr=True)  # progress and warnings on stderr; the summary table on `console`
    if options.random_weights:
        random_weights_banner(log)  # once per command: the summary below repeats it only as its RANDOM column
    log.print(f"{dataset}: {len(records)} records -> {store.path}; jobs: {', '.join(names)}", markup=False)
    summaries: list[RunSummary] = []
    try:
        for name in names:
            job = FEATURES.get(name)
            start = time.perf_counter()
            summary = _run_job(name, job, records, store, options)
            summary.seconds = summary.seconds or time.perf_counter() - start
            # What the stored set holds, not what this command asked for.
            summary.random_weights = stored_random_weights(store, summary.feature_set, summary.random_weights)
            summaries.append(summary)
    finally:
        if summaries:
            runs = store.read_json("extract_summary") if store.has_json("extract_summary") else []
            store.write_json(
                "extract_summary", runs + [{"time": time.time(), "jobs": [_summary_json(s) for s in summaries]}]
            )
            print_summary(summaries, console, banner=not options.random_weights)
    return summaries
