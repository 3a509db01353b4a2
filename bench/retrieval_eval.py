"""Time scoring every (image, caption) pair with the cross-attention heads, vs a shard loop.

    python -m bench.retrieval_eval [--quick] [--device cpu|cuda] [--budget-mb N] [--precision fp32|bf16|both]

Heads at paper sizes (K = 36 regions of 2048, width 1024, GRU captions of 8-20 words, CASC
with 500 labels; MMCA when `heads/mmca.py` exists), random weights and random features
(`--quick` encodes captions from cached tokens instead of the GRU: same scored sizes).
"ours": encode each side once (region and word Gram matrices included), then
`lighthead.pipelines.tasks.scoring.score_blocks` (cache-sized blocks of images x captions on a CPU, large ones
on a GPU; one GEMM for all region-word cosines of a block; the Gram trick of
`heads/attention.py`), with float32 products and with bfloat16 products (`--precision bf16`
of `lighthead evaluate`). "loop": what SCAN's reference evaluation does, in float32 as that
code runs, written here from the released code's formulas (the head's configured
normalisation, temperatures, aggregation and direction; CASC's test score): shards of 128
images x 128 captions, and inside a shard, per attention direction, one caption at a time
repeated over the images, with the attended vectors built explicitly. For MMCA the loop
runs the joint Transformer on each pair one caption at a time, as training does (ours
shares the first unit's projections between pairs). The loop is slow, so both are timed on the same subset of the first
size (the first images, captions of every length), where their scores must agree (1e-4 in
float32, 3e-3 in bfloat16). There the loop, ours in each precision and a square matrix
product in each precision (1024^3 on a CPU, 4096^3 on a GPU: this machine's GEMM rate) are
timed in interleaved rounds (bench/ratio.py: at least 5 rounds and 10 s per side, 3 s with
`--quick`; a fast side repeats within its turn); each ratio is the median over the rounds with
its min-max: ours / loop, and for SCAN and CASC ours as a fraction of the GEMM's FLOP/s in the
same precision (`xattn_eval_vs_gemm_peak_<head>_<precision>`; the scorer's FLOPs are counted
from the shapes, see `score_flops`). The sizes' pairs/s are single runs. `--profile` adds
torch.profiler's operator table of SCAN and CASC scoring the first size.

Sizes: 1,000 x 5,000 and 5,000 x 25,000 (`--quick`: 100 x 500 and 200 x 1,000; MMCA 20 x 100
and 40 x 200).
The last line is for scripts: `xattn_eval_vs_shard_loop: <median ours / loop pairs/s>` (CASC,
on the loop's subset of the first size, with bfloat16 products where the device multiplies
them natively, else float32; a line above says which; the lines above the last give every
head and precision).
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.ratio import add_arguments, interleave, options, report, timed_rate
from lighthead.heads.build import build_head, head_class
from lighthead.heads.casc import CASC
from lighthead.pipelines.tasks.scoring import (
    PRECISIONS,
    cat_padded,
    default_budget,
    encode,
    fast_precision,
    score_blocks,
    slice_enc,
)
from lighthead.pipelines.threads import use_threads

VOCAB = 10_000  # about COCO's vocabulary with threshold 4
SHARD = 128  # SCAN's evaluation shard size
TOLERANCE = {"fp32": 1e-4, "bf16": 3e-3}  # largest |ours - loop| accepted per precision


def random_data(n_img: int, n_txt: int, labels: int, token_dim: int, seed: int = 0) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, 21, (n_txt,), generator=g)  # COCO captions: about 8-20 words
    lengths, _ = lengths.sort()  # captions in order of length, as evaluation encodes them
    length = int(lengths.max())
    mask = torch.arange(length)[None] < lengths[:, None]
    images = {
        "regions": torch.randn(n_img, 36, 2048, generator=g),
        "region_mask": torch.ones(n_img, 36, dtype=torch.bool),
    }
    texts = {
        "word_ids": torch.randint(4, VOCAB, (n_txt, length), generator=g) * mask,
        "tokens": torch.randn(n_txt, length, token_dim, generator=g) * mask[..., None],
        "text_mask": mask,
        "text_len": lengths,
        "labels": (torch.rand(n_txt, labels, generator=g) < 0.01).float(),
    }
    return images, texts


def batches(data: dict, size: int):
    n = len(next(iter(data.values())))
    for a in range(0, n, size):
        yield {k: v[a : a + size] for k, v in data.items()}


def _cosine(x1: torch.Tensor, x2: torch.Tensor, dim: int) -> torch.Tensor:
    """Cosine as SCAN's code writes it: the dot product over the product of the two norms."""
    return (x1 * x2).sum(dim) / (x1.norm(dim=dim) * x2.norm(dim=dim)).clamp(min=1e-8)


def _attend(query: torch.Tensor, context: torch.Tensor, norm: str, lam: float) -> torch.Tensor:
    """Each query item attends over the context items: (n, Lq, D), (n, Ls, D) -> (n, Lq, D).

    The cosines (n, Ls, Lq) are first normalised over the queries (SCAN's raw_feature_norm),
    then a softmax over the context with temperature `lam` weights the context vectors."""
    attn = torch.bmm(context, query.transpose(1, 2))  # (n, Ls, Lq)
    if norm == "softmax":
        attn = torch.softmax(attn, dim=2)
    if norm in ("clipped", "clipped_l2norm"):
        attn = torch.nn.functional.leaky_relu(attn, 0.1)
    if norm in ("l2norm", "clipped_l2norm"):
        attn = attn / (attn.norm(dim=2, keepdim=True) + 1e-8)
    weights = torch.softmax(lam * attn, dim=1)  # (n, Ls, Lq): over the context
    return torch.bmm(weights.transpose(1, 2), context)  # (n, Lq, D)


def _aggregate(r: torch.Tensor, agg: str, lam: float) -> torch.Tensor:
    """(n, items) cosines -> (n, 1): mean, or LogSumExp (1/lam) log sum exp(lam r)."""
    if agg == "mean":
        return r.mean(1, keepdim=True)
    return torch.log((r * lam).exp().sum(1, keepdim=True)) / lam


def _i2t_shard(v: torch.Tensor, words: torch.Tensor, lens: torch.Tensor, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """I2T scores (n_images, n_captions) of a shard and A^T (n_images, n_captions, D), one caption
    at a time (each region attends over the words)."""
    cols, globals_ = [], []
    for j in range(len(words)):
        cap = words[j, : int(lens[j])].unsqueeze(0).repeat(len(v), 1, 1)  # (n, L, D), as the reference
        ctx = _attend(v, cap, cfg.attn_norm, cfg.lambda_i2t)  # (n, K, D): attended words
        cols.append(_aggregate(_cosine(v, ctx, 2), cfg.agg_i2t, cfg.lambda_lse_i2t))
        globals_.append(ctx.mean(1, keepdim=True))
    return torch.cat(cols, 1), torch.cat(globals_, 1)


def _t2i_shard(v: torch.Tensor, words: torch.Tensor, lens: torch.Tensor, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """T2I scores (n_images, n_captions) of a shard and A^I (n_images, n_captions, D), one caption
    at a time (each word attends over the regions)."""
    cols, globals_ = [], []
    for j in range(len(words)):
        cap = words[j, : int(lens[j])].unsqueeze(0).repeat(len(v), 1, 1)  # (n, L, D)
        ctx = _attend(cap, v, cfg.attn_norm, cfg.lambda_t2i)  # (n, L, D): attended regions
        cols.append(_aggregate(_cosine(cap, ctx, 2), cfg.agg_t2i, cfg.lambda_lse_t2i))
        globals_.append(ctx.mean(1, keepdim=True))
    return torch.cat(cols, 1), torch.cat(globals_, 1)


@torch.no_grad()
def scan_loop(head, img: dict, txt: dict, n_img: int, n_txt: int) -> torch.Tensor:
    """SCAN's evaluation structure for scan/casc: shards of 128 x 128, and per direction a loop
    over the shard's captions (each repeated over the images), attended vectors built."""
    cfg = head.cfg
    casc = isinstance(head, CASC)
    directions = ("t2i", "i2t") if cfg.direction == "both" else (cfg.direction,)
    out = torch.empty(n_img, n_txt)
    for i0 in range(0, n_img, SHARD):
        v = img["regions"][i0 : min(n_img, i0 + SHARD)]  # (n, K, D)
        for j0 in range(0, n_txt, SHARD):
            j1 = min(n_txt, j0 + SHARD)
            words, lens = txt["words"][j0:j1], txt["len"][j0:j1]
            scores = {}
            if "i2t" in directions:
                scores["i2t"], a_txt = _i2t_shard(v, words, lens, cfg)
            if "t2i" in directions:
                scores["t2i"], a_img = _t2i_shard(v, words, lens, cfg)
            local = sum(scores.values()) / len(scores)
            if casc and cfg.test_score == "paper":  # Eq. 13: the sum of the two directions
                local = 2 * local
            if casc and cfg.beta < 1.0:
                probs = torch.sigmoid(head.classify(a_img))  # (n, m, C): labels predicted from A^I
                if cfg.test_score == "code":  # ... vs the labels predicted from A^T of the same pair
                    other = torch.sigmoid(head.classify(a_txt))
                else:  # ... vs the caption's labels
                    other = txt["labels"][j0:j1][None].expand_as(probs)
                block = cfg.beta * local + (1 - cfg.beta) * _cosine(probs, other, 2)
            else:
                block = local
            out[i0 : i0 + len(v), j0:j1] = block.cpu()
    return out


@torch.no_grad()
def caption_loop(head, img: dict, txt: dict, n_img: int, n_txt: int) -> torch.Tensor:
    """MMCA the straightforward way: shards of images, one caption at a time, the joint
    Transformer run on every (image, caption) pair as in training (`pair_scores_plain`)."""
    out = torch.empty(n_img, n_txt)
    alpha = head.cfg.alpha
    for i0 in range(0, n_img, SHARD):
        im = slice_enc(img, i0, min(n_img, i0 + SHARD))
        for j in range(n_txt):
            cap = slice_enc(txt, j, j + 1)
            s = im["i0"] @ cap["c0"].t() + alpha * head.pair_scores_plain(im, cap)  # (n, 1)
            out[i0 : i0 + SHARD, j] = s[:, 0].float().cpu()
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device):
    """(wall seconds, result) of one call, the device synchronised on both ends."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def score_flops(head, img: dict, txt: dict) -> float:
    """FLOPs the SCAN / CASC scorer needs for every pair of `img` x `txt`, from the shapes.

    2 FLOPs per multiply-add of every product (matrix products and the sums of products
    done elementwise); exponentials, normalisations and other elementwise work count 0, so
    the time they take shows as distance from the GEMM peak. Each image's real regions K and
    each caption's real words L count (padding is overhead, not work). Per pair, width D,
    multiply-adds:
      region-word cosines                       K L D
      T2I (each word over the regions)          K L (K + 2)   sum_k e s; region Gram G_v e; sum_k (G_v e) e
      I2T (each region over the words)          K L (L + 2)   sum_l e s; e G_t (word Gram); sum_l (e G_t) e
      CASC's released test score (beta < 1)     2 K L         attention weights averaged into A^I, A^T weights
                                                + (K + L) H   fc1 of A^I and A^T (weighted projections)
                                                + 2 H C       fc2 of both (H hidden, C labels)
                                                + 3 C         cosine of the two label vectors
    The encoders' work (projections, Gram matrices) is per item, not per pair: not counted.
    """
    cfg = head.cfg
    k = img["mask"].sum(1).double()[:, None]  # (I, 1) real regions
    l = txt["mask"].sum(1).double()[None, :]  # (1, T) real words
    d = img["regions"].shape[-1]
    macs = k * l * d
    if cfg.direction in ("t2i", "both"):
        macs = macs + k * l * (k + 2)
    if cfg.direction in ("i2t", "both"):
        macs = macs + k * l * (l + 2)
    if isinstance(head, CASC) and cfg.beta < 1.0:
        h, c = head.fc1.out_features, head.fc2.out_features
        macs = (
            macs + 2 * k * l + (k + l) * h + 2 * h * c + 3 * c
            if cfg.test_score == "code"
            else macs + k * l + k * h + h * c + 3 * c
        )
    return 2.0 * float(macs.sum())


def gemm(n: int, precision: str, device: torch.device):
    """A square n x n x n matrix product in `precision` (bf16: bfloat16 tensors, as autocast
    multiplies them) and its FLOPs; this machine's matrix-multiply rate to compare with."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    return (lambda: torch.mm(a, b)), 2.0 * n**3


def bench_head(
    name: str,
    sizes: list[tuple[int, int]],
    loop_size: tuple[int, int],
    device: torch.device,
    budget: int | None,
    precisions: list[str],
    overrides: dict | None = None,
    opts: dict | None = None,
    gemm_n: int = 1024,
) -> dict:
    """Pairs/s of ours at each size and precision (one run each), then, on the loop's subset of
    the first size, the loop, ours in each precision and (SCAN / CASC) a square GEMM in each
    precision timed in interleaved rounds: "ratio_<p>" ours / loop and "gemm_<p>" ours FLOP/s /
    GEMM FLOP/s (bench.ratio.Ratio each)."""
    opts = {"min_rounds": 5, "min_seconds": 0.0} if opts is None else opts
    per_call = opts["min_seconds"] / opts["min_rounds"]  # a fast side repeats for about this long per round
    torch.manual_seed(0)
    info = {"region_dim": 2048, "vocab_size": VOCAB, "token_dim": 768, "num_labels": 500}
    head = build_head(name, info, overrides or {}).to(device).eval()
    results = {}
    for n_img, n_txt in sizes:
        images, texts = random_data(n_img, n_txt, 500, 768)
        t_enc, img = timed(lambda: cat_padded(encode(head.encode_image, batches(images, 256), device)), device)
        t_txt, chunks = timed(lambda: encode(head.encode_text, batches(texts, 256), device), device)
        line = f"{name:5s} {n_img:>5} x {n_txt:<6} encode {t_enc + t_txt:7.2f}s  score"
        scores = {}
        for prec in precisions:
            t_ours, scores[prec] = timed(lambda: score_blocks(head, img, chunks, budget, prec), device)
            results[f"ours_{prec}_{n_img}x{n_txt}"] = n_img * n_txt / t_ours
            line += f"  {prec} {t_ours:7.2f}s ({n_img * n_txt / t_ours:9.0f} pairs/s)"
        print(line)
        if (n_img, n_txt) != sizes[0]:
            continue
        # The loop is slow: time it on a subset with captions of every length (every k-th of
        # the length-sorted captions), and ours on the very same pairs.
        li, lt = min(loop_size[0], n_img), min(loop_size[1], n_txt)
        cols = torch.linspace(0, n_txt - 1, lt).long()
        txt_all = cat_padded(chunks)
        txt_sub = {k: v[cols] for k, v in txt_all.items()}
        img_sub = slice_enc(img, 0, li)
        loop = scan_loop if name in ("scan", "casc") else caption_loop
        t_loop, ref = timed(lambda: loop(head, img_sub, txt_sub, li, lt), device)  # warm-up and reference
        for prec in precisions:
            err = (ref - scores[prec][:li, cols]).abs().max().item()
            if err > TOLERANCE[prec]:
                raise SystemExit(f"{name}: {prec} scores differ from the loop by {err}")
            results[f"err_{prec}"] = err
        sides = {"loop": lambda: li * lt / timed(lambda: loop(head, img_sub, txt_sub, li, lt), device)[0]}
        for prec in precisions:
            sides[f"ours_{prec}"] = lambda prec=prec: timed_rate(
                lambda: (score_blocks(head, img_sub, [txt_sub], budget, prec), sync(device)), li * lt, per_call
            )
        flops = score_flops(head, img_sub, txt_sub) if name in ("scan", "casc") else None
        if flops:
            for prec in precisions:
                run, n_flops = gemm(gemm_n, prec, device)
                run()  # warm-up (oneDNN picks its kernels)
                sides[f"gemm_{prec}"] = lambda run=run, n_flops=n_flops: timed_rate(
                    lambda: (run(), sync(device)), n_flops, per_call
                )
        rounds = interleave(sides, **opts)
        results["rounds"] = rounds
        line = (
            f"{name:5s} same {li} x {lt} pairs, median of {len(rounds)} rounds: loop (float32) "
            f"{li * lt / rounds.median('loop'):6.2f}s"
        )
        for prec in precisions:
            results[f"ratio_{prec}"] = rounds.ratio(f"ours_{prec}", "loop")
            line += (
                f"; ours {prec} {li * lt / rounds.median(f'ours_{prec}'):6.3f}s = {results[f'ratio_{prec}']}x "
                f"(max |ours - loop| {results[f'err_{prec}']:.1e})"
            )
        print(line)
        if flops:
            per_pair = flops / (li * lt)
            for prec in precisions:
                results[f"gemm_{prec}"] = rounds.combine(
                    lambda r, prec=prec: r[f"ours_{prec}"] * per_pair / r[f"gemm_{prec}"]
                )
                print(
                    f"{name:5s} {prec}: {per_pair / 1e6:.2f} MFLOP per pair; ours "
                    f"{rounds.median(f'ours_{prec}') * per_pair / 1e9:.1f} GFLOP/s, {gemm_n}^3 GEMM "
                    f"{rounds.median(f'gemm_{prec}') / 1e9:.1f} GFLOP/s: {results[f'gemm_{prec}']} of the GEMM"
                )
    return results


def profile(
    name: str,
    size: tuple[int, int],
    device: torch.device,
    budget: int | None,
    precision: str,
    overrides: dict,
    rows: int = 12,
) -> None:
    """torch.profiler's table of one scoring run: operators by their own time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.manual_seed(0)
    info = {"region_dim": 2048, "vocab_size": VOCAB, "token_dim": 768, "num_labels": 500}
    head = build_head(name, info, overrides).to(device).eval()
    images, texts = random_data(*size, 500, 768)
    img = cat_padded(encode(head.encode_image, batches(images, 256), device))
    chunks = encode(head.encode_text, batches(texts, 256), device)
    score_blocks(head, img, chunks, budget, precision)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        score_blocks(head, img, chunks, budget, precision)
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"--- {name} {precision}, {size[0]} x {size[1]}: operators by own time")
    print(prof.key_averages().table(sort_by=key, row_limit=rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, fewer seconds (a few minutes on a laptop CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--budget-mb", type=int, default=0, help="memory of one scored block (0: the device default)")
    ap.add_argument("--heads", default="casc,scan,mmca", help="heads to time (mmca skipped when absent)")
    ap.add_argument(
        "--precision",
        default="both",
        choices=["fp32", "bf16", "both"],
        help="precision of our scoring products (the loop is always float32)",
    )
    ap.add_argument("--sizes", default="", help="images x captions to time, e.g. 1000x5000 (default: by --quick)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: as `lighthead evaluate`: $OMP_NUM_THREADS, else min(4, half the cores))",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also print torch.profiler's operator table of SCAN and CASC scoring the first size",
    )
    add_arguments(ap)
    args = ap.parse_args()
    device = torch.device(args.device)
    use_threads(args.threads)  # the scorer and the GEMM it is compared with run on the same threads
    sizes = [(100, 500), (200, 1000)] if args.quick else [(1000, 5000), (5000, 25000)]
    if args.sizes:
        sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes.split(",")]
    loop_size = (50, 250) if args.quick else (256, 1280)
    precisions = list(PRECISIONS) if args.precision == "both" else [args.precision]
    budget = (args.budget_mb << 20) or None
    native = fast_precision(device)
    fast = native if native in precisions else precisions[0]  # the precision of the last line
    gemm_n = 4096 if device.type == "cuda" else 1024
    print(
        f"device {device} ({torch.get_num_threads()} threads), block budget "
        f"{args.budget_mb or default_budget(device) >> 20} MiB, native bf16 products: {native == 'bf16'}"
    )
    results, figures = {}, {}
    for name in args.heads.split(","):
        try:
            head_class(name)
        except KeyError:
            print(f"{name}: not registered, skipped")
            continue
        # --quick: cached tokens -> Linear instead of the 1024-wide bi-GRU, whose encoding
        # would dominate a CPU run; the scored tensors have the same sizes either way.
        quick = {"text": "text/bert-base-uncased"} if args.quick and name in ("scan", "casc") else {}
        if name == "mmca" and args.quick:  # a joint Transformer per pair: 25x fewer pairs on a CPU
            results[name] = bench_head(
                name, [(20, 100), (40, 200)], (20, 100), device, budget, precisions, opts=options(args)
            )
        else:
            results[name] = bench_head(name, sizes, loop_size, device, budget, precisions, quick, options(args), gemm_n)
        if args.profile and name in ("scan", "casc"):
            for prec in precisions:
                profile(name, sizes[0], device, budget, prec, quick)
    for name, r in results.items():
        for prec in precisions:
            figures[f"xattn_eval_vs_shard_loop_{name}_{prec}"] = r[f"ratio_{prec}"]
    for name, r in results.items():
        for prec in precisions:
            if f"gemm_{prec}" in r:
                figures[f"xattn_eval_vs_gemm_peak_{name}_{prec}"] = r[f"gemm_{prec}"]
    if "casc" in results:
        print(
            f"(last line: CASC with {fast} products"
            + (", the faster precision this device supports)" if fast == native else ")")
        )
        figures["xattn_eval_vs_shard_loop"] = results["casc"][f"ratio_{fast}"]
    report(figures)


if __name__ == "__main__":
    main()
