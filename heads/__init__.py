"""Light heads trained on cached tensors: one module per head, registered by name in HEADS.

Every head module is imported explicitly below (one line each), so registration never
depends on import order. To add a head: write `heads/<name>.py` (a config subclassing
`RetrievalConfig` or `SentimentConfig`, a head subclassing `RetrievalHead` or `SentimentHead`
with `from_config` and `@HEADS.register(...)`; the contract is `heads/base.py`) and add its
import line here. CONTRIBUTING.md, "Adding a head", walks through it.
"""

# Retrieval heads.
# Sentiment heads.
from lighthead.heads import (  # noqa: F401,E402
    casc,  # noqa: F401,E402
    itin,
    itm,
    mfsr,  # noqa: F401,E402
    mmca,  # noqa: F401,E402
    scan,  # noqa: F401,E402  (scan = CASC-base)
    text_only,
    vsepp,  # noqa: F401,E402
)
from lighthead.heads.base import (
    BATCH_KEYS,
    HEADS,
    DataInfo,
    Head,
    HeadConfig,
    RetrievalConfig,
    RetrievalHead,
    SentimentConfig,
    SentimentHead,
    feature_sources,
    source,
)

__all__ = [
    "BATCH_KEYS",
    "HEADS",
    "DataInfo",
    "Head",
    "HeadConfig",
    "RetrievalConfig",
    "RetrievalHead",
    "SentimentConfig",
    "SentimentHead",
    "feature_sources",
    "source",
]
