"""Handlers of the detection commands: propose, train detect, eval detect,
analyze, detect, draw, compress, export, bench detect. Each parses nothing
and decides nothing: it calls the library and prints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sppnet.cli.commands import _print_skipped
from sppnet.data.images import ImageError


def _propose(args: argparse.Namespace) -> int:
    from sppnet.data.datasets import dataset_root, open_detection_dataset
    from sppnet.proposals import ProposalConfig, compute_proposals, proposal_recall

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


def _train_detect(args: argparse.Namespace) -> int:
    from sppnet.config import load_config
    from sppnet.data.datasets import dataset_root, open_detection_dataset
    from sppnet.engine.detectors import METHODS

    method = METHODS[args.method]
    config_file = args.config
    if args.resume and config_file is None and (args.out / "config.yaml").is_file():
        config_file = args.out / "config.yaml"
    overrides = list(args.set)
    if args.backbone_weights:
        # ImageNet weights hold a trunk only: the crop stage trains the classifier's fc layers
        # on the set's crops (the tiny presets, which start from the generic classifier, have none).
        overrides = ["pretrain.crop_stage=true"] + overrides + [f"pretrain.weights={args.backbone_weights.resolve()}"]
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
    if args.combine_by != "nms" and not args.combine:
        raise ValueError(f"--combine-by {args.combine_by} needs runs to combine with (--combine RUN2)")
    detectors = [load_detector(run) for run in [args.run, *args.combine]]
    if args.precision:
        for detector in detectors:
            detector.set_precision(args.precision)
    if args.flip:
        for detector in detectors:
            detector.set_flip(args.flip == "on")
    if args.box_vote is not None:
        for detector in detectors:
            detector.set_box_vote(None if args.box_vote == "off" else args.box_vote)
    if args.refine is not None:
        for detector in detectors:
            detector.set_refine(args.refine)
    if args.scorer:
        for run, detector in zip([args.run, *args.combine], detectors):
            if method_of_run(run).name == "fast-rcnn":
                raise ValueError(f"{run} is a Fast R-CNN run: it scores with its softmax only (--scorer is for "
                                 "SPP-net and R-CNN)")
            try:
                detector.set_scorer(args.scorer)
            except ValueError as error:
                raise ValueError(f"{run}: {error}") from None
    if any(d.classes != dataset.classes for d in detectors):
        raise ValueError(f"the run's classes {detectors[0].classes} differ from the dataset's {dataset.classes}")
    data_root = dataset_root(args.data)
    per_class, seconds = detect_dataset(detectors, dataset, data_root, box_regression=not args.no_box_regression,
                                        combine_by=args.combine_by)
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
                               precisions=tuple(args.precisions.split(",")), matmul_size=args.matmul_size)
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
