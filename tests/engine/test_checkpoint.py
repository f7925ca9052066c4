import pytest
import torch

from sppnet.engine.checkpoint import Checkpoint, load_checkpoint, load_weights, save_checkpoint, save_weights


def test_checkpoint_round_trip_restores_optimizer_and_rng(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, Checkpoint(model.state_dict(), optimizer.state_dict(), torch.get_rng_state(), {"epoch": 3}))
    expected_next = torch.rand(3)
    loaded = load_checkpoint(path)
    assert loaded.extra == {"epoch": 3}
    assert all(torch.equal(loaded.model[k], v) for k, v in model.state_dict().items())
    fresh = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    fresh.load_state_dict(loaded.optimizer)
    for a, b in zip(fresh.state_dict()["state"].values(), optimizer.state_dict()["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    torch.set_rng_state(loaded.rng_state)
    assert torch.equal(torch.rand(3), expected_next)
    assert list(tmp_path.iterdir()) == [path]  # no temp files left behind


def test_corrupt_and_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.safetensors")
    save_weights(tmp_path / "w.safetensors", {"a": torch.ones(3)})
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:20])
    with pytest.raises(ValueError, match="cut.safetensors"):
        load_weights(tmp_path / "cut.safetensors")
    with pytest.raises(ValueError, match="cut.safetensors"):
        load_checkpoint(tmp_path / "cut.safetensors")
    assert torch.equal(load_weights(tmp_path / "w.safetensors")["a"], torch.ones(3))
