"""Light heads trained on cached tensors: one module per head, registered by name in HEADS.

Every head module is imported explicitly below (one line each), so registration never
depends on import order. To add a head: write `heads/<name>.py` (a config subclassing
`RetrievalConfig` or `SentimentConfig`, a head subclassing `RetrievalHead` or `SentimentHead`
with `from_config` and `@HEADS.register(...)`; the contract is `heads/base.py`) and add its
import line here. CONTRIBUTING.md, "Adding a head", walks through it.
"""


from lighthead.heads.base import (BATCH_KEYS, HEADS, DataInfo, Head, HeadConfig, RetrievalConfig, RetrievalHead,
                                  SentimentConfig, SentimentHead, feature_sources, source)

# Retrieval heads.
from lighthead.heads import scan  # noqa: F401,E402  (scan = CASC-base)
from lighthead.heads import casc  # noqa: F401,E402
from lighthead.heads import vsepp  # noqa: F401,E402
from lighthead.heads import mmca  # noqa: F401,E402
from lighthead.heads import mfsr  # noqa: F401,E402

# Sentiment heads.
from lighthead.heads import itin, itm, text_only  # noqa: F401,E402

__all__ = ["BATCH_KEYS", "HEADS", "DataInfo", "Head", "HeadConfig", "RetrievalConfig", "RetrievalHead",
           "SentimentConfig", "SentimentHead", "feature_sources", "source"]
