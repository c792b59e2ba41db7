"""Each loss declares what it needs from a batch, and apply_loss calls it with just that."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import Tensor

from lcip.losses import LOSSES, HighResLoss, LSRLoss, Needs, apply_loss, build_loss


def _batch() -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 4, (2, 6, 6), generator=g)
    valid = torch.ones(2, 6, 6, dtype=torch.bool)
    valid[1, :3] = False
    return {
        "image": torch.rand(2, 3, 6, 6, generator=g),
        "prior": torch.full((2, 4, 6, 6), 0.25),  # a prior that says nothing
        "label": label,
        "valid": valid,
    }


def test_every_loss_declares_what_it_needs() -> None:
    needs = {name: cls.needs for name, cls in LOSSES.items()}
    assert needs == {
        "qr": Needs.PRIOR,
        "qr_free_energy": Needs.PRIOR,
        "rq": Needs.PRIOR,
        "soft_naive": Needs.PRIOR,
        "hard_naive": Needs.PRIOR,
        "nll_union": Needs.PRIOR,
        "hr": Needs.LABEL,
        "lsr": Needs.NLCD_BLOCKS,
    }
    assert not hasattr(HighResLoss, "target") and not hasattr(LSRLoss, "target")


def test_apply_loss_passes_each_loss_what_it_compares_to() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 6, 6, generator=g)
    batch = _batch()
    label, valid = batch["label"], batch["valid"]
    onehot = torch.nn.functional.one_hot(label, 4).permute(0, 3, 1, 2).float()
    hr = apply_loss(build_loss("hr"), logits, batch)
    # the labels of the valid pixels only, not the (uninformative) prior
    expected = torch.nn.functional.cross_entropy(
        logits, torch.where(valid, label, 255), ignore_index=255
    )
    assert torch.allclose(hr, expected)
    assert not torch.allclose(hr, torch.nn.functional.cross_entropy(logits, label))
    naive = apply_loss(build_loss("hard_naive", smoothing=0.0), logits, {**batch, "prior": onehot})
    assert torch.allclose(naive, hr)
    eta, rho2 = torch.full((4, 17), 0.25), torch.full((4, 17), 0.01)
    lsr = build_loss("lsr", eta=eta, rho2=rho2)
    blocks = {"nlcd": torch.full((2, 6, 6), 5), "block": torch.zeros(2, 6, 6, dtype=torch.long)}
    value = apply_loss(lsr, logits, {**batch, **blocks})
    assert torch.allclose(value, lsr(logits, None, valid, blocks["nlcd"], blocks["block"]))
    assert not torch.allclose(value, lsr(logits, None, None, blocks["nlcd"], blocks["block"]))
    with pytest.raises(KeyError, match="nlcd"):
        apply_loss(lsr, logits, batch)  # a batch without NLCD blocks
    with pytest.raises(KeyError, match="valid"):
        apply_loss(build_loss("qr"), logits, {"prior": batch["prior"], "mask": valid})


def test_apply_loss_calls_any_loss_that_declares_its_needs() -> None:
    """A loss outside the registry (no lcip base class) only needs ``needs`` and the call."""
    calls: list[tuple[Tensor, Tensor | None, Tensor | None, dict[str, Tensor]]] = []

    class LabelsAndBlocks:
        needs: ClassVar[Needs] = Needs.LABEL | Needs.NLCD_BLOCKS

        def __call__(
            self,
            output: Tensor,
            target: Tensor | None,
            valid: Tensor | None = None,
            **blocks: Tensor,
        ) -> Tensor:
            calls.append((output, target, valid, blocks))
            return output.sum()

    batch = {**_batch(), "nlcd": torch.ones(2, 6, 6), "block": torch.zeros(2, 6, 6)}
    logits = torch.zeros(2, 4, 6, 6)
    apply_loss(LabelsAndBlocks(), logits, batch)
    (output, target, valid, blocks) = calls[0]
    assert output is logits and target is batch["label"] and valid is batch["valid"]
    assert blocks.keys() == {"nlcd", "block"} and blocks["nlcd"] is batch["nlcd"]
