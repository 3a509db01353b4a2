"""Every head's GRU runs in float32 under autocast (heads/rnn.py): on a GPU autocast would run
cuDNN RNNs in unscaled fp16, on a CPU a bf16 hidden state turns them into bf16."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from lighthead.heads.base import HEADS
from lighthead.heads.build import build_head
from lighthead.heads.mfsr import CaptionDecoder
from lighthead.heads.rnn import FP32GRU
from tests.heads.test_registry import INFO, TINY

# Configurations that build more RNNs than the defaults (ITIN's second, sentence GRU).
VARIANTS = {"itin": [{}, {"sentence_encoder": "separate", "context": "true"}, {"recipe": "paper"}]}


def _rnns(head: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in head.named_modules() if isinstance(m, nn.RNNBase)]


@pytest.mark.parametrize("name", HEADS.names())
def test_every_rnn_of_every_head_is_the_float32_gru(name):
    for over in VARIANTS.get(name, [{}]):
        head = build_head(name, INFO, {**TINY.get(name, {}), **over})
        for path, module in _rnns(head):
            assert type(module) is FP32GRU, f"{name} {over}: {path} is a {type(module).__name__}"


def test_the_walk_finds_rnns():  # the check above is not vacuous
    found = {n for n in HEADS.names() if _rnns(build_head(n, INFO, TINY.get(n, {})))}
    assert {"scan", "casc", "vsepp", "mfsr", "itin"} <= found


def test_float32_under_cpu_bf16_autocast_with_fp32_gradients():
    torch.manual_seed(0)
    gru = FP32GRU(6, 5, num_layers=2, batch_first=True, bidirectional=True)
    x = torch.randn(3, 7, 6, dtype=torch.bfloat16)
    h0 = torch.randn(4, 3, 5, dtype=torch.bfloat16)  # what a linear layer gives under autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h = gru(x, h0)
        packed, hp = gru(pack_padded_sequence(x, torch.tensor([7, 4, 2]), batch_first=True, enforce_sorted=False))
    assert out.dtype == h.dtype == packed.data.dtype == hp.dtype == torch.float32
    (out.square().sum() + packed.data.sum()).backward()
    for name, p in gru.named_parameters():
        assert p.dtype == p.grad.dtype == torch.float32, name
        assert p.grad.abs().sum() > 0, name
    ref = nn.GRU(6, 5, num_layers=2, batch_first=True, bidirectional=True)
    ref.load_state_dict(gru.state_dict())  # same keys: checkpoints of nn.GRU heads load
    torch.testing.assert_close(out, ref(x.float(), h0.float())[0])


def test_mfsr_decoder_gru_is_float32_under_autocast():
    """The decoder's initial state comes from a linear layer, bf16 under autocast."""
    torch.manual_seed(0)
    dec = CaptionDecoder(nn.Embedding(11, 4), code_dim=6, hidden=8, layers=2)
    seen = []
    dec.gru.register_forward_hook(lambda m, args, out: seen.append(out[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dec(torch.randn(3, 6), torch.randint(1, 11, (3, 5)))
    assert seen == [torch.float32]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["scan", "mfsr", "itin"])
def test_gru_runs_float32_with_float32_gradients_under_cuda_autocast(name):
    """CUDA autocast's rule for cuDNN RNNs casts to fp16 whatever the autocast dtype: the heads'
    GRUs must come out of a bf16-autocast training step in float32, with float32 gradients."""
    from tests.heads.conftest import random_batch

    torch.manual_seed(0)
    head = build_head(name, INFO, {**TINY.get(name, {}), **VARIANTS.get(name, [{}])[-1]}).cuda().train()
    seen = []
    for _, gru in _rnns(head):
        gru.register_forward_hook(
            lambda m, args, out: seen.append((out[0].data if isinstance(out[0], PackedSequence) else out[0]).dtype)
        )
    batch = {k: v.cuda() for k, v in random_batch(b=4, region_dim=INFO["region_dim"]).items()}
    if head.task == "sentiment":
        batch.update(
            tokens=torch.randn(4, 6, INFO["token_dim"], device="cuda"),
            text_mask=torch.ones(4, 6, dtype=torch.bool, device="cuda"),
            label=torch.randint(0, 3, (4,), device="cuda"),
            regions=torch.randn(4, 4, INFO["region_dim"], device="cuda"),
        )
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = head.loss(batch)["loss"]
    loss.backward()
    assert seen and set(seen) == {torch.float32}
    for path, gru in _rnns(head):
        for pname, p in gru.named_parameters():
            assert p.grad is not None and p.grad.dtype == torch.float32, f"{path}.{pname}"
