"""The chunked causal-LM loss equals transformers' loss and gradients, and never holds full-vocabulary logits."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from onevision.loss import chunked_lm_loss, liger_loss

VOCAB, WIDTH = 97, 16


def _inputs(seed=0, batch=3, length=21):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, length, WIDTH, generator=g, requires_grad=True)
    head = nn.Linear(WIDTH, VOCAB, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(VOCAB, WIDTH, generator=g))
    labels = torch.randint(0, VOCAB, (batch, length), generator=g)
    labels[torch.rand(batch, length, generator=g) < 0.4] = -100
    labels[0, :10] = -100  # a prompt
    return hidden, head, labels


def _reference(hidden, head, labels):
    """transformers' ForCausalLMLoss: fp32 logits for every position, shift, mean over supervised tokens."""
    logits = head(hidden).float()
    return F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100)


@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_chunked_loss_and_gradients_equal_the_plain_loss(chunk):
    hidden, head, labels = _inputs()
    ref = _reference(hidden, head, labels)
    g_hidden, g_head = torch.autograd.grad(ref, [hidden, head.weight])
    out = chunked_lm_loss(hidden, head, labels, chunk)
    c_hidden, c_head = torch.autograd.grad(out, [hidden, head.weight])
    assert float(out.detach()) == pytest.approx(float(ref.detach()), abs=1e-6)
    torch.testing.assert_close(c_hidden, g_hidden, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(c_head, g_head, atol=1e-6, rtol=1e-5)


class _Shapes(TorchDispatchMode):
    """Records the shape of every tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.append(str(func))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.shapes.append(tuple(t.shape))
        return out


class _Shifted(nn.Linear):
    """A head that is not a plain linear layer (as a quantized or adapted one): its own forward must be used."""

    def forward(self, x):
        return super().forward(x) + 0.5 * torch.arange(self.out_features, dtype=x.dtype)


@pytest.mark.parametrize("head_kind", ["linear", "module"])
def test_no_full_vocabulary_logits_ever_exist(head_kind):
    hidden, head, labels = _inputs(length=64)
    if head_kind == "module":
        shifted = _Shifted(WIDTH, VOCAB, bias=False)
        shifted.load_state_dict(head.state_dict())
        head = shifted
    supervised = int((labels[:, 1:] != -100).sum())
    with _Shapes() as seen:
        chunked_lm_loss(hidden, head, labels, 8).backward()
    logits = {s for s in seen.shapes if VOCAB in s and s not in ((VOCAB, WIDTH), (WIDTH, VOCAB), (VOCAB,))}
    # every other tensor with a vocabulary dimension is one chunk of logits (or its transpose)
    assert logits and all(len(s) == 2 and s[0] * s[1] <= 8 * VOCAB for s in logits) and supervised > 8
    with _Shapes() as seen:
        _reference(hidden, head, labels).backward()
    assert any(VOCAB in s and s[0] * (s[1] if len(s) == 3 else 1) >= supervised for s in seen.shapes)


def test_a_plain_head_computes_its_gradients_in_the_forward_pass():
    hidden, head, labels = _inputs(length=64)
    out = chunked_lm_loss(hidden, head, labels, 8)
    with _Shapes() as seen:
        out.backward()
    assert not [op for op in seen.ops if "mm" in op or "softmax" in op]  # no logits recomputed, no matmul
    assert hidden.grad is not None and head.weight.grad is not None


@pytest.mark.parametrize(
    "case", ["bias", "frozen head", "frozen states", "bf16", "not a plain linear", "scaled", "no grad"]
)
def test_every_head_and_gradient_case_equals_the_plain_loss(case):
    hidden, head, labels = _inputs()
    if case == "bias":
        head = nn.Linear(WIDTH, VOCAB)
    elif case == "frozen head":
        head.weight.requires_grad_(False)
    elif case == "frozen states":
        hidden = hidden.detach()
    elif case == "bf16":
        hidden, head = hidden.detach().bfloat16().requires_grad_(), head.bfloat16()
    elif case == "not a plain linear":
        shifted = _Shifted(WIDTH, VOCAB, bias=False)
        shifted.load_state_dict(head.state_dict())
        head = shifted
    if case == "no grad":
        with torch.no_grad():
            out = chunked_lm_loss(hidden, head, labels, 5)
        assert not out.requires_grad
        assert float(out) == pytest.approx(float(_reference(hidden, head, labels).detach()), rel=1e-6)
        return
    scale = (
        3.0 if case == "scaled" else 1.0
    )  # the incoming gradient is not always 1 (accumulation, loss scaling)
    inputs = [t for t in (hidden, *head.parameters()) if t.requires_grad]
    ref = _reference(hidden, head, labels) * scale
    expected = torch.autograd.grad(ref, inputs)
    out = chunked_lm_loss(hidden, head, labels, 5) * scale
    got = torch.autograd.grad(out, inputs)
    tol = {"atol": 2e-2, "rtol": 2e-2} if case == "bf16" else {"atol": 1e-6, "rtol": 1e-5}
    assert float(out.detach()) == pytest.approx(float(ref.detach()), rel=1e-2 if case == "bf16" else 1e-6)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == e.dtype
        torch.testing.assert_close(g, e, **tol)


def test_no_logits_are_kept_for_backward():
    hidden, head, labels = _inputs(length=64)
    supervised = int((labels[:, 1:] != -100).sum())
    saved: list[tuple[int, ...]] = []

    def keep(t):
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        chunked_lm_loss(hidden, head, labels, 8).backward()
    assert saved and not [s for s in saved if s[-1] == VOCAB]  # logits are recomputed per chunk in backward
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        _reference(hidden, head, labels).backward()
    assert any(s[-1] == VOCAB and s[0] * (s[1] if len(s) == 3 else 1) >= supervised for s in saved)


def test_nothing_supervised_gives_zero_and_keeps_the_graph():
    hidden, head, labels = _inputs()
    out = chunked_lm_loss(hidden, head, torch.full_like(labels, -100))
    out.backward()
    assert float(out) == 0.0 and hidden.grad is not None


def test_liger_is_imported_lazily_and_the_pytorch_chunks_run_off_cuda(monkeypatch):
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # not installed
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", None)
    assert liger_loss() is None
    hidden, head, labels = _inputs()
    assert float(chunked_lm_loss(hidden, head, labels, 4)) == pytest.approx(
        float(_reference(hidden, head, labels))
    )

    class Refused:  # installed, but CPU tensors must never reach the CUDA kernel
        def __init__(self, **kwargs):
            raise AssertionError("Liger used on CPU")

    fake = types.ModuleType("liger_kernel.transformers")
    fake.LigerFusedLinearCrossEntropyLoss = Refused
    monkeypatch.setitem(sys.modules, "liger_kernel", types.ModuleType("liger_kernel"))
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", fake)
    assert liger_loss() is Refused
    assert float(chunked_lm_loss(hidden, head, labels, 4)) == pytest.approx(
        float(_reference(hidden, head, labels))
    )
