"""Has a Fast R-CNN run collapsed to the class prior? (issue 14, session 37)

On the first 40 training images of DATA (their proposals at the run's settings,
labelled as in training: foreground IoU >= 0.5, background below), pooled at
scale 640: the share of fc6 / fc7 units that fire on some window, and per
window kind the share predicted background, right, and the mean p(background).
A collapsed run predicts background everywhere with one probability.

    PYTHONPATH=src python benchmarks/results/fast-rcnn-window-probe-2026-12-07.py RUN DATA
"""
import sys
from pathlib import Path
import torch
from sppnet.engine.fast_rcnn import load_fast_rcnn, image_tensor
from sppnet.data.datasets import open_detection_dataset
from sppnet.proposals import compute_proposals
from sppnet.models.windows import label_windows
run, data = Path(sys.argv[1]), Path(sys.argv[2])
det = load_fast_rcnn(run); model = det.model.eval()
ds = open_detection_dataset(data, "train")
props = compute_proposals(ds.images[:40], det.config.proposal_config, data / "proposals", workers=1)
fired6, fired7, rows = [], [], []
for r in ds.images[:40]:
    image = image_tensor(r.image_path)
    p = props[r.image_id] if not hasattr(props, "boxes") else props.boxes[r.image_id]
    w = label_windows(torch.as_tensor(p).float(), r.boxes.float(), r.labels, model.head.num_classes, 0.5, (0.0, 0.5), r.difficult)
    with torch.no_grad():
        features, factors = model.feature_maps([image], [640])
        pooled = model.pool(features, [w.boxes * factors[0]])
        h6 = model.head.fc6(pooled); h7 = model.head.fc7(h6)
        logits = model.head.cls_score(h7)
    fired6.append((h6 > 0).any(0)); fired7.append((h7 > 0).any(0))
    rows.append((w.labels, logits.softmax(1)))
labels = torch.cat([a for a, _ in rows]); probs = torch.cat([b for _, b in rows])
alive6 = torch.stack(fired6).any(0).float().mean(); alive7 = torch.stack(fired7).any(0).float().mean()
pred = probs.argmax(1)
print(run, f"fc6 alive {alive6:.2f}, fc7 alive {alive7:.2f}")
for name, m in (("fg", labels > 0), ("bg", labels == 0)):
    print(f"  {name}: {int(m.sum())} windows, predicted bg {float((pred[m] == 0).float().mean()):.2f}, "
          f"right {float((pred[m] == labels[m]).float().mean()):.2f}, mean p(bg) {float(probs[m, 0].mean()):.2f}")
