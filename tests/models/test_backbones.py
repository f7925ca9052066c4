import copy

import pytest
import torch
import torchvision
from torch import nn

from sppnet.models.backbones.paper import Convnet5, Overfeat5, Overfeat7
from sppnet.models.backbones.registry import BACKBONES, build_backbone
from sppnet.models.backbones.torchvision_trunks import (
    TorchvisionTrunk,
    imagenet_normalization,
    read_weights_file,
    residual_geometry,
)


def _linear_copy(module: nn.Module) -> nn.Module:
    """One-channel linear copy of a trunk: convs with weights 1 and no bias,
    max pools as average pools of the same shape, pointwise layers dropped.
    Works through residual blocks (their forward only adds)."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d):
            conv = nn.Conv2d(1, 1, child.kernel_size, child.stride, child.padding, child.dilation, bias=False)
            nn.init.ones_(conv.weight)
            setattr(module, name, conv)
        elif isinstance(child, nn.MaxPool2d):
            setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
        elif isinstance(child, (nn.ReLU, nn.BatchNorm2d, nn.LocalResponseNorm)):
            setattr(module, name, nn.Identity())
        else:
            _linear_copy(child)
    return module


def receptive_field_by_gradient(features: nn.Module, image_size: int):
    """Independent reference: the input rows and columns that influence the
    central output cell, as (cell, (first, last) columns, (first, last) rows)."""
    probe = _linear_copy(copy.deepcopy(features)).double()
    image = torch.zeros(1, 1, image_size, image_size, dtype=torch.float64, requires_grad=True)
    out = probe(image)
    cell = out.shape[-1] // 2
    out[0, 0, cell, cell].backward()
    touched = image.grad[0, 0] != 0
    columns = touched.any(dim=0).nonzero().flatten()
    rows = touched.any(dim=1).nonzero().flatten()
    return cell, (columns.min().item(), columns.max().item()), (rows.min().item(), rows.max().item())


def check_geometry(trunk: nn.Module, image_size: int) -> None:
    geometry = trunk.geometry
    cell, (first, last), rows = receptive_field_by_gradient(trunk.features, image_size)
    assert rows == (first, last)
    assert 0 < first and last < image_size - 1, "the probe's receptive field must not touch the border"
    assert (first + last) / 2 == geometry.offset + geometry.stride * cell
    assert last - first + 1 == geometry.receptive_field


@pytest.mark.parametrize(
    "cls, size, stride, offset",
    [(Convnet5, 13, 16, 15.0), (Overfeat5, 18, 12, 8.0), (Overfeat7, 18, 12, 8.0)],
)
def test_paper_trunks_match_the_paper_table(cls, size, stride, offset):
    trunk = cls(width=0.05)
    assert trunk(torch.zeros(1, 3, 224, 224)).shape[2:] == (size, size)
    assert (trunk.geometry.stride, trunk.geometry.offset) == (stride, offset)
    check_geometry(trunk, 224)


def test_paper_trunks_channels_width_and_any_size():
    assert (Convnet5().out_channels, Overfeat5().out_channels, Overfeat7().out_channels) == (256, 512, 512)
    trunk = Overfeat7(width=0.05)
    assert trunk.out_channels == 26
    assert sum(isinstance(m, nn.Conv2d) for m in trunk.features) == 7
    assert sum(isinstance(m, nn.Conv2d) for m in Overfeat5(width=0.05).features) == 5
    assert trunk(torch.zeros(2, 3, 61, 97)).shape == (2, 26, 5, 8)
    assert "stride=12" in repr(trunk)
    with pytest.raises(ValueError, match="width"):
        Convnet5(width=0)


def test_resnet_geometry_walks_the_main_path():
    trunk = TorchvisionTrunk("resnet18")
    assert trunk.out_channels == 512
    assert (trunk.geometry.stride, trunk.geometry.offset) == (32, 0.0)
    check_geometry(trunk, 512)
    assert trunk(torch.zeros(1, 3, 64, 96)).shape == (1, 512, 2, 3)


def test_resnet50_trunk():
    trunk = TorchvisionTrunk("resnet50").eval()
    assert trunk.out_channels == 2048
    assert trunk.geometry.stride == 32
    assert trunk(torch.zeros(1, 3, 64, 64)).shape == (1, 2048, 2, 2)
    with pytest.raises(ValueError, match="not a ResNet trunk"):
        residual_geometry(nn.Sequential(nn.Conv2d(3, 3, 3)))


@pytest.mark.parametrize("name, channels, stride", [("alexnet", 256, 16), ("vgg16", 512, 16)])
def test_sequential_torchvision_trunks(name, channels, stride):
    trunk = TorchvisionTrunk(name)
    assert not isinstance(trunk.features[-1], nn.MaxPool2d)  # the SPP layer replaces it
    assert trunk.out_channels == channels and trunk.geometry.stride == stride
    check_geometry(trunk, 224)
    out = trunk(torch.zeros(1, 3, 64, 64))
    assert out.shape[:2] == (1, channels)


def _source_resnet18():
    torch.manual_seed(1)
    model = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():  # non-trivial BN statistics, so they must be loaded too
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


def _resnet_trunk_output(model, images):
    x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def test_local_weights_give_the_source_models_outputs(tmp_path):
    from safetensors.torch import save_file

    source = _source_resnet18()
    images = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        expected = _resnet_trunk_output(source, images)
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    save_file(source.state_dict(), tmp_path / "resnet18.safetensors")
    for path in (tmp_path / "resnet18.pth", str(tmp_path / "resnet18.safetensors")):
        torch.manual_seed(2)
        trunk = build_backbone("resnet18", weights=path).eval()
        with torch.no_grad():
            assert torch.equal(trunk(images), expected)
    # the trunk's own state_dict round-trips too
    save_file(trunk.state_dict(), tmp_path / "trunk.safetensors")
    again = TorchvisionTrunk("resnet18", tmp_path / "trunk.safetensors").eval()
    with torch.no_grad():
        assert torch.equal(again(images), expected)


def test_paper_trunk_weights_round_trip(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = build_backbone("overfeat5", width=0.05)
    save_file(source.state_dict(), tmp_path / "overfeat5.safetensors")
    torch.save(source.state_dict(), tmp_path / "overfeat5.pt")
    images = torch.randn(1, 3, 64, 64)
    for name in ("overfeat5.safetensors", "overfeat5.pt"):
        loaded = build_backbone("overfeat5", width=0.05, weights=tmp_path / name)
        assert torch.equal(loaded(images), source(images))
    with pytest.raises(ValueError, match=r"overfeat5\.pt.*wrong shapes: features\.0\.weight"):
        build_backbone("overfeat5", width=0.1, weights=tmp_path / "overfeat5.pt")
    with pytest.raises(ValueError, match=r"overfeat5\.pt.*missing keys: features\.14\.bias.*features\.16\.weight"):
        build_backbone("overfeat7", width=0.05, weights=tmp_path / "overfeat5.pt")


def test_mismatched_or_broken_weights_files_are_named(tmp_path):
    state = _source_resnet18().state_dict()
    missing = dict(state)
    del missing["layer4.1.conv2.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    message = r"missing\.pth.*torchvision resnet18.*missing keys: layer4\.1\.conv2\.weight"
    with pytest.raises(ValueError, match=message):
        TorchvisionTrunk("resnet18", tmp_path / "missing.pth")

    extra = dict(state, **{"head.weight": torch.zeros(3)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"extra\.pth.*unexpected keys: head\.weight"):
        TorchvisionTrunk("resnet18", tmp_path / "extra.pth")

    torch.save(state, tmp_path / "resnet18.pth")  # a resnet18 file for resnet50
    with pytest.raises(ValueError, match=r"resnet50: missing keys: .*layer1\.0\.conv3\.weight"):
        TorchvisionTrunk("resnet50", tmp_path / "resnet18.pth")

    raw = (tmp_path / "resnet18.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"cannot read weights file .*truncated\.pth"):
        TorchvisionTrunk("resnet18", tmp_path / "truncated.pth")
    (tmp_path / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(ValueError, match=r"cannot read weights file .*truncated\.safetensors"):
        read_weights_file(tmp_path / "truncated.safetensors")

    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list\.pth does not hold a state_dict"):
        read_weights_file(tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        build_backbone("resnet18", weights=tmp_path / "nowhere.pth")


def test_registry_names_and_errors():
    assert set(BACKBONES) == {"zf5", "zf5-bn", "convnet5", "overfeat5", "overfeat7", "alexnet", "vgg16", "resnet18",
                              "resnet50"}
    for name in ("zf5", "zf5-bn", "convnet5", "overfeat5", "overfeat7"):
        trunk = build_backbone(name, width=0.05)
        assert isinstance(trunk.features, nn.Sequential) and trunk.geometry.stride in (12, 16)
    assert isinstance(build_backbone("resnet18"), TorchvisionTrunk)
    with pytest.raises(ValueError, match=r"unknown backbone 'zf6'.*convnet5.*resnet50"):
        build_backbone("zf6")
    with pytest.raises(ValueError, match="width"):
        build_backbone("resnet18", width=0.5)
    mean, std = imagenet_normalization()
    assert len(mean) == len(std) == 3 and all(0 < s < 1 for s in std)


class _RunsCodeWhenUnpickled:
    """A pickle payload: unpickling it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_weights_file_with_code_in_it_is_refused_without_running_it(tmp_path):
    from sppnet.models.backbones.torchvision_trunks import read_weights_file

    marker = tmp_path / "code-ran"
    torch.save({"conv.weight": torch.zeros(1), "payload": _RunsCodeWhenUnpickled(marker)}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="evil.pth"):
        read_weights_file(tmp_path / "evil.pth")
    assert not marker.exists()


def test_zf5_bn_is_zf5_with_batch_norm_instead_of_lrn():
    plain, modern = build_backbone("zf5", width=0.25), build_backbone("zf5-bn", width=0.25)
    assert modern.geometry == plain.geometry and modern.out_channels == plain.out_channels
    convs = lambda trunk: [(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding)
                           for m in trunk.features if isinstance(m, nn.Conv2d)]
    assert convs(modern) == convs(plain)
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in modern.features)
    kinds = [type(m) for m in modern.features]
    for index, kind in enumerate(kinds):  # conv (no bias) -> BN -> ReLU, every time
        if kind is nn.Conv2d:
            assert modern.features[index].bias is None
            assert kinds[index + 1:index + 3] == [nn.BatchNorm2d, nn.ReLU]
    assert kinds.count(nn.BatchNorm2d) == 5
    # The layers do what a hand-built conv -> BN -> ReLU stack does (eval mode, random statistics).
    torch.manual_seed(0)
    for module in modern.features:
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    modern.eval()
    image = torch.randn(2, 3, 107, 93)
    reference = image
    for module in modern.features:
        if isinstance(module, nn.Conv2d):
            reference = nn.functional.conv2d(reference, module.weight, None, module.stride, module.padding)
        elif isinstance(module, nn.BatchNorm2d):
            scale = module.weight / (module.running_var + module.eps).sqrt()
            reference = (reference - module.running_mean[:, None, None]) * scale[:, None, None] + module.bias[:, None, None]
        elif isinstance(module, nn.ReLU):
            reference = reference.clamp_min(0)
        else:
            reference = nn.functional.max_pool2d(reference, 3, 2, ceil_mode=True)
    torch.testing.assert_close(modern(image), reference, rtol=1e-4, atol=1e-5)
