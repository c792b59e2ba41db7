import pytest
import torch
from torchgeo.models import FCN as TorchGeoFCN

from lcip.errors import ConfigError
from lcip.training.models import FCN, UNet, load_state_from_checkpoint


def test_default_fcn_is_torchgeo_fcn_architecture() -> None:
    ours = FCN(4, 5, num_filters=128)
    ref = TorchGeoFCN(4, 5, num_filters=128)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    ours.load_state_dict(ref.state_dict())  # same layer names and shapes
    x = torch.randn(2, 4, 24, 20)
    torch.testing.assert_close(ours(x), ref(x))
    assert ours.receptive_field == 11


def test_configurable_depth_widths_kernels() -> None:
    net = FCN(21, 4, num_filters=[16, 8, 8], kernel_sizes=[11, 7, 5])
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs] == [11, 7, 5, 1]
    assert [c.out_channels for c in convs] == [16, 8, 8, 4]
    assert net(torch.randn(1, 21, 33, 30)).shape == (1, 4, 33, 30)
    assert net.receptive_field == 21
    assert (
        len([m for m in FCN(3, 2, num_layers=2).modules() if isinstance(m, torch.nn.Conv2d)]) == 3
    )
    with pytest.raises(ValueError, match="odd"):
        FCN(3, 2, kernel_sizes=4)
    with pytest.raises(ValueError, match="different lengths"):
        FCN(3, 2, num_filters=[4, 4], kernel_sizes=[3, 3, 3])


def test_warm_start_from_checkpoint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = FCN(4, 3, num_filters=8)
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "a.ckpt"
    )
    dst = FCN(4, 3, num_filters=8)
    load_state_from_checkpoint(dst, str(tmp_path / "a.ckpt"))
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(dst(x), src(x))
    with pytest.raises(ConfigError, match="weights do not fit"):
        load_state_from_checkpoint(FCN(4, 3, num_filters=16), str(tmp_path / "a.ckpt"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_state_from_checkpoint(dst, str(tmp_path / "none.ckpt"))


def test_optional_batch_norm() -> None:
    net = FCN(4, 3, num_filters=8, num_layers=2, batch_norm=True)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 2
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in FCN(4, 3, num_filters=8).modules())
    assert net(torch.randn(2, 4, 16, 16)).shape == (2, 3, 16, 16)


def test_unet_logits_like_fcn_for_any_size() -> None:
    torch.manual_seed(0)
    net = UNet(9, 5, encoder_depth=3, decoder_channels=[16, 8, 8]).eval()
    x = torch.randn(2, 9, 64, 40)
    out = net(x)
    assert out.shape == (2, 5, 64, 40)
    # not a multiple of 8 (2 ** depth): zero-padded, then cropped back
    odd = torch.randn(1, 9, 33, 45)
    assert net(odd).shape == (1, 5, 33, 45)
    padded = torch.nn.functional.pad(odd, (0, 3, 0, 7))
    assert torch.allclose(net(odd), net.net(padded)[..., :33, :45], atol=1e-6)
    assert torch.equal(net(x), net.net(x))  # multiples pass through untouched
    assert net.receptive_field == 4 * 8 + 1
    default = UNet(4, 4)
    assert default.stride == 32 and default.net.name == "u-resnet18"
    with pytest.raises(ConfigError, match="encoder_depth"):
        UNet(4, 4, encoder_depth=7)
    with pytest.raises(ConfigError, match="decoder_channels"):
        UNet(4, 4, encoder_depth=3, decoder_channels=[8, 8])
    with pytest.raises(ConfigError, match=r"model\.encoder_name=nonet"):
        UNet(4, 4, encoder_name="nonet")


@pytest.mark.parametrize("kind", ["fcn", "unet"])
def test_task_warm_start_for_every_model(kind: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lcip.training.tasks import ImplicitPosteriorTask

    def make() -> torch.nn.Module:
        if kind == "fcn":
            return FCN(4, 4, num_filters=4, num_layers=2)
        return UNet(4, 4, encoder_depth=3, decoder_channels=[8, 8, 8])

    torch.manual_seed(1)
    src = ImplicitPosteriorTask(make(), 4, loss="hr")
    torch.save({"state_dict": src.state_dict()}, tmp_path / "src.ckpt")
    torch.manual_seed(2)
    dst = ImplicitPosteriorTask(make(), 4, loss="qr", init_from=str(tmp_path / "src.ckpt"))
    assert dst.warmup_steps == 0  # warm-started QR needs no CE warm-up
    for (k, a), b in zip(
        src.model.state_dict().items(), dst.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
