"""Where parallel work runs: a dask cluster, shared by sweeps (one task per trial) and by
extraction (one task per worker's share of the images).

`client` (ClusterOptions, `connect`: a LocalCluster, a running scheduler, or batch jobs),
`batch` (SLURM/PBS jobs through dask-jobqueue: option checks, refused submissions, jobs that ended).
"""

from lighthead.pipelines.cluster.client import ClusterOptions, Connection, connect

__all__ = ["ClusterOptions", "Connection", "connect"]
