"""The ``pspnet data`` command: ``data check`` and ``data prepare voc-aug``.

``cli.py`` adds it to its parser with one line, ``add_data_commands(commands)``; each sub-command sets ``func`` to
a function that takes the parsed Namespace and returns the exit status (0 clean, 1 problems found or failed,
2 usage error).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from ..errors import DataError
from .datasets import DATASET_READERS

__all__ = ["add_data_commands"]

_LAYOUTS = """\
layouts (ROOT is --root; docs/data.md has the details):
  ade20k      ROOT/ADEChallengeData2016/{images,annotations}/{training,validation}/  (splits train, val)
  cityscapes  ROOT/leftImg8bit/SPLIT/CITY/*_leftImg8bit.png, ROOT/gtFine/SPLIT/CITY/*_gtFine_labelTrainIds.png
              or *_gtFine_labelIds.png  (splits train, val, test)
  voc         ROOT/VOCdevkit/VOC2012 (or ROOT/VOC2012, or ROOT = VOC2012): JPEGImages, SegmentationClass,
              ImageSets/Segmentation/SPLIT.txt; split train_aug reads SegmentationClassAug (see 'data prepare')
  camvid      ROOT/{train,val,test}/*.png with ROOT/{train,val,test}annot/*.png
  folder      ROOT/images/SPLIT/**, ROOT/masks/SPLIT/**.png, ROOT/classes.yaml
"""


def _cmd_check(args: argparse.Namespace) -> int:
    from .check import check_dataset

    splits = DATASET_READERS[args.dataset].SPLITS
    if splits is not None and args.split not in splits:
        print(f"error: --split {args.split!r}: {args.dataset} has splits {', '.join(splits)}", file=sys.stderr)
        return 2
    report = check_dataset(
        args.dataset, args.root, args.split, progress=not args.no_progress and not args.json, workers=args.workers
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format())
    return 0 if report.ok else 1


def _cmd_voc_aug(args: argparse.Namespace) -> int:
    from .voc_aug import prepare_voc_aug

    try:
        summary = prepare_voc_aug(args.sbd, args.voc, progress=not args.no_progress, workers=args.workers)
    except (DataError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(summary.format())
    return 0


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (the command line's one definition of it)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_data_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data check`` and ``data prepare voc-aug`` to the ``pspnet`` parser's sub-commands."""
    data = subparsers.add_parser(
        "data",
        help="check a data set's files, prepare derived files (VOC train_aug)",
        description="Work on data sets on disk: 'check' reads every image and mask of a split the way training "
        "does and reports every problem; 'prepare voc-aug' builds Pascal VOC's 10,582-image train_aug split from "
        "SBD.",
        epilog="Run 'pspnet data SUBCOMMAND --help' for its options.",
    )
    commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    check = commands.add_parser(
        "check",
        help="validate every image/mask pair of a split; exit 1 when something is wrong",
        description=textwrap.fill(
            "Read every image and mask of one split exactly as training does and report: counts, image sizes, "
            "per-class pixel frequencies, and every problem with the files involved (missing root, folder or list "
            "file; images without masks and masks without images; unreadable or truncated files; image/mask size "
            "mismatches; label values that are neither a class id nor the ignore value; photos with an EXIF "
            "rotation). Exit status: 0 no errors (warnings allowed), 1 errors found, 2 usage error.",
            width=100,
        ),
        epilog=_LAYOUTS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--dataset", required=True, choices=list(DATASET_READERS), help="layout of the data set")
    check.add_argument("--root", required=True, metavar="DIR", help="data set root folder (see the layouts below)")
    check.add_argument(
        "--split",
        default="train",
        help="split to check (default: train); ade20k: train, val; cityscapes and camvid: train, val, test; voc: "
        "any ImageSets/Segmentation/SPLIT.txt (train, val, trainval, train_aug); folder: any images/SPLIT folder",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON on stdout (no progress bar)")
    check.add_argument("--workers", type=positive_int, metavar="N", help="threads reading files (default: up to 8)")
    check.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    check.set_defaults(func=_cmd_check)

    prepare = commands.add_parser(
        "prepare",
        help="build derived files of a data set (voc-aug)",
        description="Build files that a data set's official release lacks.",
    )
    recipes = prepare.add_subparsers(dest="prepare_command", metavar="RECIPE", required=True)
    voc_aug = recipes.add_parser(
        "voc-aug",
        help="make VOC 2012's train_aug split (10,582 images) from SBD",
        description="Write VOC2012/SegmentationClassAug/*.png (8-bit index PNGs) and "
        "VOC2012/ImageSets/Segmentation/train_aug.txt: train_aug = (SBD train + SBD val + VOC train) - VOC val. "
        "Masks come from VOC's SegmentationClass where VOC has one (it marks borders 255), else from SBD's "
        "cls/*.mat. Files are written atomically; running it again rewrites them. Then use --split train_aug "
        "with the voc data set. Needs SciPy: pip install 'pspnet[sbd]'.",
    )
    voc_aug.add_argument(
        "--sbd",
        required=True,
        metavar="DIR",
        help="SBD release folder: benchmark_RELEASE (or its dataset/ folder) holding cls/*.mat, train.txt, val.txt",
    )
    voc_aug.add_argument(
        "--voc",
        required=True,
        metavar="DIR",
        help="folder holding VOCdevkit/VOC2012 or VOC2012, or the VOC2012 folder itself (written into)",
    )
    voc_aug.add_argument("--workers", type=positive_int, metavar="N", help="threads writing masks (default: up to 8)")
    voc_aug.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    voc_aug.set_defaults(func=_cmd_voc_aug)
