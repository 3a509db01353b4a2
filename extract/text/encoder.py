"""Token features of a frozen `transformers` encoder, batched by length.

BERT-base (Devlin et al., NAACL 2019) for MMCA and ITIN, RoBERTa-base (Liu et al., 2019) for
ITM, and any other AutoModel from a local folder or the local Hugging Face cache. The heads
read the last hidden layer, as the papers do; `layer` picks another one.

Texts are tokenized once, sorted by token count and cut into batches, so each batch pads only
to its own longest text (`sort_by_length=False` keeps the given order, for comparison). On a
CUDA device the forward pass runs under float16 autocast by default (`precision`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from lighthead.extract.precision import PRECISIONS, autocast, resolve
from lighthead.extract.text.models import resolve_model, weights_file
from lighthead.store import sha256_file

GPU_PRECISION = "fp16"  # the "auto" precision on CUDA


@dataclass
class TextEncoderConfig:
    """Which encoder and how to run it. Defaults: BERT-base, last layer (MMCA, ITIN)."""

    model: str = "bert-base-uncased"  # registered name, local folder or cached Hugging Face id
    layer: int = -1  # hidden state kept: -1 the last layer, 0 the embeddings, i the output of block i
    max_length: int = 512  # longer inputs are truncated (longest segment first for pairs)
    batch_size: int = 32  # texts per forward pass
    sort_by_length: bool = True  # batch texts of similar length together (less padding)
    sort_window: int = 50_000  # texts tokenized and sorted together; bounds memory on COCO-sized runs
    precision: str = "auto"  # auto (fp16 autocast on CUDA, fp32 on a CPU), fp32, bf16 or fp16 (extract/precision.py)
    lowercase: bool = False  # lowercase before tokenizing (ITM's code does so for RoBERTa)
    ascii_only: bool = False  # drop every non-ASCII character first (ITIN's Demo.py decodes posts ascii/ignore)
    # "longest_first": cut the longest segment first, keeping the closing special tokens; "head": keep the
    # first max_length tokens of the wrapped text, so a longer one loses its [SEP] (ITIN's Demo.py); single texts
    truncate: str = "longest_first"

    def __post_init__(self) -> None:
        if not str(self.model):
            raise ValueError("model must name a text encoder")
        if self.max_length < 4:
            raise ValueError(f"max_length must be >= 4, got {self.max_length}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.sort_window < self.batch_size:
            raise ValueError(f"sort_window ({self.sort_window}) must be >= batch_size ({self.batch_size})")
        if self.truncate not in ("longest_first", "head"):
            raise ValueError(f"truncate must be longest_first or head, got {self.truncate!r}")


def vocab_sha256(tokenizer: Any) -> str:
    """A digest of the tokenizer's token <-> id map: equal digests decode ids to equal tokens.
    A feature set records it, so a tokenizer found later by path can be checked to be the same."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()


@dataclass
class TokenFeatures:
    """One encoded text; L tokens including the special ones."""

    features: np.ndarray  # (L, D) float32 hidden states
    input_ids: np.ndarray  # (L,) int32 tokenizer ids
    word_ids: np.ndarray  # (L,) int32 index of the word each token belongs to within its segment; -1 special tokens
    segment_ids: np.ndarray  # (L,) int8 0 = the text, 1 = the paired text (target), -1 special tokens

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def target_span(self) -> tuple[int, int]:
        """[start, end) token positions of the paired segment (the target); (0, 0) without one."""
        where = np.flatnonzero(self.segment_ids == 1)
        return (int(where[0]), int(where[-1]) + 1) if where.size else (0, 0)


class TextEncoder:
    """A frozen tokenizer + encoder pair; `encode` / `iter_encode` give `TokenFeatures`."""

    def __init__(self, config: TextEncoderConfig, device: str = "cpu", random_weights: bool = False):
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress bars report the work; the loading bar is noise

        self.config = config
        self.device = torch.device(device)
        self.precision = resolve(config.precision, self.device, GPU_PRECISION)  # what the forward pass runs in
        self.path: Path = resolve_model(config.model)
        self.random_weights = random_weights
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                self.path, local_files_only=True, use_fast=True, trust_remote_code=False
            )
        except (OSError, ValueError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__  # transformers' texts span lines
            raise FileNotFoundError(f"cannot load the tokenizer from {self.path}: {why}") from None
        if not self.tokenizer.is_fast:
            raise ValueError(f"{self.path}: a fast tokenizer (tokenizer.json) is needed for the word-to-token map")
        if random_weights:
            torch.manual_seed(0)  # the same random encoder on every run, so resumed runs agree
            self.model = AutoModel.from_config(
                AutoConfig.from_pretrained(self.path, local_files_only=True, trust_remote_code=False),
                trust_remote_code=False,
            )
        else:
            try:
                self.model = AutoModel.from_pretrained(self.path, local_files_only=True, trust_remote_code=False)
            except OSError as e:
                why = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise FileNotFoundError(f"cannot load the model weights from {self.path}: {why}") from None
        self.model.eval().requires_grad_(False).to(self.device)
        n_layers = getattr(self.model.config, "num_hidden_layers", None)
        if n_layers is not None and not -(n_layers + 1) <= config.layer <= n_layers:
            raise ValueError(f"layer {config.layer} out of range for a {n_layers}-layer model")
        self.width = int(self.model.config.hidden_size)  # D
        limit = getattr(self.model.config, "max_position_embeddings", config.max_length)
        # RoBERTa's position table has 2 reserved slots; the tokenizer's own limit accounts for that.
        self.max_length = min(config.max_length, limit, int(getattr(self.tokenizer, "model_max_length", limit)))

    def describe(self) -> dict[str, Any]:
        """What the store records about this encoder."""
        import transformers

        weights = weights_file(self.path)
        return {
            "model": self.config.model,  # the folder itself is left out: moving it must not block a resume
            "architecture": type(self.model).__name__,
            "width": self.width,
            "layer": self.config.layer,
            "max_length": self.max_length,
            "lowercase": self.config.lowercase,
            # recorded only when on, so the sets written before these settings existed still resume
            **({"ascii_only": True} if self.config.ascii_only else {}),
            **({"truncate": self.config.truncate} if self.config.truncate != "longest_first" else {}),
            "weights_sha256": None if self.random_weights or weights is None else sha256_file(weights),
            "random_weights": self.random_weights,
            "transformers": transformers.__version__,
        }

    def tokenize(self, texts: Sequence[str], pairs: Sequence[str | None] | None = None) -> list[dict[str, Any]]:
        """Per text: model inputs (lists) plus "word_ids" and "segment_ids" (None -> -1)."""
        pairs = list(pairs) if pairs is not None else [None] * len(texts)
        if len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
        out: list[dict[str, Any]] = [{} for _ in texts]
        head = self.config.truncate == "head"
        if head and any(p is not None for p in pairs):
            raise ValueError("truncate=head keeps the first tokens of single texts; pairs need longest_first")
        n = self.max_length if head else None  # head: tokenized whole, then cut
        for paired in (False, True):
            idx = [i for i, p in enumerate(pairs) if (p is not None) == paired]
            if not idx:
                continue
            enc = self.tokenizer(
                [self.prepare(texts[i]) for i in idx],
                text_pair=[self.prepare(pairs[i]) for i in idx] if paired else None,
                truncation=False if head else "longest_first",
                max_length=None if head else self.max_length,
                verbose=not head,  # no warning for a text longer than the model takes: it is cut below
            )
            for k, i in enumerate(idx):
                item = {key: enc[key][k][:n] for key in enc.keys()}
                item["word_ids"] = [-1 if w is None else w for w in enc.word_ids(k)][:n]
                item["segment_ids"] = [-1 if s is None else s for s in enc.sequence_ids(k)][:n]
                out[i] = item
        return out

    def prepare(self, text: str) -> str:
        """The text as tokenized: non-ASCII characters dropped (`ascii_only`; on the decoded text
        this is what decoding the file's bytes as ASCII, ignoring errors, gives), lowercased."""
        if self.config.ascii_only:
            text = text.encode("ascii", "ignore").decode("ascii")
        return text.lower() if self.config.lowercase else text

    def batches(self, lengths: Sequence[int], sort_by_length: bool | None = None) -> list[list[int]]:
        """Indices per forward pass: longest first when sorting (memory peaks show up at once).

        sort_by_length: None = the config's setting."""
        sort = self.config.sort_by_length if sort_by_length is None else sort_by_length
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort else list(range(len(lengths)))
        b = self.config.batch_size
        return [order[k : k + b] for k in range(0, len(order), b)]

    @torch.inference_mode()
    def forward(self, items: Sequence[dict[str, Any]]) -> list[np.ndarray]:
        """Hidden states of tokenized items, one (L_i, D) float32 array each (padding removed)."""
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in items[0]]
        padded = self.tokenizer.pad([{k: it[k] for k in keys} for it in items], return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in padded.items()}
        with autocast(self.precision, self.device):
            out = self.model(**inputs, output_hidden_states=self.config.layer != -1)
        hidden = out.last_hidden_state if self.config.layer == -1 else out.hidden_states[self.config.layer]  # (B, L, D)
        hidden = hidden.float().cpu().numpy()
        lengths = padded["attention_mask"].sum(dim=1).tolist()
        # Right padding: the real tokens of row b are its first lengths[b] positions.
        return [hidden[b, : int(n)] for b, n in enumerate(lengths)]

    def iter_encode(
        self, texts: Sequence[str], pairs: Sequence[str | None] | None = None, sort_by_length: bool | None = None
    ) -> Iterator[list[tuple[int, TokenFeatures]]]:
        """Yield, per forward pass, (index into texts, TokenFeatures) for the texts of that batch.

        Texts are tokenized and sorted `sort_window` at a time."""
        window = self.config.sort_window
        for lo in range(0, len(texts), window):
            tokens = self.tokenize(texts[lo : lo + window], None if pairs is None else pairs[lo : lo + window])
            for batch in self.batches([len(t["input_ids"]) for t in tokens], sort_by_length):
                feats = self.forward([tokens[i] for i in batch])
                yield [
                    (
                        lo + i,
                        TokenFeatures(
                            features=f,
                            input_ids=np.asarray(tokens[i]["input_ids"], dtype=np.int32),
                            word_ids=np.asarray(tokens[i]["word_ids"], dtype=np.int32),
                            segment_ids=np.asarray(tokens[i]["segment_ids"], dtype=np.int8),
                        ),
                    )
                    for i, f in zip(batch, feats)
                ]

    def encode(
        self, texts: Sequence[str], pairs: Sequence[str | None] | None = None, sort_by_length: bool | None = None
    ) -> list[TokenFeatures]:
        """TokenFeatures of every text, in the given order (sort_by_length: None = the config's)."""
        out: list[TokenFeatures | None] = [None] * len(texts)
        for batch in self.iter_encode(texts, pairs, sort_by_length):
            for i, tf in batch:
                out[i] = tf
        return out  # type: ignore[return-value]
