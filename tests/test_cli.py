import json
import subprocess
import sys

from sppnet.cli import main


def test_demo_runs_end_to_end_and_writes_a_summary(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--train-images", "16", "--test-images", "8", "--epochs", "1",
                 "--detect-train", "6", "--detect-test", "3", "--finetune-iterations", "30",
                 "--context-iterations", "3"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert all(row["equals_adaptive_max_pool"] and row["length"] == 12800 for row in summary["spp_layer"])
    assert set(summary["classification"]["views"]) == {"center", "10", "full", "multi"}
    assert (tmp_path / "run-classify" / "curves.png").is_file()
    assert 0.0 <= summary["detection"]["map_bbox"] <= 1.0 and len(list((tmp_path / "drawings").glob("*.png"))) == 3
    assert summary["pooling_benchmark"]["identical"] is True
    assert "Wrote" in capsys.readouterr().out


def test_console_entry_point_reports_usage_errors():
    result = subprocess.run([sys.executable, "-m", "sppnet", "nonsense"], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_synth_propose_eval_and_draw_from_the_command_line(tmp_path, capsys):
    import torch

    from sppnet.data.datasets import open_detection_dataset
    from sppnet.evaluation import Detections, write_voc_results

    data = tmp_path / "data"
    assert main(["data", "synth", "--task", "detect", "--out", str(data), "--train", "2", "--test", "4"]) == 0
    assert main(["propose", "--data", str(data), "--split", "test", "--method", "grid"]) == 0
    assert "recall@0.5" in capsys.readouterr().out

    # Ground truth written as detections (score 1) must score mAP 1; shifted boxes must not.
    dataset = open_detection_dataset(data, "test")
    for name, shift in (("perfect", 0.0), ("shifted", 40.0)):
        per_class = {}
        for label in range(1, dataset.num_classes):
            ids, boxes = [], []
            for record in dataset.images:
                keep = (record.labels == label) & ~record.difficult
                ids += [record.image_id] * int(keep.sum())
                boxes.append(record.boxes[keep] + shift)
            per_class[label] = Detections(ids, torch.ones(len(ids)), torch.cat(boxes))
        write_voc_results(per_class, dataset.classes, "test", tmp_path / name)
        out = tmp_path / f"{name}.json"
        assert main(["eval", "detect", "--data", str(data), "--split", "test", "--results", str(tmp_path / name),
                     "--json", str(out)]) == 0
        summary = json.loads(out.read_text())
        assert summary["metric"] == "voc07"
        assert (summary["map"] == 1.0) == (name == "perfect")
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    assert main(["draw", "--data", str(data), "--split", "test", "--results", str(tmp_path / "perfect"),
                 "--out", str(tmp_path / "drawn")]) == 0
    assert len(list((tmp_path / "drawn").glob("*.png"))) == 4


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["eval", "detect", "--data", str(tmp_path / "nope"), "--split", "test", "--results", str(tmp_path)]) == 2
    assert "dataset not found" in capsys.readouterr().err


def test_synth_writes_the_pretraining_set(tmp_path, capsys):
    from sppnet.data.folder import read_image_folder
    from sppnet.data.pretrain_set import PRETRAIN_CLASSES

    assert main(["data", "synth", "--task", "pretrain", "--out", str(tmp_path), "--train", "88", "--test", "44"]) == 0
    assert "44 classes" in capsys.readouterr().out
    train = read_image_folder(tmp_path, "train")
    assert tuple(train.classes) == tuple(sorted(PRETRAIN_CLASSES)) and len(train) == 88
    assert main(["data", "synth", "--task", "pretrain", "--out", str(tmp_path / "x"), "--corrupt"]) == 2
