"""Tasks: store -> batches for a head, and a head's metrics on a split.

`TASKS` maps a head's `task` name to its Task class. Every task module is imported
explicitly below (one line each) so registration never depends on import order.
"""

# One line per task module; add yours here.
from lighthead.pipelines.tasks import (
    retrieval,  # noqa: F401,E402
    sentiment,  # noqa: F401,E402
)
from lighthead.pipelines.tasks.base import TASKS, Task, TaskOptions

__all__ = ["TASKS", "Task", "TaskOptions"]
