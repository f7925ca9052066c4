"""Proposal recall at IoU 0.5 / 0.7 on test splits for several proposal settings (session 29).

    python benchmarks/results/proposal-recall-2026-12-07.py DATA[,DATA...] [SETTING,...]

Each DATA is a VOC-layout folder; "recall" counts every object of its test split (difficult
ones too), "not difficult" is sppnet.proposals.proposal_recall (the figure `sppnet propose` reports).
Prints, per folder and setting: recall, recall of objects under 32 x 32 px, boxes per image and
seconds per image (two worker processes, one thread each).
"""
import sys, time, numpy as np, torch
from concurrent.futures import ProcessPoolExecutor
from sppnet.data.voc import read_voc
from sppnet.data.images import load_image
from sppnet.proposals.config import ProposalConfig
from sppnet.proposals import proposal_recall
from sppnet.proposals.methods import propose
from torchvision.ops import box_iou

SETTINGS = dict([
    ("native-500", dict(resize_to=None, max_proposals=500)),
    ("native-min8", dict(resize_to=None, max_proposals=500, min_size=8)),
    ("native-min4", dict(resize_to=None, max_proposals=500, min_size=4)),
    ("native-min0", dict(resize_to=None, max_proposals=500, min_size=0)),
    ("r500-500", dict(resize_to=500, max_proposals=500)),
    ("r500-min8", dict(resize_to=500, max_proposals=1000, min_size=8)),
    ("quality-min8", dict(resize_to=None, max_proposals=1000, min_size=8, method="selective-search-quality")),
    ("r500-2000", dict(resize_to=500, max_proposals=2000)),
    ("r500-1000-min8", dict(resize_to=500, max_proposals=1000, min_size=8)),
    ("r600-2000", dict(resize_to=600, max_proposals=2000)),
])

def work(args):
    path, name = args
    torch.set_num_threads(1)
    cfg = ProposalConfig(**{"method": "selective-search-fast", **SETTINGS[name]})
    img = load_image(path)
    t = time.perf_counter()
    b = propose(img, cfg)
    return b, time.perf_counter() - t

def main():
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else list(SETTINGS)
    for root in sys.argv[1].split(","):
        recs = read_voc(root, "test")
        recs = recs.images
        for name in names:
            with ProcessPoolExecutor(2) as ex:
                out = list(ex.map(work, [(r.image_path, name) for r in recs]))
            hit5 = hit7 = tot = 0; small = [0, 0]; nb = []; tm = 0
            for r, (b, t) in zip(recs, out):
                gt = torch.as_tensor(r.boxes, dtype=torch.float32).reshape(-1, 4)
                nb.append(len(b)); tm += t
                if len(gt) == 0: continue
                iou = box_iou(gt, b).max(1).values if len(b) else torch.zeros(len(gt))
                hit5 += int((iou >= 0.5).sum()); hit7 += int((iou >= 0.7).sum()); tot += len(gt)
                area = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
                s = area < 32 * 32
                small[0] += int((iou[s] >= 0.5).sum()); small[1] += int(s.sum())
            print(f"{root.split('/')[-1]} {name:16s} recall@0.5 {hit5}/{tot} = {100*hit5/tot:.1f}  @0.7 {100*hit7/tot:.1f}  small(<32^2) {small[0]}/{small[1]}  boxes/img {np.mean(nb):.0f}  s/img {tm/len(recs):.3f}"
                  f"  not difficult@0.5 {100*proposal_recall({r.image_id: b for r, (b, _) in zip(recs, out)}, recs)[0.5]:.1f}", flush=True)

if __name__ == "__main__":
    main()
