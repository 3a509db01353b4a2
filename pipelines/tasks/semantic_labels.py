"""CASC's semantic labels: the top-C words of the training captions, by part of speech.

Xu et al., TNNLS 2020, Sec. III-C1 and IV-A2: the label vocabulary is the C most frequent
nouns (or verbs, adjectives, all content words) of the training captions; an image's labels
are the union over its captions. Built once per (type, C) and stored as the JSON artifact
`labels/<type>-<C>` of the store, with every caption's label ids, so training never tags.

Tagging must run offline. No PyPI part-of-speech tagger ships its model inside the package
(NLTK and spaCy download theirs; the PyPI copies of spaCy models are unofficial uploads), so
tagging is a lexicon plus rules:

1. closed-class words (determiners, pronouns, prepositions, conjunctions, auxiliaries) and
   punctuation are never labels; number words are tagged NUM;
2. the candidate tags and lemmas of a word come from the English lexicon bundled with the
   `lemminflect` package when it is installed; otherwise (the documented fallback) from
   suffix rules (-ing/-ed verbs, -ly adverbs, -ous/-ful/-ive/... adjectives, -y adjective or
   noun, a small list of colour and size adjectives, everything else a noun) with plural
   stripping for lemmas;
3. an ambiguous word is resolved by its neighbours: after a determiner, number or adjective a
   noun (or an adjective when a noun follows), after a form of "be" a verb participle or an
   adjective, after "to" a verb, after a noun an inflected verb form ("a man rides").
Labels are lemmas ("dogs" -> "dog", "riding" -> "ride"); the artifact records the tagger.
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from typing import Any, Iterable, Sequence

TAGGER_VERSION = "lexicon-rules-v1"
LABEL_TYPES = {
    "nouns": {"NOUN"},
    "verbs": {"VERB"},
    "adjectives": {"ADJ"},
    "all": {"NOUN", "VERB", "ADJ", "ADV", "NUM"},
}

DETERMINERS = set(
    "a an the this that these those his her its their my your our some several many each every "
    "another any no both few".split()
)
BE = set("is are was were be been being am 's".split())
CLOSED = (
    DETERMINERS
    | BE
    | set(
        "i me mine you yours he him she hers it we us ours they them theirs who whom whose which what where when "
        "why how there here and or but nor so yet if than then as of in on at by with from to into onto upon over "
        "under above below behind beside besides between among through across along around about against toward "
        "towards during before after since until while via within without near next off out up down while "
        "has have had having do does did will would shall should can could may might must not n't 't "
        "very too also just only all such other".split()
    )
)
NUMBERS = set("one two three four five six seven eight nine ten eleven twelve dozen hundred first second third".split())
COMMON_ADJ = set(
    "red green blue yellow black white orange purple pink brown gray grey golden silver dark light "
    "bright big small large little tall short long young old new wooden empty open full".split()
)
# Position nouns the lexicon lists only as adjectives/verbs ("on top of", "in front of").
NOUN_ALSO = set("top front back side bottom middle left right center centre edge corner".split())
_ADJ_SUFFIX = ("ous", "ful", "ive", "able", "ible", "less", "ish", "ical")
_NOUN_SUFFIX = ("tion", "sion", "ness", "ment", "ity", "ship", "ist", "ism")


def _lemminflect():
    try:
        import lemminflect
    except ImportError:
        return None
    return lemminflect


def tagger_name() -> str:
    return f"{TAGGER_VERSION}+{'lemminflect' if _lemminflect() else 'suffix-rules'}"


def _plural_lemma(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ses", "xes", "ches", "shes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@cache
def candidates(word: str) -> dict[str, str]:
    """Possible tags of an open-class word -> its lemma under that tag."""
    if not word.isalpha():
        return {}
    lem = _lemminflect()
    if lem is not None:
        found = lem.getAllLemmas(word)
        out = {
            ("NOUN" if tag == "PROPN" else tag): lemmas[0]
            for tag, lemmas in found.items()
            if tag in ("NOUN", "PROPN", "VERB", "ADJ", "ADV")
        }
        if out:
            if word in NOUN_ALSO:
                out.setdefault("NOUN", word)
            return out
    # Suffix rules: the fallback without a lexicon, and for words the lexicon lacks.
    if word in COMMON_ADJ:
        return {"ADJ": word}
    if len(word) > 4 and word.endswith("ing"):
        return {"VERB": word, "NOUN": word}
    if len(word) > 3 and word.endswith("ed"):
        return {"VERB": word, "ADJ": word}
    if len(word) > 3 and word.endswith("ly"):
        return {"ADV": word}
    if word.endswith(_ADJ_SUFFIX):
        return {"ADJ": word}
    if word.endswith(_NOUN_SUFFIX):
        return {"NOUN": word}
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return {"NOUN": _plural_lemma(word), "VERB": word}
    if len(word) > 4 and word.endswith("y") and not word.endswith(("ay", "ey", "oy")):
        return {"NOUN": word, "ADJ": word}  # "a grassy field" vs "the baby": context decides
    return {"NOUN": word}


def tag(words: Sequence[str]) -> list[tuple[str, str]]:
    """(tag, lemma) per word: tags NOUN, VERB, ADJ, ADV, NUM, or X for closed-class/punctuation."""
    cands = [None if (w in CLOSED or not w.isalpha()) else ("NUM" if w in NUMBERS else candidates(w)) for w in words]
    out: list[tuple[str, str]] = []
    for i, (w, c) in enumerate(zip(words, cands)):
        if c is None:
            out.append(("X", w))
            continue
        if c == "NUM":
            out.append(("NUM", w))
            continue
        prev_word = words[i - 1] if i > 0 else ""
        prev_tag = out[-1][0] if out else "X"
        nxt = cands[i + 1] if i + 1 < len(words) else None
        next_noun = isinstance(nxt, dict) and "NOUN" in nxt
        inflected = w.endswith(("s", "ing", "ed"))
        if len(c) == 1:
            t = next(iter(c))
        elif prev_word in BE:
            t = (
                "VERB"
                if "VERB" in c and w.endswith(("ing", "ed", "en"))
                else "ADJ"
                if "ADJ" in c
                else "VERB"
                if "VERB" in c
                else "NOUN"
            )
        elif prev_word == "to" and "VERB" in c:
            t = "VERB"
        elif prev_word in DETERMINERS or prev_tag in ("ADJ", "NUM") or i == 0:
            t = "ADJ" if "ADJ" in c and next_noun else "NOUN" if "NOUN" in c else "ADJ" if "ADJ" in c else "VERB"
        elif prev_tag == "NOUN" and "VERB" in c and inflected:
            t = "VERB"
        elif "ADJ" in c and (next_noun or w in COMMON_ADJ):
            t = "ADJ"
        else:
            t = next(tg for tg in ("NOUN", "VERB", "ADJ", "ADV") if tg in c)
        out.append((t, c[t]))
    return out


def caption_words(text: str, label_type: str) -> list[str]:
    """The label words (lemmas) of one caption for a label type, in order, repeats kept."""
    from lighthead.extract.vocab import tokenize

    keep = LABEL_TYPES[label_type]
    return [lemma for t, lemma in tag(tokenize(text)) if t in keep]


def build_labels(
    texts_by_id: dict[str, str], train_ids: Iterable[str], label_type: str, num_labels: int
) -> dict[str, Any]:
    """The label artifact: top-`num_labels` words of the training captions + labels per caption.

    Returns {"label_type", "num_labels", "tagger", "words", "counts", "captions": {text id:
    [label index, ...]}}. Ties in frequency break alphabetically, so the result is stable.
    """
    if label_type not in LABEL_TYPES:
        raise ValueError(f"label_type must be one of {', '.join(LABEL_TYPES)}, got {label_type!r}")
    per_caption = {tid: caption_words(text, label_type) for tid, text in texts_by_id.items()}
    counts = Counter(w for tid in train_ids for w in per_caption[tid])
    if not counts:
        raise ValueError(f"the training captions hold no {label_type}: cannot build semantic labels")
    words = sorted(counts, key=lambda w: (-counts[w], w))[:num_labels]
    index = {w: i for i, w in enumerate(words)}
    captions = {tid: sorted({index[w] for w in ws if w in index}) for tid, ws in per_caption.items()}
    return {
        "label_type": label_type,
        "num_labels": num_labels,
        "tagger": tagger_name(),
        "words": words,
        "counts": [counts[w] for w in words],
        "captions": captions,
    }


def artifact_name(label_type: str, num_labels: int) -> str:
    return f"labels/{label_type}-{num_labels}"


def load_or_build(store: Any, records: Sequence[Any], label_type: str, num_labels: int) -> dict[str, Any]:
    """The store's label artifact for (type, C), built from the records and saved if missing.

    A store that cannot be written (read-only, another user's) keeps the labels in memory: they
    are rebuilt, identically, on each run, and training never needs write access to the store.
    """
    name = artifact_name(label_type, num_labels)
    if store.has_json(name):
        return store.read_json(name)
    texts = {tid: text for r in records for tid, text in zip(r.text_ids(), r.texts)}
    train = [tid for r in records if r.split == "train" for tid in r.text_ids()]
    if not train:
        raise ValueError("no training captions (split 'train') to build the semantic labels from")
    artifact = build_labels(texts, train, label_type, num_labels)
    from lighthead.store import StoreError

    try:
        store.write_json(name, artifact)
    except (OSError, StoreError) as e:  # read-only file system, permission denied, ...: keep them in memory
        import warnings

        warnings.warn(
            f"{store.path}: cannot save the semantic labels {name!r} ({getattr(e, 'strerror', None) or e}); "
            "they were computed in memory for this run",
            stacklevel=2,
        )
    return artifact
