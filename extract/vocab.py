"""Word vocabulary for the GRU text encoders (CASC, mFSR, VSE++ baselines).

As in the VSE++ (Faghri et al., BMVC 2018) and SCAN (Lee et al., ECCV 2018) code that CASC
and mFSR build on: captions are lowercased and split into words and punctuation, the
vocabulary holds the words seen at least `threshold` (4) times in the training captions, and
ids 0-3 are `<pad>`, `<start>`, `<end>`, `<unk>`. Captions become `<start> w1 ... wn <end>`.

The vocabulary is saved in the store (JSON artifact "vocab") together with the name of the
tokenizer that produced it; loading refuses a different tokenizer, so train and test captions
are always split the same way.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)  # ids 0..3; 0 = padding in every batch
TOKENIZER = "lower-words-punct-v1"  # name of `tokenize` below, stored with the vocabulary
# letter/digit runs, an apostrophe suffix ('s, 't) as its own word, any other symbol alone
_WORD = re.compile(r"[^\W_]+|'[^\W_]+|[^\w\s]|_")


def tokenize(text: str) -> list[str]:
    """Lowercased words and punctuation: "A man's hat." -> ["a", "man", "'s", "hat", "."]."""
    return _WORD.findall(text.lower())


@dataclass
class VocabConfig:
    """How the vocabulary is built (VSE++/SCAN defaults)."""

    threshold: int = 4  # keep words seen at least this many times in the training split
    add_bounds: bool = True  # wrap each caption in <start> ... <end>
    max_size: int | None = None  # cap on the number of words (most frequent first); None = no cap

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {self.threshold}")
        if self.max_size is not None and self.max_size < 1:
            raise ValueError(f"max_size must be >= 1 or None, got {self.max_size}")


class Vocabulary:
    """Word <-> id map: ids 0..3 are the specials, then words by falling frequency, ties alphabetical."""

    def __init__(self, words: Sequence[str], config: VocabConfig | None = None):
        self.config = config or VocabConfig()
        self.words: list[str] = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.index: dict[str, int] = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ValueError("duplicate words in the vocabulary")

    @classmethod
    def build(cls, texts: Iterable[str], config: VocabConfig | None = None) -> Vocabulary:
        """Count the words of `texts` (the training split) and keep the frequent ones."""
        config = config or VocabConfig()
        counts = Counter(w for t in texts for w in tokenize(t))
        kept = sorted((w for w, c in counts.items() if c >= config.threshold), key=lambda w: (-counts[w], w))
        if config.max_size is not None:
            kept = kept[: config.max_size]
        return cls(kept, config)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def encode(self, text: str) -> list[int]:
        """Word ids of a caption (unknown words -> <unk>), with <start>/<end> if configured."""
        unk = self.index[UNK]
        ids = [self.index.get(w, unk) for w in tokenize(text)]
        if self.config.add_bounds:
            ids = [self.index[START], *ids, self.index[END]]
        return ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words of ids, padding dropped."""
        return [self.words[i] for i in ids if i != 0]

    def to_json(self) -> dict[str, Any]:
        return {
            "tokenizer": TOKENIZER,
            "threshold": self.config.threshold,
            "add_bounds": self.config.add_bounds,
            "max_size": self.config.max_size,
            "words": self.words,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Vocabulary:
        if obj.get("tokenizer") != TOKENIZER:
            raise ValueError(
                f"vocabulary made with tokenizer {obj.get('tokenizer')!r}, this code splits words with {TOKENIZER!r}; "
                f"re-run the `words` extraction"
            )
        words = list(obj["words"])
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}, got {words[: len(SPECIALS)]}")
        config = VocabConfig(threshold=obj["threshold"], add_bounds=obj["add_bounds"], max_size=obj.get("max_size"))
        return cls(words[len(SPECIALS) :], config)
