"""Pipelines: dataset adapters, feature jobs, the training loop, evaluation, sweeps and the CLI."""
