"""torchvision conv trunks (AlexNet, VGG16, ResNet-18/50) as SPP backbones.

Shapes: N images, 3 x H x W in (normalised with ``imagenet_normalization()``),
N x C x h x w out.

=========  ====  ======  ======  ===============================
name       C     stride  offset  trunk
=========  ====  ======  ======  ===============================
alexnet    256   16      15      ``features`` minus the last max-pool
vgg16      512   16      7.5     ``features`` minus the last max-pool
resnet18   512   32      0       conv1 .. layer4
resnet50   2048  32      0       conv1 .. layer4
=========  ====  ======  ======  ===============================

The last max-pool of AlexNet and VGG16 is dropped because the SPP layer
replaces it (as Fast R-CNN's RoI pooling does); ResNets lose their global
average pool and fc. Models are built with ``weights=None``: nothing is ever
downloaded. Pretrained weights come from a local file, either a torchvision
state_dict saved with ``torch.save`` or a ``.safetensors`` file, for the full
torchvision model or for the trunk alone (``TorchvisionTrunk.state_dict()``),
checked strictly.

``feature_geometry`` cannot walk residual blocks, so ``residual_geometry``
follows a ResNet's main path (stem conv, max-pool, then each block's convs in
order) and checks that every shortcut lands on the same cells.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from sppnet.ops.geometry import FeatureGeometry, feature_geometry

__all__ = [
    "TORCHVISION_TRUNKS",
    "TorchvisionTrunk",
    "imagenet_normalization",
    "load_weights_file",
    "read_weights_file",
    "residual_geometry",
]

TORCHVISION_TRUNKS = ("alexnet", "vgg16", "resnet18", "resnet50")
_OUT_CHANNELS = {"alexnet": 256, "vgg16": 512, "resnet18": 512, "resnet50": 2048}
_RESNET_PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def imagenet_normalization() -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) per RGB channel for images in [0, 1], the constants every
    torchvision ImageNet model was trained with."""
    return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from a local file: ``.safetensors`` or a ``torch.save``d
    dict of tensors (read with ``weights_only=True``; a checkpoint holding it
    under ``"state_dict"`` or ``"model"`` is unwrapped).

    Raises ``FileNotFoundError`` naming a missing path and ``ValueError``
    naming a file that cannot be read or holds no state_dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ImportError as error:  # pragma: no cover - depends on the environment
                raise ValueError(
                    f"cannot read {path}: reading .safetensors files needs the 'safetensors' package"
                ) from error
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ValueError:
        raise
    except Exception as error:  # corrupt, truncated or not a weights file at all
        raise ValueError(f"cannot read weights file {path}: {type(error).__name__}: {error}") from error
    if isinstance(state, Mapping) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"weights file {path} does not hold a state_dict (a mapping of names to tensors)")
    return dict(state)


def _key_report(expected: set[str], found: set[str], limit: int = 8) -> str:
    def listing(keys: set[str]) -> str:
        ordered = sorted(keys)
        more = f", ... ({len(ordered) - limit} more)" if len(ordered) > limit else ""
        return ", ".join(ordered[:limit]) + more

    parts = []
    if expected - found:
        parts.append(f"missing keys: {listing(expected - found)}")
    if found - expected:
        parts.append(f"unexpected keys: {listing(found - expected)}")
    return "; ".join(parts)


def load_weights_file(module: nn.Module, path: str | Path, what: str | None = None) -> None:
    """Load a local weights file into ``module`` strictly: every key present,
    none extra, every shape equal; otherwise ``ValueError`` naming the file
    and the missing, unexpected or mis-shaped keys."""
    _load_state(module, read_weights_file(path), Path(path), what or type(module).__name__)


def _load_state(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path, what: str) -> None:
    expected = module.state_dict()
    report = _key_report(set(expected), set(state))
    if report:
        raise ValueError(f"weights file {path} does not match {what}: {report}")
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        listing = ", ".join(wrong[:8]) + (f", ... ({len(wrong) - 8} more)" if len(wrong) > 8 else "")
        raise ValueError(f"weights file {path} does not match {what}: wrong shapes: {listing}")
    module.load_state_dict(state, strict=True)


def _block_paths(block: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """(main path, shortcut path) of a torchvision residual block, in order."""
    from torchvision.models.resnet import BasicBlock, Bottleneck  # on first use: see sppnet.ops.boxes

    if isinstance(block, BasicBlock):
        main = [block.conv1, block.conv2]
    elif isinstance(block, Bottleneck):
        main = [block.conv1, block.conv2, block.conv3]
    else:
        raise ValueError(f"cannot derive feature geometry through {type(block).__name__}")
    shortcut = [block.downsample] if block.downsample is not None else []
    return main, shortcut


def residual_geometry(trunk: nn.Module) -> FeatureGeometry:
    """Stride, centre offset and receptive field of a torchvision ResNet trunk
    (``conv1, bn1, relu, maxpool, layer1 .. layer4`` as named children, or a
    ResNet itself; avgpool/fc are ignored).

    Walks the main path: the stem conv and max-pool, then every block's convs
    in order (torchvision's v1.5 blocks stride in the 3x3 conv). Each block's
    shortcut (identity or strided 1x1 conv) must put its cells where the main
    path does, else ``ValueError``; the receptive field is the main path's,
    the larger of the two."""
    children = dict(trunk.named_children())
    missing = [name for name in _RESNET_PARTS if name not in children]
    if missing:
        raise ValueError(f"not a ResNet trunk: missing {missing}")
    layers: list[nn.Module] = [children["conv1"], children["maxpool"]]
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for block in children[stage]:
            main, shortcut = _block_paths(block)
            here = feature_geometry(layers)
            after_main = feature_geometry(layers + main)
            after_shortcut = feature_geometry(layers + shortcut)
            if (after_main.stride, after_main.offset) != (after_shortcut.stride, after_shortcut.offset):
                raise ValueError(
                    f"the shortcut of {stage} block moves cells differently from its main path "
                    f"(main: {after_main}, shortcut: {after_shortcut}, input: {here})"
                )
            layers += main
    return feature_geometry(layers)


def _build_torchvision(name: str) -> nn.Module:
    if name not in TORCHVISION_TRUNKS:
        raise ValueError(f"unknown torchvision trunk {name!r}; choose one of {TORCHVISION_TRUNKS}")
    import torchvision  # on first use: see sppnet.ops.boxes

    return getattr(torchvision.models, name)(weights=None)


class TorchvisionTrunk(nn.Module):
    """The conv trunk of a torchvision classifier: ``forward(images) -> maps``.

    Args:
        name: ``"alexnet"``, ``"vgg16"``, ``"resnet18"`` or ``"resnet50"``.
        weights_path: optional local weights file (``.safetensors`` or a
            ``torch.save``d state_dict) of the full torchvision model or of
            this trunk; loaded strictly. Without it the layers keep
            torchvision's random initialisation.

    Attributes: ``features`` (``nn.Sequential``), ``out_channels``,
    ``geometry`` (``FeatureGeometry``).
    """

    def __init__(self, name: str, weights_path: str | Path | None = None) -> None:
        super().__init__()
        model = _build_torchvision(name)
        self.name = name
        if name in ("alexnet", "vgg16"):
            if not isinstance(model.features[-1], nn.MaxPool2d):  # pragma: no cover - torchvision layout guard
                raise ValueError(f"unexpected torchvision {name}.features layout: last layer {model.features[-1]}")
            # Keep torchvision's indices, so the trunk's keys are the model's
            # "features.N..." keys.
            self.features = nn.Sequential()
            for index, layer in list(model.features.named_children())[:-1]:
                self.features.add_module(index, layer)
        else:
            self.features = nn.Sequential(*(getattr(model, part) for part in _RESNET_PARTS))
        if weights_path is not None:
            path = Path(weights_path)
            state = read_weights_file(path)
            # A trunk file (this module's state_dict) has only "features."
            # keys; no full torchvision model's state_dict is like that.
            if state and all(key.startswith("features.") for key in state):
                _load_state(self, state, path, f"the {name} trunk")
            else:
                _load_state(model, state, path, f"torchvision {name}")
        self.out_channels = _OUT_CHANNELS[name]
        if name in ("alexnet", "vgg16"):
            self.geometry: FeatureGeometry = feature_geometry(self.features)
        else:
            self.geometry = residual_geometry(model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: ``Tensor[N, 3, H, W]`` -> ``Tensor[N, out_channels, h, w]``."""
        return self.features(images)

    def extra_repr(self) -> str:
        g = self.geometry
        return f"name={self.name!r}, out_channels={self.out_channels}, stride={g.stride}, offset={g.offset}"
