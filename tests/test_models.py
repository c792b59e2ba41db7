import pytest
import torch
from torchgeo.models import FCN as TorchGeoFCN

from lcip.errors import ConfigError
from lcip.models import FCN, load_state_from_checkpoint


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
