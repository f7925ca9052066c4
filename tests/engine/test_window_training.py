"""The window fine-tuning loop SPP-net and R-CNN share: checkpoints resume bit
for bit, a diverging loss stops with the last good checkpoint intact."""

from pathlib import Path

import pytest
import torch
from torch import nn

from sppnet.data.records import ImageRecord
from sppnet.engine.checkpoint import TrainingDiverged, load_checkpoint
from sppnet.data.transforms import random_channel_order
from sppnet.engine.window_training import WindowFinetuneConfig, finetune_on_windows
from sppnet.models.windows import LabelledWindows

NUM_CLASSES, DIM, WINDOWS = 3, 10, 40


def _problem():
    """Six images of 40 windows each; a window's input is a fixed random
    vector shifted by its label, so the task is learnable."""
    generator = torch.Generator().manual_seed(0)
    records, windows, inputs = [], {}, {}
    for i in range(6):
        record = ImageRecord(image_id=f"im{i}", image_path=Path(f"im{i}.jpg"), width=100, height=100)
        labels = torch.randint(0, NUM_CLASSES, (WINDOWS,), generator=generator)
        boxes = torch.arange(WINDOWS, dtype=torch.float32)[:, None].repeat(1, 4)  # box i -> window i
        windows[record.image_id] = LabelledWindows(boxes, labels, torch.zeros(WINDOWS), torch.zeros(WINDOWS, dtype=torch.long),
                                                   torch.zeros(WINDOWS, NUM_CLASSES), torch.zeros(WINDOWS, dtype=torch.bool))
        inputs[record.image_id] = torch.randn(WINDOWS, DIM, generator=generator) + labels[:, None].float()
        records.append(record)

    def window_inputs(record, boxes, flipped):
        rows = inputs[record.image_id][boxes[:, 0].long()]
        return -rows if flipped else rows

    return records, windows, window_inputs


def _network():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(DIM, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, NUM_CLASSES))


TUNE = WindowFinetuneConfig(iterations=30, batch_size=12, images_per_batch=3, lr=0.05, lr_steps=(20,), checkpoint_every=7)


def test_resuming_from_a_checkpoint_repeats_the_uninterrupted_run(tmp_path):
    records, windows, window_inputs = _problem()
    straight = _network()
    finetune_on_windows(straight, list(straight.parameters()), records, windows, TUNE, window_inputs, None, log=print)

    checkpoint = tmp_path / "finetune-checkpoint.safetensors"
    interrupted = _network()

    def stop_at_checkpoint(message):  # logged every 3 iterations; the checkpoint of iteration 14 is written
        if "fine-tune 15/" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune_on_windows(interrupted, list(interrupted.parameters()), records, windows, TUNE, window_inputs,
                            checkpoint, log=stop_at_checkpoint)
    assert load_checkpoint(checkpoint).extra["iteration"] == 14
    torch.manual_seed(12345)  # whatever the new process's RNG holds, the checkpoint's state wins
    resumed = _network()
    messages = []
    finetune_on_windows(resumed, list(resumed.parameters()), records, windows, TUNE, window_inputs, checkpoint,
                        log=messages.append)
    assert any("resumed at iteration 14" in m for m in messages)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(_network()[0].weight, straight[0].weight)  # it did train


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    records, windows, window_inputs = _problem()
    checkpoint = tmp_path / "finetune-checkpoint.safetensors"
    network = _network()
    finetune_on_windows(network, list(network.parameters()), records, windows,
                        WindowFinetuneConfig(iterations=10, batch_size=12, images_per_batch=3, lr=0.05,
                                             checkpoint_every=7), window_inputs, checkpoint, log=lambda m: None)
    good = checkpoint.read_bytes()
    wild = WindowFinetuneConfig(iterations=20, batch_size=12, images_per_batch=3, lr=1e30, checkpoint_every=7)
    with pytest.raises(TrainingDiverged, match="finetune-checkpoint.safetensors") as caught:
        finetune_on_windows(network, list(network.parameters()), records, windows, wild, window_inputs, checkpoint,
                            log=lambda m: None)
    assert "lower finetune.lr" in str(caught.value)
    assert checkpoint.read_bytes() == good


def test_bad_settings_and_empty_sets_are_refused():
    with pytest.raises(ValueError, match="checkpoint_every"):
        WindowFinetuneConfig(checkpoint_every=0)
    with pytest.raises(ValueError, match="lr"):
        WindowFinetuneConfig(lr=0.0)
    network = _network()
    with pytest.raises(ValueError, match="no training image"):
        finetune_on_windows(network, list(network.parameters()), [], {}, TUNE, lambda *a: None, None)


def test_augment_draws_from_the_sampling_generator_and_resumes_bit_for_bit(tmp_path):
    """An ``augment`` (here R-CNN's channel order, on 3-channel inputs) sees
    every image's window inputs; its draws come from the checkpointed
    generator, so an interrupted run resumes to the same weights."""
    records, windows, window_inputs = _problem()
    seen = []

    def three_channel_inputs(record, boxes, flipped):
        x = window_inputs(record, boxes, flipped)
        return torch.stack([x, 2 * x, 3 * x], 1)[..., None]  # [N, 3, DIM, 1]: channel c is (c + 1) x

    def shuffled(batch, generator):
        out = random_channel_order(batch, generator)
        seen.append(out[0, :, 0, 0] / batch[0, 0, 0, 0])
        return out

    def network():
        torch.manual_seed(1)
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * DIM, 16), nn.ReLU(), nn.Linear(16, NUM_CLASSES))

    straight = network()
    finetune_on_windows(straight, list(straight.parameters()), records, windows, TUNE, three_channel_inputs, None,
                        log=lambda m: None, augment=shuffled)
    orders = {tuple(int(round(v)) for v in s.tolist()) for s in seen}
    assert len(seen) == TUNE.iterations * TUNE.images_per_batch and len(orders) > 1
    assert all(sorted(o) == [1, 2, 3] for o in orders)

    checkpoint = tmp_path / "finetune-checkpoint.safetensors"
    interrupted = network()

    def stop_at_checkpoint(message):
        if "fine-tune 15/" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune_on_windows(interrupted, list(interrupted.parameters()), records, windows, TUNE, three_channel_inputs,
                            checkpoint, log=stop_at_checkpoint, augment=shuffled)
    resumed = network()
    finetune_on_windows(resumed, list(resumed.parameters()), records, windows, TUNE, three_channel_inputs, checkpoint,
                        log=lambda m: None, augment=shuffled)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
