"""Text extractors: frozen transformer token features and ITM's target pairs.

The GRU heads' word vocabulary lives in `extract/vocab.py`.
"""

from lighthead.extract.text.encoder import TextEncoder, TextEncoderConfig, TokenFeatures, vocab_sha256
from lighthead.extract.text.models import TEXT_MODELS, RemoteCodeError, TextModelSpec, resolve_model
from lighthead.extract.text.pairs import PLACEHOLDER, fill_target, target_pair

__all__ = [
    "PLACEHOLDER",
    "TEXT_MODELS",
    "RemoteCodeError",
    "TextEncoder",
    "TextEncoderConfig",
    "TextModelSpec",
    "TokenFeatures",
    "fill_target",
    "resolve_model",
    "target_pair",
    "vocab_sha256",
]
