import torch

from sppnet.models.backbones import ZF5
from sppnet.models.classifier import SPPClassifier


def test_zf5_conv5_sizes_match_the_paper():
    trunk = ZF5(width=0.125)
    # 224 -> 13 x 13 (the paper's table); 180 -> 10 x 10 (multi-size training)
    assert trunk(torch.zeros(1, 3, 224, 224)).shape[2:] == (13, 13)
    assert trunk(torch.zeros(1, 3, 180, 180)).shape[2:] == (10, 10)
    assert ZF5().out_channels == 256 and trunk.out_channels == 32


def test_classifier_accepts_any_size_with_the_same_weights():
    torch.manual_seed(0)
    model = SPPClassifier(ZF5(width=0.125), num_classes=5, hidden=32).eval()
    for size in [(48, 48), (64, 200), (224, 224), (37, 91)]:
        assert model(torch.randn(2, 3, *size)).shape == (2, 5)


def test_padded_batch_equals_one_image_at_a_time():
    torch.manual_seed(0)
    model = SPPClassifier(ZF5(width=0.125), num_classes=3, hidden=16).eval()
    small, large = torch.randn(1, 3, 64, 80), torch.randn(1, 3, 96, 96)
    maps = [model.trunk(small), model.trunk(large)]
    padded = torch.zeros(2, model.trunk.out_channels, *maps[1].shape[2:])
    padded[0, :, : maps[0].shape[2], : maps[0].shape[3]] = maps[0][0]
    padded[1] = maps[1][0]
    sizes = torch.tensor([list(maps[0].shape[2:]), list(maps[1].shape[2:])])
    pooled = model.spp(padded, sizes)
    expected = torch.cat([model.spp(m) for m in maps])
    assert torch.equal(pooled, expected)
