"""Pipelines: dataset adapters, feature jobs, the training loop, evaluation, sweeps and the CLI."""

if __name__ != "lighthead.pipelines":  # one name only: a second would load a second copy of every registry
    raise ImportError(f"this folder installs as `lighthead.pipelines`; import it under that name, not {__name__!r}")
