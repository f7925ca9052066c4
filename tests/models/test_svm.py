import math

import pytest
import torch

from sppnet.models.svm import (
    HardNegativeMiner,
    LinearSVMs,
    SVMConfig,
    feature_scale,
    svm_objective,
    train_linear_svms,
)

# every solve in these tests must reach its tolerance
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
LOSSES = ["hinge", "squared_hinge"]


def overlapping_data(n=300, d=12, k=3, seed=0, dtype=torch.float64):
    """ReLU features, one cluster per class plus background rows (not
    separable), scaled to mean norm 20; targets +1 for the row's class, -1
    elsewhere."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g)
    label = torch.randint(0, k + 1, (n,), generator=g)  # k = background
    shift = torch.where((label < k)[:, None], centers[label.clamp(max=k - 1)], torch.zeros(d))
    x = torch.relu(torch.randn(n, d, generator=g) + 1.2 * shift + 0.5)
    x = x * feature_scale(x)
    targets = -torch.ones(n, k, dtype=torch.int64)
    fg = (label < k).nonzero()[:, 0]
    targets[fg, label[fg]] = 1
    return x.to(dtype), targets


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("device", DEVICES)
def test_separable_toy_data_is_classified_perfectly(loss, device):
    g = torch.Generator().manual_seed(1)
    pos = torch.randn(40, 5, generator=g) * 0.3 + torch.tensor([2.0, 1.0, 0.0, 0.0, 0.0])
    neg = torch.randn(60, 5, generator=g) * 0.3 - torch.tensor([2.0, 1.0, 0.0, 0.0, 0.0])
    x = torch.cat([pos, neg])
    x = (x * feature_scale(x)).to(device)
    y = torch.cat([torch.ones(40), -torch.ones(60)]).long()[:, None]
    model = train_linear_svms(x, y, SVMConfig(loss=loss))
    scores = model.decision_function(x)
    assert scores.device.type == x.device.type and scores.dtype == x.dtype
    assert torch.equal(torch.sign(scores[:, 0]).long().cpu(), y[:, 0])


@pytest.mark.parametrize("loss", LOSSES)
def test_agrees_with_sklearn_linear_svc(loss):
    svm = pytest.importorskip("sklearn.svm")
    x, targets = overlapping_data()
    # tight: the hinge dual converges slowly on these few, correlated dimensions
    config = SVMConfig(loss=loss, tol=1e-7, max_iter=50_000)
    model = train_linear_svms(x, targets, config)
    for k in range(targets.shape[1]):
        ref = svm.LinearSVC(
            C=config.C, loss=loss, dual=True, fit_intercept=True, intercept_scaling=config.bias_feature,
            class_weight={1: config.positive_weight, -1: 1.0}, tol=1e-9, max_iter=1_000_000,
        ).fit(x.numpy(), targets[:, k].numpy())
        torch.testing.assert_close(model.weight[k], torch.from_numpy(ref.coef_[0]), atol=1e-5, rtol=0)
        torch.testing.assert_close(model.bias[k], torch.tensor(ref.intercept_[0], dtype=torch.float64), atol=1e-4, rtol=0)
        torch.testing.assert_close(
            model.decision_function(x)[:, k], torch.from_numpy(ref.decision_function(x.numpy())), atol=1e-4, rtol=0
        )


def test_bias_weight_is_regularised_like_liblinear():
    # One feature that is 0 everywhere: only the bias can separate, and its
    # weight v = b / B pays 0.5 * v^2, so a larger B makes the bias cheaper.
    x = torch.zeros(10, 1, dtype=torch.float64)
    y = torch.tensor([1] * 6 + [-1] * 4)[:, None]
    biases = [float(train_linear_svms(x, y, SVMConfig(bias_feature=b, C=1.0, tol=1e-9)).bias) for b in (0.1, 1.0, 10.0)]
    # hinge optimum: v = C * (6 * 2 - 4) * B while the positives violate the margin
    assert biases[0] == pytest.approx(0.1 * 0.1 * 8.0, rel=1e-6)
    assert biases[1] == pytest.approx(1.0, rel=1e-6)  # capped by the margin: b = 1
    assert biases[2] == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("loss", LOSSES)
def test_batched_classes_equal_separate_trainings(loss):
    x, targets = overlapping_data(k=4)
    targets[::3, 1] = 0  # classes use different rows
    targets[100:, 2] = 0
    config = SVMConfig(loss=loss)
    together = train_linear_svms(x, targets, config)
    for k in range(targets.shape[1]):
        alone = train_linear_svms(x, targets[:, k : k + 1], config)
        torch.testing.assert_close(alone.weight[0], together.weight[k], atol=1e-12, rtol=0)
        torch.testing.assert_close(alone.bias[0], together.bias[k], atol=1e-12, rtol=0)


@pytest.mark.parametrize("loss", LOSSES)
def test_solution_is_not_improved_by_small_perturbations(loss):
    x, targets = overlapping_data(seed=3)
    config = SVMConfig(loss=loss, tol=1e-9)
    model = train_linear_svms(x, targets, config)
    best = svm_objective(model, x, targets, config)
    g = torch.Generator().manual_seed(0)
    for scale in (1e-2, 1e-4):
        for _ in range(50):
            moved = LinearSVMs(
                model.weight + scale * torch.randn(model.weight.shape, generator=g, dtype=torch.float64),
                model.bias + scale * config.bias_feature * torch.randn(model.bias.shape, generator=g, dtype=torch.float64),
            )
            assert bool((svm_objective(moved, x, targets, config) >= best - 1e-12).all())


def test_ignored_targets_have_no_influence():
    x, targets = overlapping_data(n=200, k=2)
    base = train_linear_svms(x, targets)
    # wild rows that every class ignores, and rows that only class 1 uses
    wild = 50.0 * torch.randn(30, x.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ignored = torch.zeros(30, 2, dtype=torch.int64)
    more = train_linear_svms(torch.cat([x, wild]), torch.cat([targets, ignored]))
    assert torch.equal(more.weight, base.weight) and torch.equal(more.bias, base.bias)
    only_one = torch.cat([targets, torch.stack([torch.zeros(30), -torch.ones(30)], 1).long()])
    mixed = train_linear_svms(torch.cat([x, wild]), only_one)
    assert torch.equal(mixed.weight[0], base.weight[0]) and torch.equal(mixed.bias[0], base.bias[0])
    assert not torch.equal(mixed.weight[1], base.weight[1])


def test_class_with_no_rows_gets_the_zero_scorer():
    x, targets = overlapping_data(n=50, k=2)
    targets[:, 1] = 0
    model = train_linear_svms(x, targets)
    assert torch.count_nonzero(model.weight[1]) == 0 and float(model.bias[1]) == 0.0
    assert torch.count_nonzero(model.weight[0]) > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64_give_the_same_model(dtype):
    x, targets = overlapping_data()
    config = SVMConfig(tol=1e-6, max_iter=50_000)
    ref = train_linear_svms(x, targets, config)
    model = train_linear_svms(x.to(dtype), targets, config)
    assert model.weight.dtype == dtype and model.bias.dtype == dtype
    torch.testing.assert_close(model.decision_function(x.to(dtype)).double(), ref.decision_function(x), atol=1e-3, rtol=0)


def test_stopping_early_warns():
    x, targets = overlapping_data()
    with pytest.warns(RuntimeWarning, match="max_iter"):
        train_linear_svms(x, targets, SVMConfig(max_iter=1, tol=1e-9))


def test_invalid_inputs_raise():
    x, targets = overlapping_data(n=20)
    with pytest.raises(ValueError, match="targets"):
        train_linear_svms(x, targets * 2)
    with pytest.raises(ValueError, match="targets"):
        train_linear_svms(x, targets[:5])
    with pytest.raises(TypeError):
        train_linear_svms(x.half(), targets)
    bad = x.clone()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        train_linear_svms(bad, targets)
    for kwargs in ({"C": 0.0}, {"positive_weight": -1.0}, {"bias_feature": math.inf}, {"loss": "log"}, {"max_iter": 0}, {"tol": 0.0}):
        with pytest.raises(ValueError):
            SVMConfig(**kwargs)


def test_feature_scale_gives_mean_norm_20():
    x = torch.rand(100, 7) * torch.rand(100, 1) * 5
    scale = feature_scale(x)
    assert torch.linalg.vector_norm(x * scale, dim=1).mean().item() == pytest.approx(20.0, rel=1e-5)
    assert torch.linalg.vector_norm(x * feature_scale(x, 3.0), dim=1).mean().item() == pytest.approx(3.0, rel=1e-5)
    with pytest.raises(ValueError):
        feature_scale(torch.zeros(4, 3))
    with pytest.raises(ValueError):
        feature_scale(torch.zeros(0, 3))


def test_linear_svms_state_dict_round_trip(tmp_path):
    model = LinearSVMs(torch.randn(3, 5), torch.randn(3))
    assert set(model.state_dict()) == {"weight", "bias"}
    assert "num_classes=3, feature_dim=5" in repr(model)
    loaded = LinearSVMs.zeros(3, 5)
    loaded.load_state_dict(model.state_dict())
    x = torch.randn(4, 5)
    assert torch.equal(loaded.decision_function(x), model(x))
    torch.testing.assert_close(model.decision_function(x), x @ model.weight.T + model.bias)
    safetensors_torch = pytest.importorskip("safetensors.torch")
    safetensors_torch.save_file(model.state_dict(), tmp_path / "svms.safetensors")
    again = LinearSVMs.zeros(3, 5)
    again.load_state_dict(safetensors_torch.load_file(tmp_path / "svms.safetensors"))
    assert torch.equal(again.weight, model.weight)
    with pytest.raises(ValueError):
        model.decision_function(torch.randn(4, 6))


# -- hard negative mining ---------------------------------------------------------------------


def mining_problem(num_classes=2, dim=8, seed=0):
    """Positives around 24 * e_k; candidate rows are background noise plus a
    few rows pushed towards each class (hard negatives), kept on the negative
    side of a margin so the final problem is separable. Norms are about 20,
    as scaled features are."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.eye(dim)[:num_classes]
    positives = [8 * (axes[k] * 3 + 0.3 * torch.randn(15, dim, generator=g)) for k in range(num_classes)]

    def image(rows=40):
        x = 0.3 * torch.randn(rows, dim, generator=g)
        near = torch.randint(0, num_classes, (rows,), generator=g)
        pull = torch.rand(rows, generator=g) < 0.3
        x[pull] += axes[near[pull]] * 0.5
        return 8 * x, torch.ones(rows, num_classes, dtype=torch.bool)

    return positives, image


def check_cache_invariants(miner):
    model = miner.model
    for k in range(miner.num_classes):
        feats, keys = miner.cached_negatives(k)
        if feats.shape[0]:
            assert bool((model.decision_function(feats)[:, k] >= miner.evict_threshold - 1e-5).all())
        assert keys.unique(dim=0).shape[0] == keys.shape[0]  # no duplicates


def test_miner_first_image_adds_everything_and_trains_like_train_linear_svms():
    positives, image = mining_problem()
    miner = HardNegativeMiner(SVMConfig(), 8, 2, positives, retrain_after=10**6, evict_threshold=-math.inf)
    x, mask = image()
    mask[::4, 1] = False
    added = miner.add_image(x, mask)
    assert added.tolist() == mask.sum(0).tolist()
    assert miner.retrains.tolist() == [1, 1]
    # the same data through train_linear_svms: rows of class k are its
    # positives then its negatives, in the same order
    feats = torch.cat([positives[0], positives[1], x])
    targets = torch.zeros(feats.shape[0], 2, dtype=torch.int64)
    targets[:15, 0] = 1
    targets[15:30, 1] = 1
    targets[30:] = torch.where(mask, -1, 0)
    ref = train_linear_svms(feats, targets)
    assert torch.equal(miner.model.weight, ref.weight) and torch.equal(miner.model.bias, ref.bias)


def test_miner_retrains_exactly_when_the_count_passes_the_limit():
    positives, image = mining_problem(seed=2)
    miner = HardNegativeMiner(SVMConfig(), 8, 2, positives, retrain_after=12)
    for step in range(40):
        before_added, before_retrains = miner.num_added.clone(), miner.retrains.clone()
        x, mask = image(rows=int(torch.randint(3, 15, ()).item()))
        x[: x.shape[0] // 2] = positives[step % 2][: x.shape[0] // 2] + 0.01  # some rows score high: hard
        added = miner.add_image(x, mask)
        expected = before_added + added
        first = step == 0
        due = added > 0 if first else expected > 12
        for k in range(2):
            if bool(due[k]):
                assert miner.retrains[k] == before_retrains[k] + 1 and miner.num_added[k] == 0
            else:
                assert miner.retrains[k] == before_retrains[k] and miner.num_added[k] == expected[k]
        check_cache_invariants(miner)
    assert bool((miner.retrains >= 3).all())


def test_miner_never_adds_easy_negatives_and_never_evicts_positives():
    positives, image = mining_problem(seed=4)
    positives[0] = torch.cat([positives[0], -positives[0][:1]])  # an outlier positive
    # (the outlier slows the dual down on these 8 dimensions: more passes)
    miner = HardNegativeMiner(SVMConfig(max_iter=100_000), 8, 2, positives, retrain_after=30)
    for _ in range(6):
        miner.add_image(*image())
    check_cache_invariants(miner)
    model = miner.model
    assert bool(miner.retrains.min() >= 2)
    # the outlier scores below the eviction threshold, yet stays
    assert float(model.decision_function(positives[0][-1:])[0, 0]) < miner.evict_threshold
    # rows far on the negative side of class 0 (score about -5), from a new image
    w, b = model.weight[0], float(model.bias[0])
    easy = torch.randn(5, 8, generator=torch.Generator().manual_seed(9)) * 0.01
    easy = easy - ((easy @ w + b + 5.0) / (w @ w))[:, None] * w
    assert bool((model.decision_function(easy)[:, 0] < -4.9).all())
    mask = torch.zeros(5, 2, dtype=torch.bool)
    mask[:, 0] = True
    image_id = miner.images_seen
    added = miner.add_image(easy, mask)
    assert added[0] == 0
    _, keys = miner.cached_negatives(0)
    assert not bool((keys[:, 0] == image_id).any())
    for k in range(2):
        assert torch.equal(miner.positives(k), positives[k])
    assert miner.num_positives.tolist() == [16, 15]


def test_miner_adds_a_row_once_per_class():
    positives, image = mining_problem(seed=5)
    miner = HardNegativeMiner(SVMConfig(), 8, 2, positives, retrain_after=10**6)
    miner.add_image(*image())
    x, mask = image()
    x[:10] = positives[0][:10]  # hard for class 0
    first = miner.add_image(x, mask, image_id=7)
    assert int(first.sum()) > 0
    assert int(miner.add_image(x, mask, image_id=7).sum()) == 0  # same image, same model
    assert miner.add_image(x, mask, image_id=8).tolist() == first.tolist()  # another image
    check_cache_invariants(miner)


def test_miner_final_model_separates_positives_from_hard_negatives():
    positives, image = mining_problem(num_classes=3, seed=6)
    miner = HardNegativeMiner(SVMConfig(C=1e-2), 8, 3, positives, retrain_after=20)
    for _ in range(25):
        miner.add_image(*image())
        check_cache_invariants(miner)
    model = miner.finish()
    assert int(miner.num_added.sum()) == 0
    assert "HardNegativeMiner(num_classes=3" in repr(miner)
    for k in range(3):
        negatives, _ = miner.cached_negatives(k)
        assert negatives.shape[0] > 0
        pos_scores = model.decision_function(positives[k])[:, k]
        neg_scores = model.decision_function(negatives)[:, k]
        assert float(pos_scores.min()) > 0 > float(neg_scores.max())
    # fresh negatives of the same kind are rejected too
    x, _ = image(rows=500)
    assert float((model.decision_function(x) < 0).float().mean()) > 0.99


def test_miner_rejects_bad_inputs():
    positives, image = mining_problem()
    with pytest.raises(ValueError):
        HardNegativeMiner(None, 8, 3, positives)
    with pytest.raises(ValueError):
        HardNegativeMiner(None, 7, 2, positives)
    miner = HardNegativeMiner(None, 8, 2, positives)
    x, mask = image()
    with pytest.raises(ValueError):
        miner.add_image(x, mask.float())
    with pytest.raises(ValueError):
        miner.add_image(x[:, :5], mask)
    with pytest.raises(ValueError):
        miner.add_image(x, mask, image_id=-1)
