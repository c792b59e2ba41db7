"""Tests for lcip.losses against direct float64 computations of each formula.

The references below are written independently of lcip.losses: linear-space probabilities,
explicit normalization, torch.xlogy for the 0 log 0 = 0 convention, on pixels flattened to
(M, C) and restricted to the valid ones. Gradients are compared with autograd through these
references.
"""

from __future__ import annotations

import datetime
import math
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor

from lcip.classes import IGNORE_INDEX
from lcip.errors import ConfigError
from lcip.losses import (
    LOSSES,
    HardNaiveLoss,
    HighResLoss,
    Needs,
    NLLUnionLoss,
    QRFreeEnergyLoss,
    QRLoss,
    RQLoss,
    SoftNaiveLoss,
    build_loss,
    implied_posterior,
    log_denominator,
    log_prior,
    log_probs,
)

F64 = torch.float64
C = 5
SHAPES = {"flat": (24, C), "image": (2, C, 4, 3)}
NAMES = ["qr", "qr_free_energy", "rq", "soft_naive", "hard_naive", "nll_union"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add overhead (and contention on shared machines)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------
# Independent reference implementation
# ------------------------------------------------------------------------------------------


def to_pixels(x: Tensor) -> Tensor:
    """(N, C) or (B, C, H, W) -> (M, C)."""
    return x if x.ndim == 2 else x.movedim(1, -1).reshape(-1, x.shape[1])


def ref_q(output: Tensor, input_type: str, eps: float) -> Tensor:
    o = to_pixels(output)
    if input_type == "logits":
        e = torch.exp(o - o.max(dim=1, keepdim=True).values)
        q = e / e.sum(dim=1, keepdim=True)
    else:
        q = torch.exp(o)
    return (q + eps) / (1 + q.shape[1] * eps)


def ref_p(prior: Tensor, eps: float) -> Tensor:
    p = to_pixels(prior)
    return (p + eps) / (1 + p.shape[1] * eps)


def ref_r(q: Tensor, p: Tensor, d: Tensor) -> Tensor:
    r = p * q / d
    return r / r.sum(dim=1, keepdim=True)


def ref_kl(a: Tensor, b: Tensor) -> Tensor:
    """sum_l a log(a / b) with 0 log(0 / b) = 0 (also in the gradient)."""
    pos = a > 0
    ratio = torch.where(pos, a, 1.0) / torch.where(pos, b, 1.0)
    return torch.where(pos, a * torch.log(ratio), 0.0).sum(dim=1)


def ref_loss(name: str, q: Tensor, p: Tensor, valid: Tensor, d: Tensor | None = None) -> Tensor:
    """Reference value of loss `name` on pixel-wise q, p (M, C) and a (M,) bool valid mask."""
    q, p = q[valid], p[valid]
    if d is None:
        d = q.sum(dim=0)
    if name == "qr":
        per_pixel = ref_kl(q, ref_r(q, p, d))
    elif name == "rq":
        per_pixel = ref_kl(ref_r(q, p, d), q)
    elif name == "qr_free_energy":
        qbar = q.mean(dim=0)
        return (qbar * torch.log(qbar)).sum() - torch.xlogy(q, p).sum(dim=1).mean()
    elif name == "soft_naive":
        per_pixel = -torch.xlogy(p, q).sum(dim=1)
    elif name == "hard_naive":
        per_pixel = -torch.log(q[torch.arange(len(q)), p.argmax(dim=1)])
    elif name == "nll_union":
        per_pixel = -torch.log((p * q).sum(dim=1))
    else:
        raise AssertionError(name)
    return per_pixel.mean()


def reference(
    name: str,
    output: Tensor,
    prior: Tensor,
    mask: Tensor | None,
    input_type: str = "logits",
    eps: float = 1e-4,
) -> tuple[Tensor, Tensor]:
    """Reference loss value and its gradient with respect to `output`."""
    x = output.detach().clone().requires_grad_(True)
    valid = torch.ones(len(to_pixels(x)), dtype=torch.bool) if mask is None else mask.reshape(-1)
    value = ref_loss(name, ref_q(x, input_type, eps), ref_p(prior, eps), valid)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


# ------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------


def make_inputs(
    shape: str = "image",
    input_type: str = "logits",
    prior_kind: str = "soft",
    seed: int = 0,
    dtype: torch.dtype = F64,
) -> tuple[Tensor, Tensor, Tensor]:
    """Random output, prior ('soft', 'zeros' = soft with exact zeros, 'onehot') and mask."""
    g = torch.Generator().manual_seed(seed)
    size = SHAPES[shape]
    logits = 2 * torch.randn(size, generator=g, dtype=F64)
    output = logits if input_type == "logits" else torch.log_softmax(logits, dim=1)
    prior = torch.softmax(2 * torch.randn(size, generator=g, dtype=F64), dim=1)
    if prior_kind == "zeros":
        keep = torch.rand(size, generator=g) > 0.5
        keep |= F.one_hot(prior.argmax(dim=1), C).movedim(-1, 1).bool()
        prior = prior * keep
        prior = prior / prior.sum(dim=1, keepdim=True)
        assert (prior == 0).any()
    elif prior_kind == "onehot":
        prior = F.one_hot(prior.argmax(dim=1), C).movedim(-1, 1).to(F64)
    mask_shape = size[:1] + size[2:]
    mask = torch.rand(mask_shape, generator=g) > 0.3
    mask.view(-1)[0] = True
    mask.view(-1)[1] = False
    return output.to(dtype), prior.to(dtype), mask


def run_loss(loss: torch.nn.Module, output: Tensor, prior: Tensor, mask: Tensor | None):
    x = output.detach().clone().requires_grad_(True)
    value = loss(x, prior, mask)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


def assert_close(actual: Tensor, expected: Tensor, tol: float = 1e-10) -> None:
    # (not torch.testing.assert_close: its first call imports torch.distributed.tensor, ~5 s)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    diff = (actual - expected).abs().max().item() if actual.numel() else 0.0
    assert torch.allclose(actual, expected, rtol=tol, atol=tol), f"max abs diff {diff:.3g}"


# ------------------------------------------------------------------------------------------
# Values and gradients against the references
# ------------------------------------------------------------------------------------------


# (shape, input_type, smoothing, masked): every value of each setting, in varied combinations.
CASES = [
    ("flat", "logits", 1e-4, True),
    ("image", "log_probs", 0.0, True),
    ("image", "logits", 1e-4, False),
    ("flat", "log_probs", 1e-4, False),
    ("image", "logits", 0.0, True),
    ("flat", "logits", 0.0, False),
]


@pytest.mark.parametrize("name", NAMES)
def test_matches_reference(name: str) -> None:
    for seed, (shape, input_type, smoothing, masked) in enumerate(CASES):
        output, prior, mask = make_inputs(shape, input_type, seed=seed)
        m = mask if masked else None
        loss = build_loss(name, input_type=input_type, smoothing=smoothing)
        value, grad = run_loss(loss, output, prior, m)
        ref_value, ref_grad = reference(name, output, prior, m, input_type, smoothing)
        assert value.dtype == F64 and value.shape == ()
        assert_close(value, ref_value)
        assert_close(grad, ref_grad)


@pytest.mark.parametrize("smoothing", [1e-4, 0.0])
@pytest.mark.parametrize("name", NAMES)
def test_priors_with_zeros(name: str, smoothing: float) -> None:
    output, prior, mask = make_inputs("image", prior_kind="zeros", seed=3)
    loss = build_loss(name, smoothing=smoothing)
    if smoothing == 0 and name in ("qr", "qr_free_energy"):
        # q > 0 where p = 0: KL(q || r) and -sum q log p really are infinite.
        value = loss(output.clone().requires_grad_(True), prior, mask)
        assert torch.isposinf(value)
        return
    value, grad = run_loss(loss, output, prior, mask)
    ref_value, ref_grad = reference(name, output, prior, mask, "logits", smoothing)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert_close(value, ref_value)
    assert_close(grad, ref_grad)


@pytest.mark.parametrize("input_type", ["logits", "log_probs"])
def test_rq_with_one_hot_prior_is_cross_entropy(input_type: str) -> None:
    output, prior, mask = make_inputs("image", input_type, prior_kind="onehot", seed=4)
    target = torch.where(mask, prior.argmax(dim=1), IGNORE_INDEX)
    x = output.clone().requires_grad_(True)
    log_q = torch.log_softmax(x, dim=1) if input_type == "logits" else x
    ce = F.nll_loss(log_q, target, ignore_index=IGNORE_INDEX)
    (ce_grad,) = torch.autograd.grad(ce, x)
    for cls in (RQLoss, HardNaiveLoss, SoftNaiveLoss):
        value, grad = run_loss(cls(input_type=input_type, smoothing=0.0), output, prior, mask)
        assert_close(value, ce.detach())
        assert_close(grad, ce_grad)


def test_hard_naive_is_cross_entropy_on_argmax() -> None:
    output, prior, mask = make_inputs("flat", seed=5)
    target = torch.where(mask, prior.argmax(dim=1), IGNORE_INDEX)
    ce = F.cross_entropy(output, target, ignore_index=IGNORE_INDEX)
    assert_close(HardNaiveLoss(smoothing=0.0)(output, prior, mask), ce)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_finite_differences(name: str) -> None:
    output, prior, mask = make_inputs("flat", prior_kind="zeros", seed=6)
    x = output[:6, :3].clone().requires_grad_(True)
    p = prior[:6, :3] / prior[:6, :3].sum(dim=1, keepdim=True).clamp_min(1e-12)
    p[:, 0] += p.sum(dim=1) == 0
    loss = build_loss(name)
    (grad,) = torch.autograd.grad(loss(x, p, mask[:6]), x)
    # central finite differences (torch.autograd.gradcheck is slow to import on first use)
    h = 1e-6
    numeric = torch.zeros(x.numel(), dtype=F64)
    with torch.no_grad():
        for idx in range(x.numel()):
            step = h * F.one_hot(torch.tensor(idx), x.numel()).to(F64).view_as(x)
            up, down = loss(x + step, p, mask[:6]), loss(x - step, p, mask[:6])
            numeric[idx] = (up - down) / (2 * h)
    assert_close(grad, numeric.view_as(x), tol=1e-7)


def test_float32_sanity() -> None:
    output, prior, mask = make_inputs("image", dtype=torch.float32, seed=7)
    for name in NAMES:
        value = build_loss(name)(output, prior, mask)
        assert value.dtype == torch.float32
        ref_value, _ = reference(name, output.double(), prior.double(), mask)
        assert_close(value.double(), ref_value, tol=1e-5)


# ------------------------------------------------------------------------------------------
# Masking
# ------------------------------------------------------------------------------------------


SCOPED = [(n, {}) for n in NAMES] + [
    (n, {"denominator": d, "num_classes": C}) for n in ("qr", "rq") for d in ("running", "global")
]


@pytest.mark.parametrize(
    ("name", "kwargs"), SCOPED, ids=[f"{n}-{k.get('denominator', 'batch')}" for n, k in SCOPED]
)
def test_all_masked_is_connected_zero(name: str, kwargs: dict) -> None:
    output, prior, mask = make_inputs("image", prior_kind="zeros", seed=8)
    prior = torch.where(mask.unsqueeze(1), prior, 0.0)  # nodata priors, all zero
    loss = build_loss(name, smoothing=0.0, **kwargs)
    x = output.clone().requires_grad_(True)
    value = loss(x, prior, torch.zeros_like(mask))
    assert value.item() == 0.0
    assert value.grad_fn is not None
    value.backward()
    assert x.grad is not None and (x.grad == 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_masked_pixels_have_no_influence(name: str) -> None:
    output, prior, mask = make_inputs("image", prior_kind="zeros", seed=9)
    invalid = ~mask.unsqueeze(1)
    garbage_output = torch.where(invalid, torch.full_like(output, float("nan")), output)
    garbage_output[:, 0][~mask] = 1e6
    garbage_prior = torch.where(invalid, 0.0, prior)  # nodata: all-zero prior
    garbage_prior[:, 1][~mask] = float("nan")
    for smoothing in (1e-4, 0.0):
        loss = build_loss(name, smoothing=smoothing)
        if smoothing == 0 and name in ("qr", "qr_free_energy"):  # keep these finite
            prior_used = (prior + 1e-3) / (1 + C * 1e-3)
            garbage_used = torch.where(invalid, garbage_prior, prior_used)
        else:
            prior_used, garbage_used = prior, garbage_prior
        value, grad = run_loss(loss, output, prior_used, mask)
        g_value, g_grad = run_loss(loss, garbage_output, garbage_used, mask)
        assert torch.equal(value, g_value)
        assert torch.equal(grad, g_grad)
        assert (g_grad.movedim(1, -1)[~mask] == 0).all()


def test_integer_mask_is_accepted() -> None:
    output, prior, mask = make_inputs("flat", seed=10)
    loss = QRLoss()
    assert torch.equal(loss(output, prior, mask.to(torch.uint8)), loss(output, prior, mask))


# ------------------------------------------------------------------------------------------
# Reference comparisons that need more than one batch / process
# ------------------------------------------------------------------------------------------


def test_free_energy_equals_torchgeo_qr_loss() -> None:
    from torchgeo.losses import QRLoss as TorchGeoQRLoss

    output, prior, _ = make_inputs("image", seed=11)
    for input_type in ("logits", "log_probs"):
        x = output if input_type == "logits" else torch.log_softmax(output, dim=1)
        ours = QRFreeEnergyLoss(input_type=input_type, smoothing=0.0)
        probs = torch.softmax(output, dim=1)
        assert_close(ours(x, prior), TorchGeoQRLoss(eps=0.0)(probs, prior))
        # torchgeo's default eps=1e-8 inside its logs changes the value by up to ~1e-5.
        assert_close(ours(x, prior), TorchGeoQRLoss()(probs, prior), tol=1e-5)
    # gradients too
    x1 = output.clone().requires_grad_(True)
    x2 = output.clone().requires_grad_(True)
    QRFreeEnergyLoss(smoothing=0.0)(x1, prior).backward()
    TorchGeoQRLoss(eps=0.0)(torch.softmax(x2, dim=1), prior).backward()
    assert x1.grad is not None and x2.grad is not None
    assert_close(x1.grad, x2.grad)


def ref_with_denominator(
    name: str, output: Tensor, prior: Tensor, mask: Tensor, d_fn: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor]:
    """Reference value and gradient with D = d_fn(valid q of this batch), eps = 1e-4."""
    x = output.detach().clone().requires_grad_(True)
    q, p = ref_q(x, "logits", 1e-4), ref_p(prior, 1e-4)
    valid = mask.reshape(-1)
    value = ref_loss(name, q, p, valid, d=d_fn(q[valid]))
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


def valid_q_mean(output: Tensor, mask: Tensor) -> Tensor:
    """Mean over the valid pixels of the smoothed network probabilities, (C,)."""
    return ref_q(output, "logits", 1e-4)[mask.reshape(-1)].mean(dim=0)


def running_loss(name: str, m: float = 0.3) -> QRLoss | RQLoss:
    """A float64 running-denominator loss (its buffers follow .double() like BatchNorm's)."""
    kwargs: dict[str, Any] = {"denominator": "running", "momentum": m, "num_classes": C}
    return (QRLoss(**kwargs) if name == "qr" else RQLoss(**kwargs)).double()


@pytest.mark.parametrize("name", ["qr", "rq"])
def test_running_denominator_training(name: str) -> None:
    m = 0.3
    loss = running_loss(name, m)
    buffers = (loss.running_mean, loss.num_batches_tracked)
    batches = [make_inputs("image", prior_kind="zeros", seed=s) for s in (12, 13)]

    # First batch: same as the batch denominator; it initializes the EMA.
    out1, prior1, mask1 = batches[0]
    value, grad = run_loss(loss, out1, prior1, mask1)
    ref_value, ref_grad = reference(name, out1, prior1, mask1)
    assert_close(value, ref_value)
    assert_close(grad, ref_grad)
    ema1 = valid_q_mean(out1, mask1)
    assert_close(loss.running_mean, ema1)
    assert loss.num_batches_tracked.item() == 1

    # Second batch: D = (1 - m) * ema (no gradient) + m * batch mean (with gradient).
    out2, prior2, mask2 = batches[1]
    value, grad = run_loss(loss, out2, prior2, mask2)
    ref_value, ref_grad = ref_with_denominator(
        name, out2, prior2, mask2, lambda qv: (1 - m) * ema1 + m * qv.mean(dim=0)
    )
    assert_close(value, ref_value)
    assert_close(grad, ref_grad)
    ema2 = (1 - m) * ema1 + m * valid_q_mean(out2, mask2)
    assert_close(loss.running_mean, ema2)

    # An all-masked batch leaves the EMA alone.
    loss(out2, prior2, torch.zeros_like(mask2))
    assert_close(loss.running_mean, ema2)
    assert loss.num_batches_tracked.item() == 2
    # The buffers are updated in place (DDP and state_dict keep seeing the same tensors).
    assert loss.running_mean is buffers[0] and loss.num_batches_tracked is buffers[1]


def test_running_buffers_exist_from_construction() -> None:
    for name in ("qr", "rq"):
        loss = build_loss(name, denominator="running", num_classes=C)
        state = loss.state_dict()
        assert set(state) == {"running_mean", "num_batches_tracked"}
        assert state["running_mean"].shape == (C,)
        assert (state["running_mean"] == 0).all()
        assert state["num_batches_tracked"].item() == 0
        assert f"num_classes={C}" in repr(loss)
    # Buffers follow module.to() and keep their dtype when fed other inputs.
    loss = QRLoss(denominator="running", num_classes=C)
    assert loss.running_mean.dtype == torch.float32
    output, prior, mask = make_inputs("image", seed=23)
    loss(output, prior, mask)
    assert loss.running_mean.dtype == torch.float32
    assert_close(loss.running_mean.double(), valid_q_mean(output, mask), tol=1e-6)
    # Other scopes take num_classes too (and hold no buffers).
    assert dict(build_loss("qr", denominator="batch", num_classes=C).state_dict()) == {}


def test_running_requires_valid_num_classes() -> None:
    with pytest.raises(ConfigError, match="num_classes") as info:
        build_loss("qr", denominator="running")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="num_classes"):
        RQLoss(denominator="running")
    for bad in (0, -2, 2.5, True, "5"):
        with pytest.raises(ConfigError, match="num_classes"):
            build_loss("qr", denominator="running", num_classes=bad)
    output, prior, mask = make_inputs("image", seed=24)
    with pytest.raises(ValueError, match="running denominator holds 3 classes"):
        build_loss("qr", denominator="running", num_classes=3).double()(output, prior, mask)


@pytest.mark.parametrize("name", ["qr", "rq"])
def test_running_denominator_eval_mode(name: str) -> None:
    m = 0.3
    out1, prior1, mask1 = make_inputs("image", prior_kind="zeros", seed=25)
    out2, prior2, mask2 = make_inputs("image", prior_kind="zeros", seed=26)

    # Nothing tracked yet: the batch denominator, and the buffers stay untouched.
    loss = running_loss(name, m).eval()
    value, grad = run_loss(loss, out2, prior2, mask2)
    ref_value, ref_grad = reference(name, out2, prior2, mask2)
    assert_close(value, ref_value)
    assert_close(grad, ref_grad)
    assert (loss.running_mean == 0).all() and loss.num_batches_tracked.item() == 0

    # After training steps: the stored EMA alone (no batch part, no gradient through D).
    loss.train()
    loss(out1, prior1, mask1)
    loss(out2, prior2, mask2)
    ema = loss.running_mean.clone()
    loss.eval()
    value, grad = run_loss(loss, out2, prior2, mask2)
    ref_value, ref_grad = ref_with_denominator(name, out2, prior2, mask2, lambda qv: ema)
    assert_close(value, ref_value)
    assert_close(grad, ref_grad)
    assert torch.equal(loss.running_mean, ema) and loss.num_batches_tracked.item() == 2
    # A training-mode call would have used (and stored) the mixed denominator instead.
    mixed = (1 - m) * ema + m * valid_q_mean(out2, mask2)
    mixed_value, _ = ref_with_denominator(name, out2, prior2, mask2, lambda qv: mixed)
    assert abs(mixed_value - value).item() > 1e-6


@pytest.mark.parametrize("name", ["qr", "rq"])
def test_running_state_dict_round_trip(name: str) -> None:
    batches = [make_inputs("image", prior_kind="zeros", seed=s) for s in (27, 28, 29)]
    loss = running_loss(name)
    for output, prior, mask in batches[:2]:
        loss(output, prior, mask)
    state = loss.state_dict()
    restored = running_loss(name)
    restored.load_state_dict(state)
    assert torch.equal(restored.running_mean, loss.running_mean)
    assert torch.equal(restored.num_batches_tracked, loss.num_batches_tracked)
    output, prior, mask = batches[2]
    for mode in (False, True):  # eval, then training (which updates both the same way)
        loss.train(mode)
        restored.train(mode)
        assert torch.equal(restored(output, prior, mask), loss(output, prior, mask))
        assert torch.equal(restored.running_mean, loss.running_mean)
    # A checkpoint for another number of classes is the usual load error.
    with pytest.raises(RuntimeError, match="size mismatch for running_mean"):
        build_loss(name, denominator="running", num_classes=C + 1).load_state_dict(state)


@pytest.mark.parametrize("name", ["qr", "rq"])
def test_global_denominator_without_process_group_is_batch(name: str) -> None:
    assert not dist.is_initialized()
    output, prior, mask = make_inputs("image", seed=15)
    batch = run_loss(build_loss(name), output, prior, mask)
    glob = run_loss(build_loss(name, denominator="global"), output, prior, mask)
    assert torch.equal(batch[0], glob[0])
    assert torch.equal(batch[1], glob[1])


# ------------------------------------------------------------------------------------------
# Real 2-process gloo groups (fork; hard timeout)
# ------------------------------------------------------------------------------------------

WORLD = 2
FEATURES = 3
RANK_BATCH = SHAPES["image"][0]
#: Wall-clock limit of a multi-process test (the children are killed after it).
RANKS_TIMEOUT_S = 60.0

#: One rank's batch: network input features (B, FEATURES, H, W), prior and mask.
Batch = tuple[Tensor, Tensor, Tensor]


def _rank_main(
    fn: Callable[[int, int, Any], Any], rank: int, world: int, out_dir: Path, payload: Any
) -> None:
    """Child process: join the gloo group, run fn, save its result (or the traceback)."""
    try:
        torch.set_num_threads(1)
        dist.init_process_group(
            "gloo",
            init_method=f"file://{out_dir / 'store'}",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=RANKS_TIMEOUT_S / 2),
        )
        try:
            result = fn(rank, world, payload)
        finally:
            dist.destroy_process_group()
        torch.save(result, out_dir / f"rank{rank}.pt")
    except BaseException:
        (out_dir / f"rank{rank}.err").write_text(traceback.format_exc())
        raise


def run_ranks(fn: Callable[[int, int, Any], Any], payload: Any, out_dir: Path) -> list[Any]:
    """Run ``fn(rank, world, payload)`` in WORLD forked processes of a gloo group.

    Returns each rank's result. Fails the test (after killing the children) if any child is
    still running after RANKS_TIMEOUT_S or exits with an error. The group's rendezvous is a file
    store in the test's own tmp_path, so concurrent tests cannot collide.
    """
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("the fork start method is not available")
    # fork, not spawn: the children need not import torch again (slow on a busy machine).
    ctx = mp.get_context("fork")
    procs = [
        ctx.Process(target=_rank_main, args=(fn, rank, WORLD, out_dir, payload), daemon=True)
        for rank in range(WORLD)
    ]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + RANKS_TIMEOUT_S
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    hung = [rank for rank, proc in enumerate(procs) if proc.is_alive()]
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    if hung:
        pytest.fail(f"rank(s) {hung} still running after {RANKS_TIMEOUT_S:.0f} s; killed them")
    for rank, proc in enumerate(procs):
        if proc.exitcode != 0:
            err = out_dir / f"rank{rank}.err"
            detail = err.read_text() if err.exists() else "(no traceback)"
            pytest.fail(f"rank {rank} exited with code {proc.exitcode}:\n{detail}")
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD)]


def make_params(seed: int) -> tuple[Tensor, Tensor]:
    """A tiny model's parameters: a weight shared by all pixels and per-pixel offsets for the
    batches of all ranks (each rank uses its own slice, like its own part of a network)."""
    g = torch.Generator().manual_seed(seed)
    height, width = SHAPES["image"][2:]
    weight = torch.randn(FEATURES, C, generator=g, dtype=F64)
    offsets = torch.randn(WORLD * RANK_BATCH, C, height, width, generator=g, dtype=F64)
    return weight, offsets


def make_rank_batch(seed: int, num_masked: int) -> Batch:
    """Features, prior (with zeros) and a mask with `num_masked` nodata pixels (prior all 0)."""
    _, prior, _ = make_inputs("image", prior_kind="zeros", seed=seed)
    g = torch.Generator().manual_seed(seed + 1000)
    height, width = SHAPES["image"][2:]
    feats = torch.randn(RANK_BATCH, FEATURES, height, width, generator=g, dtype=F64)
    mask = torch.ones(RANK_BATCH, height, width, dtype=torch.bool)
    mask.view(-1)[torch.randperm(mask.numel(), generator=g)[:num_masked]] = False
    prior = torch.where(mask.unsqueeze(1), prior, 0.0)
    return feats, prior, mask


def model_logits(weight: Tensor, offsets: Tensor, feats: Tensor, start: int) -> Tensor:
    return torch.einsum("bfhw,fc->bchw", feats, weight) + offsets[start : start + len(feats)]


def concat(batches: list[Batch]) -> Batch:
    feats, priors, masks = zip(*batches, strict=True)
    return torch.cat(feats), torch.cat(priors), torch.cat(masks)


def train_steps(
    loss: torch.nn.Module, params: tuple[Tensor, Tensor], steps: Iterable[Batch], start: int
) -> list[dict[str, Tensor]]:
    """Per step: loss value, parameter gradients (averaged over ranks as DDP does, when a
    process group exists) and the loss's buffers afterwards."""
    weight, offsets = (p.clone().requires_grad_(True) for p in params)
    records = []
    for feats, prior, mask in steps:
        value = loss(model_logits(weight, offsets, feats, start), prior, mask)
        grads = torch.autograd.grad(value, [weight, offsets])
        if dist.is_initialized():
            for grad in grads:
                dist.all_reduce(grad)
                grad /= dist.get_world_size()
        record = {"value": value.detach(), "weight": grads[0], "offsets": grads[1]}
        record.update({k: v.clone() for k, v in loss.state_dict().items()})
        records.append(record)
    return records


def _global_worker(rank: int, world: int, payload: Any) -> dict[str, Any]:
    params, steps = payload
    local = [step[rank] for step in steps]
    return {
        name: train_steps(build_loss(name, denominator="global"), params, local, rank * RANK_BATCH)
        for name in ("qr", "rq")
    }


def test_global_denominator_with_two_gloo_ranks_equals_one_process(tmp_path: Path) -> None:
    params = make_params(30)
    # Unequal nodata: half of rank 0's pixels, 2 of rank 1's; then a step with no valid pixel.
    steps = [
        [make_rank_batch(31, num_masked=12), make_rank_batch(32, num_masked=2)],
        [make_rank_batch(33, num_masked=24), make_rank_batch(34, num_masked=24)],
    ]
    results = run_ranks(_global_worker, (params, steps), tmp_path)

    for name in ("qr", "rq"):
        # One process on the concatenated batches (no process group: "global" is "batch").
        single = train_steps(build_loss(name, denominator="global"), params, map(concat, steps), 0)
        # ... which is also the independent reference.
        feats, prior, mask = concat(steps[0])
        weight, offsets = (p.clone().requires_grad_(True) for p in params)
        q = ref_q(model_logits(weight, offsets, feats, 0), "logits", 1e-4)
        ref_value = ref_loss(name, q, ref_p(prior, 1e-4), mask.reshape(-1))
        ref_grads = torch.autograd.grad(ref_value, [weight, offsets])
        assert_close(single[0]["value"], ref_value.detach())
        assert_close(single[0]["weight"], ref_grads[0])
        assert_close(single[0]["offsets"], ref_grads[1])
        assert single[1]["value"].item() == 0 and (single[1]["offsets"] == 0).all()
        for rank in range(WORLD):
            for got, expected in zip(results[rank][name], single, strict=True):
                for key in ("value", "weight", "offsets"):
                    assert_close(got[key], expected[key], tol=1e-9)


def _running_worker(rank: int, world: int, payload: Any) -> list[dict[str, Tensor]]:
    params, steps, m = payload
    return train_steps(
        running_loss("qr", m), params, [step[rank] for step in steps], rank * RANK_BATCH
    )


def test_running_denominator_with_two_gloo_ranks(tmp_path: Path) -> None:
    m = 0.3
    params = make_params(40)
    # Different local batches per rank and step; at step 2 rank 1 has no valid pixel at all.
    nodata = [(12, 2), (3, 24), (0, 7)]
    steps = [
        [make_rank_batch(41 + 2 * s + r, num_masked=n) for r, n in enumerate(counts)]
        for s, counts in enumerate(nodata)
    ]
    results = run_ranks(_running_worker, (params, steps, m), tmp_path)

    # EMA of the global batch means, computed directly.
    ema = None
    for step, batches in enumerate(steps):
        feats, _, mask = concat(batches)
        batch_mean = valid_q_mean(model_logits(*params, feats, 0).detach(), mask)
        ema = batch_mean if ema is None else (1 - m) * ema + m * batch_mean
        for rank in range(WORLD):
            record = results[rank][step]
            assert torch.equal(record["running_mean"], results[0][step]["running_mean"])
            assert_close(record["running_mean"], ema)
            assert record["num_batches_tracked"].item() == step + 1

    # Values and averaged gradients equal one process on the concatenated batches.
    single = train_steps(running_loss("qr", m), params, [concat(b) for b in steps], 0)
    for rank in range(WORLD):
        for got, expected in zip(results[rank], single, strict=True):
            for key in ("value", "weight", "offsets"):
                assert_close(got[key], expected[key], tol=1e-9)


# ------------------------------------------------------------------------------------------
# Shared formula functions
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [1e-4, 0.0])
@pytest.mark.parametrize("input_type", ["logits", "log_probs"])
def test_log_probs(input_type: str, smoothing: float) -> None:
    output, _, _ = make_inputs("image", input_type, seed=17)
    log_q = log_probs(output, input_type, smoothing)
    assert log_q.shape == output.shape
    assert_close(to_pixels(log_q), torch.log(ref_q(output, input_type, smoothing)))
    assert_close(torch.logsumexp(log_q, dim=1), torch.zeros(2, 4, 3, dtype=F64))


def test_log_prior_zeros_without_smoothing() -> None:
    _, prior, _ = make_inputs("image", prior_kind="zeros", seed=18)
    p = prior.clone().requires_grad_(True)
    log_p = log_prior(p, 0.0)
    assert torch.equal(torch.isneginf(log_p), prior == 0)
    assert not torch.isnan(log_p).any()
    torch.where(prior > 0, log_p, 0.0).sum().backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()
    assert_close(to_pixels(log_prior(prior, 1e-4)), torch.log(ref_p(prior, 1e-4)))
    onehot = F.one_hot(torch.tensor([0, 2]), 3)  # integer priors are accepted
    assert torch.equal(log_prior(onehot, 0.0).exp(), onehot.float())


@pytest.mark.parametrize("shape", ["flat", "image"])
def test_log_denominator(shape: str) -> None:
    output, _, mask = make_inputs(shape, seed=19)
    log_q = torch.log_softmax(output, dim=1)
    q = to_pixels(log_q.exp())
    assert_close(log_denominator(log_q, mask), torch.log(q[mask.reshape(-1)].mean(dim=0)))
    assert_close(log_denominator(log_q), torch.log(q.mean(dim=0)))
    x = log_q.clone().requires_grad_(True)
    empty = log_denominator(x, torch.zeros_like(mask))
    assert torch.equal(empty, torch.zeros(C, dtype=F64))
    empty.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_implied_posterior_by_windows_matches_whole_tile() -> None:
    g = torch.Generator().manual_seed(20)
    log_q = torch.log_softmax(torch.randn(1, C, 8, 8, generator=g, dtype=F64), dim=1)
    prior = torch.softmax(torch.randn(1, C, 8, 8, generator=g, dtype=F64), dim=1)
    log_p = torch.log(prior)
    mask = torch.rand(1, 8, 8, generator=g) > 0.2
    log_d = log_denominator(log_q, mask)
    whole = implied_posterior(log_q, log_p, log_d)
    q = to_pixels(log_q.exp())
    expected = ref_r(q, to_pixels(prior), q[mask.reshape(-1)].sum(dim=0))
    assert_close(to_pixels(whole.exp()), expected)
    for rows in (slice(0, 5), slice(3, 8)):
        for cols in (slice(0, 4), slice(4, 8)):
            window = implied_posterior(log_q[..., rows, cols], log_p[..., rows, cols], log_d)
            assert_close(window, whole[..., rows, cols])
    flat = implied_posterior(to_pixels(log_q), to_pixels(log_p), log_d)  # (N, C) too
    assert_close(flat.exp(), expected)


# ------------------------------------------------------------------------------------------
# Registry and argument errors
# ------------------------------------------------------------------------------------------


def test_registry() -> None:
    assert list(LOSSES) == [*NAMES, "hr", "lsr"]  # hr, lsr: tests/losses/test_lsr.py and below
    expected = [QRLoss, QRFreeEnergyLoss, RQLoss, SoftNaiveLoss, HardNaiveLoss, NLLUnionLoss]
    for name, cls in zip(NAMES, expected, strict=True):
        loss = build_loss(name, smoothing=0.01, input_type="log_probs")
        assert type(loss) is cls
        assert loss.smoothing == 0.01 and loss.input_type == "log_probs"
    qr = build_loss("qr", denominator="running", momentum=0.5, num_classes=C)
    assert qr.denominator == "running" and qr.momentum == 0.5
    assert "denominator='running'" in repr(qr)


def test_build_loss_errors() -> None:
    with pytest.raises(ConfigError) as info:
        build_loss("foo")
    assert str(info.value) == (
        "unknown loss 'foo'; choose one of "
        "['qr', 'qr_free_energy', 'rq', 'soft_naive', 'hard_naive', 'nll_union', 'hr', 'lsr']"
    )
    with pytest.raises(ConfigError, match="unknown denominator 'tile'; choose one of"):
        build_loss("qr", denominator="tile")
    with pytest.raises(ConfigError, match="unknown input_type 'probs'; choose one of"):
        build_loss("rq", input_type="probs")
    with pytest.raises(ConfigError, match="does not take argument"):
        build_loss("soft_naive", denominator="batch")
    with pytest.raises(ConfigError, match="smoothing"):
        build_loss("nll_union", smoothing=-1e-4)
    with pytest.raises(ConfigError, match="momentum"):
        build_loss("qr", denominator="running", momentum=0.0)
    with pytest.raises(ConfigError, match="input_type"):
        log_probs(torch.zeros(2, 3), "probs", 0.0)  # type: ignore[arg-type]


def test_shape_errors() -> None:
    output, prior, mask = make_inputs("image", seed=21)
    loss = QRLoss()
    with pytest.raises(ValueError, match="prior shape"):
        loss(output, prior[:, :3], mask)
    with pytest.raises(ValueError, match="mask shape"):
        loss(output, prior, mask[0])
    with pytest.raises(ValueError, match="class axis"):
        loss(output.reshape(-1), prior.reshape(-1))


def test_smoothing_keeps_log_space_finite_for_extreme_logits() -> None:
    output, prior, mask = make_inputs("flat", prior_kind="onehot", seed=22)
    output = output * 1e4  # softmax underflows to exact zeros
    for name in NAMES:
        value, grad = run_loss(build_loss(name), output, prior, mask)
        assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert math.isfinite(QRLoss()(output.float(), prior.float(), mask).item())


# ------------------------------------------------------------------------------------------
# High-res supervised loss
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("input_type", ["logits", "log_probs"])
def test_hr_loss_is_cross_entropy_on_labels(input_type: str) -> None:
    output, _, mask = make_inputs("image", input_type, seed=23)
    g = torch.Generator().manual_seed(23)
    label = torch.randint(0, C, mask.shape, generator=g)
    label[0, 0] = IGNORE_INDEX
    target = torch.where(mask, label, IGNORE_INDEX)
    x = output.clone().requires_grad_(True)
    log_q = torch.log_softmax(x, dim=1) if input_type == "logits" else x
    ce = F.nll_loss(log_q, target, ignore_index=IGNORE_INDEX)
    (ce_grad,) = torch.autograd.grad(ce, x)
    loss = build_loss("hr", input_type=input_type)
    assert isinstance(loss, HighResLoss) and loss.needs == Needs.LABEL
    value, grad = run_loss(loss, output, label, mask)
    assert_close(value, ce.detach())
    assert_close(grad, ce_grad)
    none = loss(x, torch.full_like(label, IGNORE_INDEX), mask)
    assert none.item() == 0.0 and none.grad_fn is not None
