"""Part 3: tokens/s of a BERT-base-size random model through TextEncoder, and of its forward pass alone."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench.gpu_parts.common import Device, Part, load_bench, timed
from bench.gpu_parts.sizes import Sizes

# What a CPU (the dry run) cannot exercise in this part.
CUDA_ONLY = ("fp16 autocast of the text encoder (the dry run's fp16 rows run in fp32)",)


def text_part(part: Part, dev: Device, sizes: Sizes) -> None:
    import torch

    from lighthead.extract.text import TextEncoder, TextEncoderConfig, resolve_model

    text_bench = load_bench("text")
    precisions = ("fp32", "fp16")
    b_fwd, l_fwd = sizes.forward
    encode_cases = [(p, b) for p in precisions for b in sizes.text_batches]
    part.plan(
        [f"encode, {p}, batch {b}" for p, b in encode_cases]
        + [f"forward only, {p}, {b_fwd} x {l_fwd} tokens" for p in precisions]
    )

    with tempfile.TemporaryDirectory(prefix="lighthead-gpu-bench-") as tmp:

        def setup():
            from transformers import BertConfig

            folder = Path(tmp) / "bert"
            BertConfig(**sizes.bert).save_pretrained(folder)
            vocab = resolve_model("all-minilm-l6-v2")  # BERT's uncased WordPiece vocabulary, 30,522 entries
            for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
                if (vocab / f).is_file():
                    shutil.copy(vocab / f, folder / f)
            encoder = TextEncoder(TextEncoderConfig(model=str(folder)), device=str(dev.device), random_weights=True)
            texts = text_bench.sentences(sizes.sentences)
            tokens = sum(len(t["input_ids"]) for t in encoder.tokenize(texts))
            return encoder, texts, tokens

        mc = sizes.bert
        label = f"BERT {mc.get('num_hidden_layers', 12)} layers, width {mc.get('hidden_size', 768)}, random weights"
        ready = part.prepare(label, setup)
        if ready is None:
            return
        encoder, texts, tokens = ready
        cpu_note = "" if dev.cuda else " (a CPU runs fp16 rows in fp32: the dry run times the code path only)"

        for p, b in encode_cases:

            def case(p=p, b=b) -> tuple[float, str, str]:
                encoder.config.batch_size = b
                encoder.precision = p if dev.cuda else "fp32"  # the resolved precision the forward pass runs in
                text_bench.rate(encoder, texts[: 4 * b], sort=True)  # warm-up
                rate = text_bench.rate(encoder, texts, sort=True)  # sentences/s
                return (
                    rate * tokens / len(texts),
                    "tokens/s",
                    f"{label}; {len(texts):,} sentences of {tokens / len(texts):.1f} tokens on average, "
                    f"length-sorted batches; tokenising and copying out included{cpu_note}",
                )

            part.run(f"encode, {p}, batch {b}", case, on_error=dev.clear)

        model = encoder.model
        width = model.config.hidden_size
        for p in precisions:

            def forward(p=p) -> tuple[float, str, str]:
                # one layer's activations at a time: the FF block (4 widths) and the attention maps
                dev.fits(b_fwd * l_fwd * 4 * (8 * width + 2 * model.config.num_attention_heads * l_fwd), "the batch")
                ids = torch.randint(1000, model.config.vocab_size, (b_fwd, l_fwd), device=dev.device)
                mask = torch.ones_like(ids)

                @torch.inference_mode()
                def run():
                    with torch.autocast(dev.device.type, dtype=torch.float16, enabled=p == "fp16" and dev.cuda):
                        model(input_ids=ids, attention_mask=mask)

                run()  # warm-up
                best = min(timed(run, dev) for _ in range(sizes.rounds))
                return b_fwd * l_fwd / best, "tokens/s", f"{label}; best of {sizes.rounds}{cpu_note}"

            part.run(f"forward only, {p}, {b_fwd} x {l_fwd} tokens", forward, on_error=dev.clear)
        ready = encoder = model = None  # the weights go before the next precision
        dev.clear()
