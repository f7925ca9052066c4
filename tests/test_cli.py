import json
import subprocess
import sys

from sppnet.cli import main


def test_demo_runs_end_to_end_and_writes_a_summary(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "4"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert all(row["equals_adaptive_max_pool"] and row["length"] == 12800 for row in summary["spp_layer"])
    assert len(summary["classifier"]["tests"]) == 5
    assert summary["pooling_benchmark"]["identical"] is True
    assert "Wrote" in capsys.readouterr().out


def test_console_entry_point_reports_usage_errors():
    result = subprocess.run([sys.executable, "-m", "sppnet", "nonsense"], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice" in result.stderr
