"""The ``sppnet`` command: parses arguments and calls the library, nothing more.

``build_parser`` and ``main`` live here; the handlers in ``commands`` (general
and classification) and ``detection_commands``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sppnet.cli.commands import (
    _config, _config_class, _data_synth, _demo, _eval_classify, _features, _int_list, _train_classify, _transfer,
)
from sppnet.cli.detection_commands import (
    _analyze, _bench_detect, _compress, _detect_images, _draw, _eval_detect, _export, _propose, _train_detect,
)

__all__ = ["build_parser", "main", "_config_class"]  # _config_class: the tests ask it which config a preset is


def _iou_or_off(text: str) -> float | str:
    """``--box-vote``'s value: an IoU in (0, 1], or "off"."""
    if text == "off":
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected an IoU in (0, 1] or off, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sppnet", description="Spatial pyramid pooling networks.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the end-to-end demo on generated data")
    demo.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default: demo-out)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--train-images", type=int, default=4000, help="generated training images (default: 4000)")
    demo.add_argument("--test-images", type=int, default=200, help="generated test images (default: 200)")
    demo.add_argument("--epochs", type=int, default=10,
                      help="classifier epochs (default: 10; the lr drops tenfold after 80%% of them)")
    demo.add_argument("--detect-train", type=int, default=60, help="generated detection training images (default: 60)")
    demo.add_argument("--detect-test", type=int, default=30, help="generated detection test images (default: 30)")
    demo.add_argument("--finetune-iterations", type=int, default=None,
                      help="SPP-net fc fine-tuning iterations (default: the detect-sppnet-tiny preset's)")
    demo.add_argument("--hard-mining", action="store_true",
                      help="SPP-net's fine-tuning with the preset's online hard example mining (off in the demo: "
                           "about 2 more minutes)")
    demo.add_argument("--context-iterations", type=int, default=1000,
                      help="the in-context Fast R-CNN's iterations before SPP-net (default: 1000; 0: none)")
    demo.set_defaults(handler=_demo)

    data = commands.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="write a generated dataset")
    synth.add_argument("--task", choices=("detect", "classify", "pretrain"), required=True,
                       help="pretrain: many shape classes, ImageNet's stand-in (sppnet.data.pretrain_set)")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--train", type=int, default=None,
                       help="training images (default: 60; pretrain: 13200, the presets' generic stage)")
    synth.add_argument("--test", type=int, default=None, help="test images (default: 30; pretrain: 880)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--corrupt", action="store_true",
                       help="detect only: inject every kind of bad data (broken images and XML, bad boxes, unsafe ids), "
                            "each into its own images, listed in OUT/corruptions.json")
    synth.set_defaults(handler=_data_synth)

    def dataset_arguments(sub):
        sub.add_argument("--data", type=Path, required=True, help="VOC-layout folder or COCO .json file")
        sub.add_argument("--split", required=True)
        sub.add_argument("--images", type=Path, default=None, help="image folder of a COCO dataset")

    propose = commands.add_parser("propose", help="compute region proposals (cached per image and method)")
    dataset_arguments(propose)
    propose.add_argument("--method", default="selective-search-fast",
                         choices=("selective-search-fast", "selective-search-quality", "edge-boxes", "grid"))
    propose.add_argument("--max-proposals", type=int, default=2000)
    propose.add_argument("--min-size", type=int, default=16, help="drop boxes smaller than this (pixels)")
    propose.add_argument("--resize-to", type=int, default=500, help="shorter side to search at; 0 = native size")
    propose.add_argument("--edge-model", type=Path, default=None, help="structured edge model file (edge-boxes)")
    propose.add_argument("--workers", type=int, default=1, help="worker processes")
    propose.add_argument("--cache", type=Path, default=None, help="cache folder (default: DATA/proposals)")
    propose.set_defaults(handler=_propose)

    config = commands.add_parser("config", help="presets").add_subparsers(dest="config_command", required=True)
    config.add_parser("list", help="list the shipped presets").set_defaults(handler=_config)
    show = config.add_parser("show", help="print a preset (or YAML file) resolved to its full typed config")
    show.add_argument("name", help="preset name (e.g. classify-tiny) or YAML file named classify-*.yaml")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    show.set_defaults(handler=_config)

    train = commands.add_parser("train", help="train a model").add_subparsers(dest="train_command", required=True)
    classify = train.add_parser("classify", help="train an SPP classifier on an image folder (DATA/train/<class>/...)")
    classify.add_argument("--data", type=Path, required=True)
    classify.add_argument("--out", type=Path, required=True, help="run folder")
    classify.add_argument("--config", type=Path, default=None, help="YAML config file or preset name (sppnet config list)")
    classify.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    classify.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    classify.add_argument("--no-progress", action="store_true", help="no progress bars")
    classify.set_defaults(handler=_train_classify)

    detect_train = train.add_parser("detect", help="train a detector on a VOC-layout (or COCO) dataset")
    detect_train.add_argument("--method", choices=("sppnet", "fast-rcnn", "rcnn"), default="sppnet")
    detect_train.add_argument("--data", type=Path, required=True)
    detect_train.add_argument("--split", default="train")
    detect_train.add_argument("--out", type=Path, required=True, help="run folder")
    detect_train.add_argument("--backbone", type=Path, default=None,
                              help="an SPP classifier run folder (sppnet train classify); default: pre-train one")
    detect_train.add_argument("--backbone-weights", type=Path, default=None,
                              help="local torchvision ImageNet weights (AlexNet, VGG16, ResNet-18/50 state_dict or "
                                   ".safetensors): the trunk of the crop stage's classifier starts from them")
    detect_train.add_argument("--config", type=Path, default=None,
                              help="YAML config file or preset (default: detect-<method>-tiny)")
    detect_train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    detect_train.add_argument("--resume", action="store_true")
    detect_train.set_defaults(handler=_train_detect)

    evaluate = commands.add_parser("eval", help="evaluate results").add_subparsers(dest="eval_command", required=True)
    eval_classify = evaluate.add_parser("classify", help="top-1/top-5 error of a classification run")
    eval_classify.add_argument("--run", type=Path, required=True)
    eval_classify.add_argument("--data", type=Path, required=True)
    eval_classify.add_argument("--split", default="test")
    eval_classify.add_argument("--views", choices=("center", "10", "full", "multi"), default="center")
    eval_classify.add_argument("--json", type=Path, default=None)
    eval_classify.set_defaults(handler=_eval_classify)
    detect = evaluate.add_parser("detect", help="evaluate a detector run, or a VOC results folder (comp4_det_<split>_<class>.txt)")
    dataset_arguments(detect)
    detect.add_argument("--results", type=Path, default=None, help="results folder to read (or, with --run, to write)")
    detect.add_argument("--run", type=Path, default=None,
                        help="a trained detector run (any method): detect, write results, evaluate")
    detect.add_argument("--combine", type=Path, action="append", default=[], metavar="RUN2",
                        help="combine with another run: NMS over the union of both runs' detections (or --combine-by)")
    detect.add_argument("--combine-by", choices=("nms", "fusion"), default="nms",
                        help="how --combine joins the runs' detections: nms (the paper's: NMS over their union) or "
                             "fusion (weighted box fusion: detections the runs share are averaged, box and score, "
                             "and a detection one run of two misses keeps half its score)")
    detect.add_argument("--no-box-regression", action="store_true")
    detect.add_argument("--scorer", choices=("svm", "softmax"), default=None,
                        help="SPP-net and R-CNN: score windows with the per-class SVMs (default, the papers') or "
                             "the fine-tuned fc8's softmax")
    detect.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                        help="inference precision (default: the run's; bf16 = the CPU fast path)")
    detect.add_argument("--flip", choices=("on", "off"), default=None,
                        help="flip testing: also score each window in the mirrored image and average "
                             "(default: the run's test.flip)")
    detect.add_argument("--box-vote", type=_iou_or_off, default=None, metavar="IOU|off",
                        help="box voting: move each kept detection to the score-weighted mean of its class's "
                             "windows overlapping it at IoU >= IOU (default: the run's test.box_vote)")
    detect.add_argument("--refine", type=int, default=None, metavar="N",
                        help="SPP-net and R-CNN: iterative localisation, each class's N best-scored windows regressed and "
                             "scored again (0: off; default: the run's test.refine)")
    detect.add_argument("--metric", choices=("voc07", "voc12", "coco"), default="voc07")
    detect.add_argument("--json", type=Path, default=None, help="write {metric, map, ap} here")
    detect.add_argument("--plot", type=Path, default=None, help="precision-recall PNG (default: next to --json)")
    detect.set_defaults(handler=_eval_detect)

    analyze = commands.add_parser("analyze", help="error analysis of a detector (Hoiem et al.): false-positive types, "
                                                  "AP by object size, the worst false positives drawn")
    dataset_arguments(analyze)
    analyze.add_argument("--run", type=Path, default=None,
                         help="a detector run: reads RUN/results-SPLIT, written by `sppnet eval detect --run`")
    analyze.add_argument("--results", type=Path, default=None, help="a VOC results folder to read instead")
    analyze.add_argument("--out", type=Path, required=True, help="output folder (JSON, plots, drawings)")
    analyze.add_argument("--groups", default=None, metavar="A,B;C,D",
                         help="similarity groups: a false positive on an object of a class in its group is Sim, "
                              "not Oth")
    analyze.add_argument("--top-fp", type=int, default=5, metavar="N", help="worst false positives drawn per class")
    analyze.add_argument("--metric", choices=("voc07", "voc12"), default="voc07")
    analyze.set_defaults(handler=_analyze)

    features = commands.add_parser("features", help="SPP features (pool or fc7) of an image folder split, to safetensors")
    features.add_argument("--run", type=Path, required=True, help="an SPP classifier run")
    features.add_argument("--data", type=Path, required=True)
    features.add_argument("--split", default="train")
    features.add_argument("--scales", type=_int_list, default=(224,), help="comma-separated shorter sides (default 224)")
    features.add_argument("--layer", choices=("pool", "fc7"), default="fc7")
    features.add_argument("--out", type=Path, required=True)
    features.set_defaults(handler=_features)

    transfer = commands.add_parser("transfer", help="linear SVMs on SPP features: accuracy and one-vs-rest mAP")
    transfer.add_argument("--run", type=Path, required=True)
    transfer.add_argument("--data", type=Path, required=True, help="image folder with train/ and test/ splits")
    transfer.add_argument("--train-per-class", type=int, default=30, help="training images per class (0 = all)")
    transfer.add_argument("--scales", type=_int_list, default=(224,))
    transfer.add_argument("--layer", choices=("pool", "fc7"), default="fc7")
    transfer.add_argument("--C", type=float, default=1.0, help="SVM C on unit-norm features")
    transfer.add_argument("--json", type=Path, default=None)
    transfer.set_defaults(handler=_transfer)

    detect_images = commands.add_parser("detect", help="run a trained detector (any method) on images and draw the detections")
    detect_images.add_argument("images", type=Path, nargs="+")
    detect_images.add_argument("--run", type=Path, required=True)
    detect_images.add_argument("--out", type=Path, required=True)
    detect_images.add_argument("--threshold", type=float, default=float("-inf"), help="minimum score to draw (SVM score or probability)")
    detect_images.add_argument("--top", type=int, default=5, help="draw at most this many, highest scores first")
    detect_images.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                               help="inference precision (default: the run's; bf16 = the CPU fast path)")
    detect_images.set_defaults(handler=_detect_images)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    bench_detect = bench.add_parser("detect", help="R-CNN, SPP-net (1 and 5 scales), Fast R-CNN (+SVD) side by side: "
                                    "seconds per image by stage, fp32 and bf16, and mAP of each trained on the data")
    bench_detect.add_argument("--data", type=Path, required=True, help="VOC-layout folder with train and test splits")
    bench_detect.add_argument("--json", type=Path, required=True, help="summary JSON (speed-ups, seconds, mAP)")
    bench_detect.add_argument("--work", type=Path, default=None, help="runs and caches (default: the JSON path without .json)")
    bench_detect.add_argument("--windows", type=int, default=2000, help="proposals per image (default: 2000)")
    bench_detect.add_argument("--proposals", choices=("grid", "selective-search-fast"), default="grid")
    bench_detect.add_argument("--timing-images", type=int, default=3)
    bench_detect.add_argument("--width", type=float, default=1.0, help="ZF-5 width of the timing network (1 = paper)")
    bench_detect.add_argument("--hidden", type=int, default=4096,
                              help="fc6/fc7 width of the timing network (4096 = paper); SVD keeps 1/4 and 1/16 of it")
    bench_detect.add_argument("--precisions", default="fp32,bf16")
    bench_detect.add_argument("--matmul-size", type=int, default=2048,
                              help="side of the torch.mm calls that measure the matmul peak (default: 2048)")
    bench_detect.add_argument("--no-train", action="store_true", help="speed only: skip training and mAP")
    bench_detect.add_argument("--results-md", type=Path, default=None,
                              help="also write the tables into this RESULTS.md (e.g. benchmarks/RESULTS.md)")
    bench_detect.set_defaults(handler=_bench_detect)

    compress = commands.add_parser("compress", help="truncated SVD of a Fast R-CNN run's fc6 and fc7 (a new run folder)")
    compress.add_argument("--run", type=Path, required=True)
    compress.add_argument("--ranks", type=_int_list, required=True, help="fc6,fc7 ranks, e.g. 1024,256 (the paper's)")
    compress.add_argument("--out", type=Path, default=None, help="the compressed run (default: RUN-svd)")
    compress.set_defaults(handler=_compress)

    export = commands.add_parser("export", help="export a classification, Fast R-CNN or SPP-net run to ONNX or "
                                                "TorchScript, checked against PyTorch on a few input sizes")
    export.add_argument("--run", type=Path, required=True, help="a run folder (sppnet train classify / detect)")
    export.add_argument("--format", choices=("onnx", "torchscript"), required=True)
    export.add_argument("--out", type=Path, required=True, help="the file to write (e.g. model.onnx, model.pt)")
    export.set_defaults(handler=_export)

    draw = commands.add_parser("draw", help="draw ground truth (or a results folder's detections) on images")
    dataset_arguments(draw)
    draw.add_argument("--results", type=Path, default=None)
    draw.add_argument("--threshold", type=float, default=0.5, help="minimum score to draw a detection")
    draw.add_argument("--limit", type=int, default=20, help="images to draw")
    draw.add_argument("--out", type=Path, required=True)
    draw.set_defaults(handler=_draw)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":  # under torchrun: join the process group (DDP); only rank 0 prints
            from sppnet.engine.distributed import init_from_env

            with init_from_env(quiet_workers=True):
                return args.handler(args)
        return args.handler(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"sppnet {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sppnet {args.command}: interrupted", file=sys.stderr)
        return 130
