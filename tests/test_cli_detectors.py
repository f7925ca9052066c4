"""The three detectors and the detection benchmark through the ``sppnet`` command."""

import json

import pytest

from sppnet.cli import main


@pytest.mark.parametrize("method, overrides", [
    ("fast-rcnn", ["train.iterations=6", "train.checkpoint_every=3", "scales=[224]", "train_scales=null"]),
    ("rcnn", ["finetune.iterations=3", "finetune.batch_size=16", "finetune.images_per_batch=4", "warp_size=64",
              "context=5"]),
])
def test_train_eval_and_detect_each_method(method, overrides, detection_backbone, tmp_path, capsys):
    data, backbone = detection_backbone
    run = tmp_path / "run"
    sets = [a for o in overrides + ["proposals=grid", "max_proposals=40"] for a in ("--set", o)]
    assert main(["train", "detect", "--method", method, "--data", str(data), "--split", "train", "--out", str(run),
                 "--backbone", str(backbone), *sets]) == 0
    assert f"{method} run written" in capsys.readouterr().out
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"eval-{precision}.json"
        assert main(["eval", "detect", "--run", str(run), "--data", str(data), "--split", "test", "--json", str(out),
                     "--precision", precision]) == 0
        assert 0.0 <= json.loads(out.read_text())["map"] <= 1.0
    # A run fused with itself is the run: each detection meets its twin (IoU 1), (s + s) / 2 = s.
    fused = tmp_path / "eval-fused.json"
    assert main(["eval", "detect", "--run", str(run), "--data", str(data), "--split", "test", "--json", str(fused),
                 "--combine", str(run), "--combine-by", "fusion", "--results", str(tmp_path / "fused")]) == 0
    assert json.loads(fused.read_text())["map"] == json.loads((tmp_path / "eval-fp32.json").read_text())["map"]
    capsys.readouterr()
    assert main(["eval", "detect", "--run", str(run), "--data", str(data), "--split", "test",
                 "--combine-by", "fusion"]) == 2
    assert "needs runs to combine with" in capsys.readouterr().err
    flipped = tmp_path / "eval-flip.json"  # flip testing, whatever the run's config says
    assert main(["eval", "detect", "--run", str(run), "--data", str(data), "--split", "test", "--json", str(flipped),
                 "--flip", "on", "--results", str(tmp_path / "flip")]) == 0
    assert 0.0 <= json.loads(flipped.read_text())["map"] <= 1.0
    # Box voting, whatever the run's config says: at IoU 1 only a window's identical twins vote, as if off.
    voted = {}
    for vote in ("off", "1.0"):
        voted[vote] = tmp_path / f"eval-vote-{vote}.json"
        assert main(["eval", "detect", "--run", str(run), "--data", str(data), "--split", "test", "--json",
                     str(voted[vote]), "--box-vote", vote, "--results", str(tmp_path / f"vote-{vote}")]) == 0
    assert json.loads(voted["off"].read_text())["map"] == json.loads(voted["1.0"].read_text())["map"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:  # argparse's usage error
        main(["eval", "detect", "--run", str(run), "--data", str(data), "--split", "test", "--box-vote", "1.5"])
    assert refused.value.code == 2
    assert "expected an IoU in (0, 1] or off, got '1.5'" in capsys.readouterr().err
    # Iterative localisation is SPP-net's and R-CNN's (tests/engine/test_sppnet_detection.py, test_rcnn.py);
    # Fast R-CNN, whose regression is trained end to end with its scores, refuses it.
    refined = ["eval", "detect", "--run", str(run), "--data", str(data), "--split", "test", "--refine", "20",
               "--results", str(tmp_path / "refined")]
    assert main(refined) == (0 if method == "rcnn" else 2)
    if method == "fast-rcnn":
        assert "test.refine is SPP-net's and R-CNN's" in capsys.readouterr().err
    # R-CNN scores with its fine-tuned softmax (its preset trains no SVMs); Fast R-CNN has only the softmax.
    softmax = ["eval", "detect", "--run", str(run), "--data", str(data), "--split", "test", "--scorer", "softmax",
               "--results", str(tmp_path / "softmax")]
    assert main(softmax) == (0 if method == "rcnn" else 2)
    if method == "fast-rcnn":
        assert "scores with its softmax only" in capsys.readouterr().err
    else:
        scores = [float(line.split()[1]) for f in (tmp_path / "softmax").glob("*.txt") for line in f.read_text().splitlines()]
        assert scores and all(0.0 <= s <= 1.0 for s in scores)
        assert not (run / "svm.safetensors").exists()
        capsys.readouterr()
        assert main(softmax[:-4] + ["--scorer", "svm"]) == 2
        assert f"{run}: this run trained no SVMs (svm.train: false)" in capsys.readouterr().err
    image = sorted((data / "JPEGImages").glob("test_*"))[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    capsys.readouterr()
    assert main(["detect", str(image), str(broken), "--run", str(run), "--out", str(tmp_path / "drawn")]) == 0
    assert (tmp_path / "drawn" / f"{image.stem}.png").is_file()
    assert "skipped" in capsys.readouterr().err and not (tmp_path / "drawn" / "broken.png").exists()


def test_compress_refuses_runs_of_other_methods(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("scales: [192]\nwindow_target: 96.0\n")
    assert main(["compress", "--run", str(tmp_path / "run"), "--ranks", "8,4"]) == 2
    assert "not a Fast R-CNN run" in capsys.readouterr().err


def test_bench_detect_times_every_system_side_by_side(detection_backbone, tmp_path, capsys):
    data, _ = detection_backbone
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nearlier text\n")
    summary_path = tmp_path / "bench.json"
    args = ["bench", "detect", "--data", str(data), "--json", str(summary_path), "--windows", "40", "--timing-images", "1",
            "--width", "0.125", "--hidden", "256", "--no-train", "--results-md", str(results),
            # A small peak measurement: on a CPU without AVX-512, torch's bf16 mm takes a ~1 GFLOP/s
            # path, and the default 2048-sided products took minutes there.
            "--matmul-size", "256"]
    assert main(args) == 0
    summary = json.loads(summary_path.read_text())
    assert set(summary["seconds_per_image"]) == {"rcnn", "sppnet-1", "sppnet-5", "fast-rcnn", "fast-rcnn-svd"}
    for per_precision in summary["seconds_per_image"].values():
        assert set(per_precision) == {"fp32", "bf16"}
        for stages in per_precision.values():
            assert stages["total"] >= stages["conv"] > 0 and stages["fc"] > 0
    for key in ("speedup_sppnet1_vs_rcnn", "speedup_fastrcnn_vs_sppnet5", "svd_fc_time_reduction"):
        assert isinstance(summary[key], float)
    # The work done, as achieved GFLOP/s and a fraction of the matmul peak measured in the same run.
    assert set(summary["machine"]["matmul_peak_gflops"]) == {"fp32", "bf16"}
    assert all(value > 0 for value in summary["machine"]["matmul_peak_gflops"].values())
    assert summary["decode_seconds_per_image"] > 0  # measured, and in no total
    assert set(summary["throughput"]) == set(summary["seconds_per_image"])
    for name, per_precision in summary["throughput"].items():
        assert per_precision["bf16"]["gflop_per_image"] == per_precision["fp32"]["gflop_per_image"]
        for precision, work in per_precision.items():
            seconds = summary["seconds_per_image"][name][precision]["total"]
            assert work["gflop_per_image"] > 0
            assert work["gflop_per_second"] == pytest.approx(work["gflop_per_image"] / seconds)
            # A ratio of two timings taken at different moments: on a busy machine it can be anything,
            # so the test checks how it is computed, not its size (RESULTS.md reports the sizes).
            peak = summary["machine"]["matmul_peak_gflops"][precision]
            assert work["peak_fraction"] == pytest.approx(work["gflop_per_second"] / peak)
    gflop = {name: per_precision["fp32"]["gflop_per_image"] for name, per_precision in summary["throughput"].items()}
    assert gflop["sppnet-5"] > gflop["sppnet-1"] and gflop["fast-rcnn-svd"] < gflop["fast-rcnn"]
    assert gflop["rcnn"] > gflop["sppnet-1"]  # 40 warped 224 x 224 windows: more pixels than one 688 image
    text = results.read_text()
    assert text.startswith("# Results\n\nearlier text\n") and "| rcnn | fp32 |" in text
    tables = [line for line in text.splitlines() if line.startswith("|")]
    assert tables and "| GFLOP | GFLOP/s | of peak |" in tables[0]
    speed_rows = tables[: 2 + 10]  # header, separator, 5 systems x 2 precisions
    assert all(row.count("|") == tables[0].count("|") for row in speed_rows)  # a well-formed markdown table
    assert main(args) == 0  # a second run replaces its section, it does not append another
    assert results.read_text().count("| rcnn | fp32 |") == 1


def test_flop_counter_matches_a_hand_count():
    import torch

    from sppnet.timing import FlopCounter

    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1, groups=2), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 5 * 5, 10))
    with torch.no_grad(), FlopCounter() as counter:
        net(torch.zeros(2, 4, 5, 5))
    # conv: 2 * Cin * Cout * kh * kw * Hout * Wout / groups per image, 2 images; fc: 2 * in * out per row
    conv = 2 * (2 * 4 * 8 * 3 * 3 * 5 * 5 // 2)
    fc = 2 * (2 * 200 * 10)
    assert counter.flops == conv + fc == 14400 + 8000
    with torch.no_grad():
        net(torch.zeros(1, 4, 5, 5))  # outside the block: not counted
    assert counter.flops == conv + fc


@pytest.fixture(scope="module")
def alexnet_weights(tmp_path_factory):
    """A torchvision AlexNet state_dict on disk, as a user's ImageNet file would be
    (random weights: nothing is downloaded)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


def test_torchvision_architecture_is_told_by_the_file(alexnet_weights, tmp_path):
    import torch
    import torchvision

    from sppnet.engine.pretrain import torchvision_architecture

    assert torchvision_architecture(alexnet_weights) == "alexnet"
    resnet = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
    assert torchvision_architecture(resnet) == "resnet18"
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(ValueError, match="none of the torchvision trunks"):
        torchvision_architecture(other)


@pytest.mark.parametrize("method, overrides", [
    ("sppnet", ["scales=[224]", "train_scales=null", "finetune.iterations=2", "window_target=96.0",
                "pretrain.context_preset=null"]),
    ("fast-rcnn", ["scales=[224]", "train_scales=null", "train.iterations=2", "train.checkpoint_every=2"]),
    ("rcnn", ["finetune.iterations=2", "finetune.batch_size=16", "finetune.images_per_batch=4", "warp_size=96",
              "context=7", "pretrain.context_preset=null"]),
])
def test_local_imagenet_weights_plug_into_every_detector(method, overrides, alexnet_weights, detection_backbone,
                                                         tmp_path, capsys):
    import torch
    import yaml

    from sppnet.engine.detectors import load_detector
    from sppnet.models.backbones.torchvision_trunks import read_weights_file

    data, _ = detection_backbone
    run = tmp_path / "run"
    sets = [a for o in overrides + ["proposals=grid", "max_proposals=30", "pretrain.epochs=1"] for a in ("--set", o)]
    assert main(["train", "detect", "--method", method, "--data", str(data), "--split", "train", "--out", str(run),
                 "--backbone-weights", str(alexnet_weights), *sets]) == 0
    pretrain = yaml.safe_load((run / "pretrain" / "config.yaml").read_text())["model"]
    assert pretrain["backbone"] == "alexnet" and pretrain["weights"] == str(alexnet_weights.resolve())
    detector = load_detector(run)
    trunk = detector.model.trunk if method == "fast-rcnn" else (
        detector.model.network.trunk if method == "rcnn" else detector.cache.trunk)
    assert type(trunk).__name__ == "TorchvisionTrunk"
    # The trunk started from the file: one epoch of small steps leaves conv1 close to it.
    start = read_weights_file(alexnet_weights)["features.0.weight"]
    conv1 = next(m for m in trunk.modules() if isinstance(m, torch.nn.Conv2d)).weight.detach()
    assert (conv1 - start).abs().mean() < 0.1 * start.abs().mean()
