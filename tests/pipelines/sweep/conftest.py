"""One LocalCluster (2 worker processes, one thread each) shared by the sweep tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def dask_client():
    from lighthead.pipelines.sweep import ClusterOptions, connect

    # retries=1 also sets the scheduler's allowed-failures: one worker death per trial.
    with connect(ClusterOptions(workers=2, dashboard=":0"), retries=1) as conn:
        yield conn.client
