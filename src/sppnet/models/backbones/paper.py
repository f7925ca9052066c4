"""The other conv trunks of the SPP-net paper's table (SPEC section 8):
Convnet*-5, Overfeat-5 and Overfeat-7. ZF-5 lives in ``zf5.py``.

Shapes: N images, 3 x H x W in, N x C x h x w out.

=============  ===  ======  ======  ==================
trunk          C    stride  offset  conv5/7 at 224
=============  ===  ======  ======  ==================
Convnet*-5     256  16      15      13 x 13
Overfeat-5     512  12      8       18 x 18
Overfeat-7     512  12      8       18 x 18
=============  ===  ======  ======  ==================

Convnet*-5 is Krizhevsky's net with the paper's change: the two pooling
layers sit after conv2 and conv3 instead of after conv1 and conv2, so every
map from conv2 on has ZF-5's size (55, 27, 13, 13, 13 at 224):

    conv1 96 11x11/4 pad 2, ReLU, LRN
    conv2 256 5x5 pad 2, ReLU, LRN, max-pool 3/2
    conv3 384 3x3 pad 1, ReLU, max-pool 3/2
    conv4 384 3x3 pad 1, ReLU
    conv5 256 3x3 pad 1, ReLU

Overfeat-5/7 follow Overfeat's accurate model with Zeiler & Fergus' changes
and give the larger 18 x 18 map before the last pooling layer (36 after
pool1), with 512 filters from conv3 on; Overfeat-7 repeats conv3 until conv7:

    conv1 96 7x7/2, ReLU, LRN, max-pool 3/3 (floor)
    conv2 256 5x5 pad 2, ReLU, LRN, max-pool 2/2
    conv3 .. conv5 (conv7) 512 3x3 pad 1, ReLU

The paper says only that "the padding is adjusted to produce the expected
output feature map size"; the paddings above are the ones that give its sizes
at 224. Pooling rounds up (ceil mode) as Caffe's does, except Overfeat's pool1,
which must round down: rounding up gives 37 instead of 36 for any conv1
padding. ``width`` scales every layer's channels for small CPU-sized variants.
"""

from __future__ import annotations

from torch import nn

from sppnet.models.backbones.base import PaperTrunk, channels_for, lrn

__all__ = ["Convnet5", "Overfeat5", "Overfeat7"]


class Convnet5(PaperTrunk):
    """Convnet*-5 conv trunk (AlexNet with pool after conv2 and conv3):
    ``forward(images) -> conv5 maps``, 13 x 13 at 224, stride 16."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = channels_for(width, (96, 256, 384, 384, 256))
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 11, stride=4, padding=2), nn.ReLU(inplace=True), lrn(),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(inplace=True), lrn(),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(inplace=True),
        )
        self._finish(width, c5)


class _Overfeat(PaperTrunk):
    def __init__(self, depth: int, width: float) -> None:
        super().__init__()
        c1, c2, c3 = channels_for(width, (96, 256, 512))
        layers: list[nn.Module] = [
            nn.Conv2d(3, c1, 7, stride=2), nn.ReLU(inplace=True), lrn(),
            nn.MaxPool2d(3, stride=3),  # floor: 109 -> 36 at 224 (ceil would give 37)
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(inplace=True), lrn(),
            nn.MaxPool2d(2, stride=2, ceil_mode=True),
        ]
        previous = c2
        for _ in range(depth - 2):  # conv3 .. conv{depth}
            layers += [nn.Conv2d(previous, c3, 3, padding=1), nn.ReLU(inplace=True)]
            previous = c3
        self.depth = depth
        self.features = nn.Sequential(*layers)
        self._finish(width, c3)


class Overfeat5(_Overfeat):
    """Overfeat-5 conv trunk: ``forward(images) -> conv5 maps``, 18 x 18 at
    224, stride 12."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__(5, width)


class Overfeat7(_Overfeat):
    """Overfeat-7 conv trunk (conv3 .. conv7 alike): ``forward(images) ->
    conv7 maps``, 18 x 18 at 224, stride 12."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__(7, width)
