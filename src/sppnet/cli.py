"""The ``sppnet`` command: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sppnet.data.images import ImageError


def _print_skipped(skipped, limit: int = 20) -> None:
    if not skipped:
        return
    print(f"skipped or fixed {len(skipped)} item(s):", file=sys.stderr)
    for item in skipped[:limit]:
        print(f"  {item}", file=sys.stderr)
    if len(skipped) > limit:
        print(f"  ... and {len(skipped) - limit} more", file=sys.stderr)


def _demo(args: argparse.Namespace) -> int:
    from sppnet.demo import DemoConfig, run_demo

    run_demo(DemoConfig(out=args.out, seed=args.seed, train_images=args.train_images, test_images=args.test_images,
                        epochs=args.epochs, detect_train=args.detect_train, detect_test=args.detect_test,
                        finetune_iterations=args.finetune_iterations))
    return 0


def _data_synth(args: argparse.Namespace) -> int:
    from sppnet.data.synthetic import DetectionSynthConfig, synthesize_classification, synthesize_detection

    if args.task == "detect":
        config = DetectionSynthConfig(train=args.train, test=args.test, seed=args.seed, corrupt=args.corrupt)
        counts = synthesize_detection(args.out, config)
        print(f"wrote a VOC-layout detection set to {args.out}: {counts['images']} images, {counts['objects']} objects "
              f"({counts['difficult']} difficult, {counts['truncated']} truncated); splits train, trainval, test")
        if args.corrupt:
            print(f"injected {counts['corrupted']} faults (every kind in each split); listed in {args.out / 'corruptions.json'}")
    elif args.corrupt:
        raise ValueError("--corrupt applies to --task detect only")
    else:
        counts = synthesize_classification(args.out, train=args.train, test=args.test, seed=args.seed)
        print(f"wrote an image-folder classification set to {args.out}: {counts}")
    return 0


def _propose(args: argparse.Namespace) -> int:
    from sppnet.data.datasets import dataset_root, open_detection_dataset
    from sppnet.data.proposals import ProposalConfig, compute_proposals, proposal_recall

    dataset = open_detection_dataset(args.data, args.split, images=args.images)
    _print_skipped(dataset.skipped)
    config = ProposalConfig(
        method=args.method, max_proposals=args.max_proposals, min_size=args.min_size,
        resize_to=args.resize_to if args.resize_to > 0 else None, edge_model=args.edge_model,
    )
    cache = args.cache or dataset_root(args.data) / "proposals"
    run = compute_proposals(dataset.images, config, cache, workers=args.workers)
    _print_skipped(run.skipped)
    recall = proposal_recall(run.boxes, dataset.images)
    counts = [len(b) for b in run.boxes.values()]
    mean = sum(counts) / max(len(counts), 1)
    print(f"{args.method}: {len(run.boxes)} images ({run.computed} computed, {run.reused} reused, "
          f"{run.recomputed_stale} stale entries recomputed) in {run.seconds:.1f} s; {mean:.0f} proposals/image; "
          + ", ".join(f"recall@{t:g} {r:.3f}" for t, r in recall.items()))
    print(f"cache: {cache}")
    return 0


def _eval_detect(args: argparse.Namespace) -> int:
    from sppnet.data.datasets import open_detection_dataset
    from sppnet.evaluation.report import evaluate_results_folder

    if args.run is not None:
        return _evaluate_run(args)
    if args.results is None:
        raise ValueError("eval detect needs --results (a results folder) or --run (a trained detector)")
    dataset = open_detection_dataset(args.data, args.split, images=args.images)
    _print_skipped(dataset.skipped)
    plot = args.plot or (Path(args.json).with_suffix(".png") if args.json else None)
    summary = evaluate_results_folder(dataset, args.results, args.metric, args.json, plot)
    print(summary["table"])
    if args.json:
        print(f"wrote {args.json}" + (f" and {plot}" if plot and args.metric != "coco" else ""))
    return 0


def _draw(args: argparse.Namespace) -> int:
    import torch

    from sppnet.data.datasets import open_detection_dataset
    from sppnet.drawing import save_detection_drawing
    from sppnet.evaluation.results import read_voc_results

    dataset = open_detection_dataset(args.data, args.split, images=args.images)
    _print_skipped(dataset.skipped)
    records = dataset.images[: args.limit]
    per_image = {r.image_id: ([], [], []) for r in records}
    if args.results:
        for label, dets in read_voc_results(args.results, dataset.classes, dataset.split).items():
            for image_id, score, box in zip(dets.image_ids, dets.scores.tolist(), dets.boxes):
                if image_id in per_image:
                    per_image[image_id][0].append(box)
                    per_image[image_id][1].append(label)
                    per_image[image_id][2].append(score)

    for record in records:
        if args.results:
            boxes, labels, scores = per_image[record.image_id]
            kwargs = dict(boxes=torch.stack(boxes) if boxes else torch.zeros(0, 4), labels=torch.tensor(labels, dtype=torch.long),
                          scores=torch.tensor(scores), score_threshold=args.threshold)
        else:
            kwargs = dict(boxes=record.boxes, labels=record.labels)
        try:
            save_detection_drawing(record.image_path, Path(args.out) / f"{record.image_id}.png", classes=dataset.classes, **kwargs)
        except ImageError as error:
            print(f"skipped: {error}", file=sys.stderr)
    print(f"wrote {len(records)} drawing(s) to {args.out}")
    return 0


def _train_classify(args: argparse.Namespace) -> int:
    from sppnet.config import load_config
    from sppnet.engine.classification import ClassifyConfig, train_classifier

    config_file = args.config
    if args.resume and config_file is None and (args.out / "config.yaml").is_file():
        config_file = args.out / "config.yaml"
    config = load_config(ClassifyConfig, config_file, args.set)
    train_classifier(config, args.data, args.out, resume=args.resume, progress=not args.no_progress)
    print(f"run written to {args.out} (model.safetensors, metrics.csv, curves.png)")
    return 0


def _train_detect(args: argparse.Namespace) -> int:
    from sppnet.config import load_config
    from sppnet.data.datasets import dataset_root, open_detection_dataset
    from sppnet.engine.detectors import METHODS

    method = METHODS[args.method]
    config_file = args.config
    if args.resume and config_file is None and (args.out / "config.yaml").is_file():
        config_file = args.out / "config.yaml"
    overrides = list(args.set) + ([f"pretrain.weights={args.backbone_weights.resolve()}"] if args.backbone_weights else [])
    if args.backbone_weights and args.backbone:
        raise ValueError("give either --backbone (a classifier run) or --backbone-weights (ImageNet weights), not both")
    config = load_config(method.config_type, config_file or method.default_preset, overrides)
    dataset = open_detection_dataset(args.data, args.split)
    _print_skipped(dataset.skipped)
    data_root = dataset_root(args.data)
    method.trainer(config, dataset, data_root, args.out, backbone=args.backbone, resume=args.resume)
    print(f"{args.method} run written to {args.out}")
    return 0


def _evaluate_run(args: argparse.Namespace) -> int:
    from sppnet.data.datasets import dataset_root, open_detection_dataset
    from sppnet.engine.detection_stages import detect_dataset
    from sppnet.engine.detectors import load_detector, method_of_run
    from sppnet.evaluation.report import evaluate_results_folder
    from sppnet.evaluation.results import write_voc_results

    dataset = open_detection_dataset(args.data, args.split, images=args.images)
    _print_skipped(dataset.skipped)
    detectors = [load_detector(run) for run in [args.run, *args.combine]]
    if args.precision:
        for detector in detectors:
            detector.set_precision(args.precision)
    if args.scorer:
        for run, detector in zip([args.run, *args.combine], detectors):
            if method_of_run(run).name == "fast-rcnn":
                raise ValueError(f"{run} is a Fast R-CNN run: it scores with its softmax only (--scorer is for "
                                 "SPP-net and R-CNN)")
            detector.set_scorer(args.scorer)
    if any(d.classes != dataset.classes for d in detectors):
        raise ValueError(f"the run's classes {detectors[0].classes} differ from the dataset's {dataset.classes}")
    data_root = dataset_root(args.data)
    per_class, seconds = detect_dataset(detectors, dataset, data_root, box_regression=not args.no_box_regression)
    results = args.results or Path(args.run) / f"results-{args.split}"
    write_voc_results(per_class, dataset.classes, dataset.split, results)
    plot = args.plot or (Path(args.json).with_suffix(".png") if args.json else None)
    summary = evaluate_results_folder(dataset, results, args.metric, args.json, plot)
    print(summary["table"])
    sppnet_run = method_of_run(args.run).name == "sppnet"
    cached = " (conv5 maps from the feature cache, computed on first use)" if sppnet_run else ""
    print(f"{seconds:.3f} s per image{cached}; results in {results}")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from sppnet.data.datasets import open_detection_dataset
    from sppnet.evaluation.diagnosis import DiagnosisConfig, analyze_results_folder, parse_groups

    if args.run is None and args.results is None:
        raise ValueError("analyze needs --run (a detector run evaluated with `sppnet eval detect --run`) or --results")
    # Where `sppnet eval detect --run RUN` writes the run's detections.
    results = args.results or Path(args.run) / f"results-{args.split}"
    if not results.is_dir():
        how = (f"run `sppnet eval detect --run {args.run} --data {args.data} --split {args.split}` first (it writes "
               "them there), or give --results" if args.results is None else "expected a VOC results folder")
        raise FileNotFoundError(f"no detections at {results}: {how}")
    config = DiagnosisConfig(metric=args.metric, groups=parse_groups(args.groups), top_fp=args.top_fp)
    dataset = open_detection_dataset(args.data, args.split, images=args.images)
    _print_skipped(dataset.skipped)
    report = analyze_results_folder(dataset, results, args.out, config)
    print(report.diagnosis.table())
    _print_skipped(list(report.skipped))
    print(f"wrote {report.json_path}, {report.fp_plot.name}, {report.size_plot.name} and {len(report.drawings)} "
          f"drawing(s) of the worst false positives in {args.out}")
    return 0


def _detect_images(args: argparse.Namespace) -> int:
    from sppnet.drawing import save_detection_drawing
    from sppnet.engine.detectors import detect_image_files, load_detector

    detector = load_detector(args.run)
    if args.precision:
        detector.set_precision(args.precision)
    report = lambda message: print(f"skipped: {message}", file=sys.stderr)  # noqa: E731
    for record, found in detect_image_files(detector, args.images, Path(args.out) / "proposals", report):
        out = save_detection_drawing(record.image_path, Path(args.out) / f"{record.image_id}.png", boxes=found["boxes"],
                                     labels=found["labels"], scores=found["scores"], classes=detector.classes,
                                     score_threshold=args.threshold, top=args.top)
        shown = min(int((found["scores"] >= args.threshold).sum()), args.top)
        print(f"{record.image_path}: drew {shown} detection(s) -> {out}")
    return 0


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _features(args: argparse.Namespace) -> int:
    from sppnet.data.folder import read_image_folder
    from sppnet.engine.checkpoint import save_weights
    from sppnet.engine.transfer import extract_features
    from sppnet.engine.classification import load_classifier

    model, _, classes = load_classifier(args.run)
    dataset = read_image_folder(args.data, args.split)
    features, labels, skipped = extract_features(model, dataset, args.scales, args.layer)
    _print_skipped(dataset.skipped + skipped)
    save_weights(args.out, {"features": features, "labels": labels},
                 metadata={"classes": json.dumps(dataset.classes), "layer": args.layer, "scales": json.dumps(args.scales)})
    print(f"wrote {tuple(features.shape)} {args.layer} features of {args.data / args.split} to {args.out}")
    return 0


def _transfer(args: argparse.Namespace) -> int:
    from sppnet.engine.transfer import transfer
    from sppnet.models.svm import SVMConfig

    summary = transfer(args.run, args.data, args.train_per_class or None, args.scales, args.layer,
                       SVMConfig(C=args.C, loss="squared_hinge"))
    print(f"{args.layer} features at scales {list(args.scales)}, {summary['train_images']} training images: "
          f"accuracy {summary['accuracy']:.4f}, mAP {summary['map']:.4f} on {summary['test_images']} test images")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


def _eval_classify(args: argparse.Namespace) -> int:
    from sppnet.evaluation.classification import evaluate_classifier

    summary = evaluate_classifier(args.run, args.data, args.split, args.views)
    print(f"{args.views} views on {summary['images']} images of {args.split}: top-1 error {summary['top1_error']:.4f}, "
          f"top-5 error {summary['top5_error']:.4f} ({summary['seconds_per_image'] * 1e3:.0f} ms/image)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


def _compress(args: argparse.Namespace) -> int:
    from sppnet.engine.fast_rcnn import compress_run

    out = args.out or args.run.with_name(args.run.name + "-svd")
    summary = compress_run(args.run, out, tuple(args.ranks))
    print(f"wrote {out}: fc6 {summary['fc6']}, fc7 {summary['fc7']} (parameters of fc6 + fc7: "
          f"{summary['parameters_before']:,} -> {summary['parameters_after']:,})")
    return 0


def _export(args: argparse.Namespace) -> int:
    from sppnet.export import export_run

    summary = export_run(args.run, args.format, args.out)
    sizes = ", ".join(" ".join(f"{name} {tuple(shape)}" for name, shape in case.items()) for case in summary["inputs"])
    print(f"wrote {summary['path']} ({summary['kind']} run, {summary['format']})")
    runtime = "ONNX Runtime" if args.format == "onnx" else "TorchScript"
    print(f"{runtime} vs PyTorch on {sizes}: max abs difference {summary['max_abs_diff']:.3g} "
          f"(tolerance {summary['tolerance']:.3g})")
    if not summary["ok"]:
        print("sppnet export: error: the exported model differs from PyTorch beyond the tolerance", file=sys.stderr)
        return 1
    return 0


def _bench_detect(args: argparse.Namespace) -> int:
    import shlex

    from sppnet.detection_bench import DetectBenchConfig, format_tables, run_detect_bench, save_summary, write_results_section

    config = DetectBenchConfig(timing_images=args.timing_images, windows=args.windows,
                               proposals=args.proposals, width=args.width, hidden=args.hidden,
                               # the paper's ranks (1024, 256 of 4096) in proportion to the fc width
                               svd_ranks=(max(1, args.hidden // 4), max(1, args.hidden // 16)),
                               train=not args.no_train,
                               precisions=tuple(args.precisions.split(",")))
    work = args.work or args.json.with_suffix("")
    summary = run_detect_bench(args.data, work, config)
    save_summary(summary, args.json)
    tables = format_tables(summary)
    print(tables, end="")
    if args.results_md is not None:
        command = "sppnet " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "sppnet bench detect"
        write_results_section(args.results_md, tables, command)
        print(f"tables written to {args.results_md}")
    print(f"summary written to {args.json}")
    return 0


def _config_class(preset: str):
    """The config dataclass of a preset, from its name: ``classify-*`` or ``detect-<method>-*``."""
    from sppnet.engine.classification import ClassifyConfig
    from sppnet.engine.detectors import METHODS

    if preset.startswith("classify"):
        return ClassifyConfig
    for name in sorted(METHODS, key=len, reverse=True):  # "detect-rcnn" is not a prefix of "detect-fast-rcnn"
        if preset.startswith(f"detect-{name}"):
            return METHODS[name].config_type
    raise ValueError(f"cannot tell which config {preset!r} is: its name must start with one of "
                     f"{['classify'] + sorted(f'detect-{name}' for name in METHODS)}")


def _config(args: argparse.Namespace) -> int:
    import yaml

    from sppnet.config import load_config, preset_names, to_dict

    if args.config_command == "list":
        print("\n".join(preset_names()))
        return 0
    config = load_config(_config_class(Path(args.name).stem), args.name, args.set)
    print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
    return 0


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
    demo.set_defaults(handler=_demo)

    data = commands.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="write a generated dataset")
    synth.add_argument("--task", choices=("detect", "classify"), required=True)
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--train", type=int, default=60, help="training images (default: 60)")
    synth.add_argument("--test", type=int, default=30, help="test images (default: 30)")
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
                                   ".safetensors): the pre-trained trunk starts from them")
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
                        help="combine with another run: NMS over the union of both runs' detections")
    detect.add_argument("--no-box-regression", action="store_true")
    detect.add_argument("--scorer", choices=("svm", "softmax"), default=None,
                        help="SPP-net and R-CNN: score windows with the per-class SVMs (default, the papers') or "
                             "the fine-tuned fc8's softmax")
    detect.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                        help="inference precision (default: the run's; bf16 = the CPU fast path)")
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


if __name__ == "__main__":
    sys.exit(main())
