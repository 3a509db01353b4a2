"""Text extraction benchmark: sentences/s with length-sorted batches vs batches in file order.

    python -m bench.text                      # 2,000 sentences, the bundled MiniLM model, CPU
    python -m bench.text --quick              # 400 sentences, a few minutes on a busy CPU
    python -m bench.text --model bert-base-uncased --device cuda --batch-size 128 -n 20000

Same encoder object, same sentences, same run: after one warm-up pass the two modes are
timed in interleaved rounds (bench/ratio.py: at least 5, and 10 s per mode, 3 s with
`--quick`), and the ratio is the median over the rounds, printed with its min-max. The
sentences mix caption-like lengths (8-20 words) with some tweet-like long ones (30-60 words),
as the datasets do. The last line is for scripts: `text_sorted_vs_unsorted: <median of sorted
/ unsorted sentences/s>`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.ratio import add_arguments, interleave, options, report

WORDS = (
    "a man woman dog cat red blue green small large riding sitting next to on top of the street "
    "table grass water wave surfboard plate pizza bus train clock tower standing holding"
).split()


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    long = rng.random(n) < 0.15  # tweet-like long texts among caption-like short ones
    lengths = np.where(long, rng.integers(30, 61, n), rng.integers(8, 21, n))
    return [" ".join(rng.choice(WORDS, k)) + "." for k in lengths]


def rate(encoder, texts: list[str], sort: bool) -> float:
    start = time.perf_counter()
    for _ in encoder.iter_encode(texts, sort_by_length=sort):
        pass
    if encoder.device.type == "cuda":
        import torch

        torch.cuda.synchronize()
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="sentences")
    parser.add_argument("--model", default="all-minilm-l6-v2", help="registered name, folder or cached id")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: as `lighthead train`: $OMP_NUM_THREADS, else min(4, half the cores))",
    )
    parser.add_argument("--quick", action="store_true", help="400 sentences, fewer seconds")
    add_arguments(parser)
    args = parser.parse_args()
    n = 400 if args.quick else args.n

    from lighthead.extract.text import TextEncoder, TextEncoderConfig
    from lighthead.pipelines.threads import use_threads

    threads = use_threads(args.threads) if args.device == "cpu" else None

    encoder = TextEncoder(TextEncoderConfig(model=args.model, batch_size=args.batch_size), device=args.device)
    texts = sentences(n)
    tokens = [len(t["input_ids"]) for t in encoder.tokenize(texts)]
    print(
        f"model {args.model} on {args.device}"
        + (f" ({threads} threads)" if threads else "")
        + f"; {n} sentences, {np.mean(tokens):.1f} tokens on average "
        f"(max {max(tokens)}); batch {args.batch_size}"
    )
    rate(encoder, texts[: 4 * args.batch_size], sort=True)  # warm-up: allocator, kernels, caches
    rounds = interleave(
        {"sorted": lambda: rate(encoder, texts, True), "unsorted": lambda: rate(encoder, texts, False)}, **options(args)
    )
    print(f"sorted by length: {rounds.median('sorted'):,.1f} sentences/s (median of {len(rounds)} rounds)")
    print(f"file order:       {rounds.median('unsorted'):,.1f} sentences/s")
    report({"text_sorted_vs_unsorted": rounds.ratio("sorted", "unsorted")})


if __name__ == "__main__":
    main()
