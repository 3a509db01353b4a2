"""ITM's "contextualised target" input (Yu et al., IJCAI 2022, Sec. 3.2).

Each (sentence, target) becomes one sequence pair: the sentence with the target replaced by
the literal token `$T$`, then the target, e.g. for RoBERTa
`<s> Safety $T$ has signed ... </s></s> A . J . Stamps </s>`.
"""

from __future__ import annotations

import re

PLACEHOLDER = "$T$"  # what stands in for the target in the first segment


def target_pair(sentence: str, target: str) -> tuple[str, str]:
    """(sentence with the target replaced by `$T$`, target).

    A sentence that already holds `$T$` (the Twitter TSV and ITM files) is kept as is;
    otherwise the first occurrence of the target (case-insensitive, on word boundaries where
    the target starts/ends with a word character) is replaced. Raises ValueError when the
    target is empty or absent.
    """
    target = " ".join(target.split())
    if not target:
        raise ValueError("empty target")
    if PLACEHOLDER in sentence:
        return sentence, target
    start = r"\b" if target[0].isalnum() else ""
    end = r"\b" if target[-1].isalnum() else ""
    pattern = start + r"\s+".join(re.escape(w) for w in target.split()) + end
    replaced, n = re.subn(pattern, PLACEHOLDER, sentence, count=1, flags=re.IGNORECASE)
    if n == 0:
        raise ValueError(f"target {target!r} does not occur in the sentence and it has no {PLACEHOLDER}")
    return replaced, target


def fill_target(sentence: str, target: str) -> str:
    """The original sentence: `$T$` replaced back by the target."""
    return sentence.replace(PLACEHOLDER, target, 1)
