"""Handlers of the general and classification commands: demo, data synth,
train classify, eval classify, features, transfer, config."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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
                        finetune_iterations=args.finetune_iterations, context_iterations=args.context_iterations,
                        hard_mining=args.hard_mining))
    return 0


def _data_synth(args: argparse.Namespace) -> int:
    from sppnet.data.synthetic import DetectionSynthConfig, synthesize_classification, synthesize_detection

    if args.task == "pretrain":
        from sppnet.data.pretrain_set import PRETRAIN_CLASSES, synthesize_pretrain

        if args.corrupt:
            raise ValueError("--corrupt applies to --task detect only")
        sizes = {name: value for name, value in (("train", args.train), ("test", args.test)) if value is not None}
        counts = synthesize_pretrain(args.out, seed=args.seed, **sizes)  # its defaults: the presets' generic stage
        print(f"wrote an image-folder pre-training set of {len(PRETRAIN_CLASSES)} classes to {args.out}: {counts}")
        return 0
    args.train = 60 if args.train is None else args.train
    args.test = 30 if args.test is None else args.test
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
    worst = sorted(((error, name) for name, error in summary["per_class_top1_error"].items() if error is not None),
                   reverse=True)[:10]
    print("top-1 error by class, worst first: " + ", ".join(f"{name} {error:.3f}" for error, name in worst))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
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
