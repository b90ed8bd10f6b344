"""``pspnet data prepare voc-aug``: the standard 10,582-image "train_aug" split of Pascal VOC 2012 with SBD.

Inputs: the Semantic Boundaries Dataset release (Hariharan et al. 2011, ``benchmark_RELEASE``: ``dataset/cls/NAME.mat``
holding a MATLAB struct ``GTcls`` whose field ``Segmentation`` is a uint8 class-id image, 0 = background;
``dataset/train.txt``, ``dataset/val.txt``) and the VOC 2012 folder (``SegmentationClass/*.png``,
``ImageSets/Segmentation/{train,val}.txt``, ``JPEGImages``).

Output, inside VOC2012: ``SegmentationClassAug/NAME.png`` (plain 8-bit index PNGs: 0..20, 255 = VOC's borders) and
``ImageSets/Segmentation/train_aug.txt`` with train_aug = (SBD train + SBD val + VOC train) - VOC val. A mask comes
from VOC's own SegmentationClass when VOC has one (it carries the 255 border), else from SBD. Every file is written
atomically (temporary file + rename), the list file last, so an interrupted run leaves no half-written file and no
list that names missing masks.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..atomic import atomic_open
from ..errors import DataError
from .datasets import LayoutError, find_voc2012
from .io import read_mask, write_mask_png

__all__ = ["VocAugSummary", "find_sbd", "prepare_voc_aug", "read_sbd_mat"]

_SBD_HELP = "pip install 'pspnet[sbd]'"


@dataclass(frozen=True)
class VocAugSummary:
    """Counts of one ``prepare_voc_aug`` run and where it wrote."""

    sbd_train: int
    sbd_val: int
    voc_train: int
    voc_val: int
    train_aug: int
    from_voc: int  # masks converted from VOC's SegmentationClass
    from_sbd: int  # masks converted from SBD's cls/*.mat
    mask_dir: Path
    list_file: Path

    def format(self) -> str:
        return (
            f"train_aug: {self.train_aug:,} images = (SBD train {self.sbd_train:,} + SBD val {self.sbd_val:,} + "
            f"VOC train {self.voc_train:,}) - VOC val {self.voc_val:,}\n"
            f"masks: {self.from_voc:,} from VOC SegmentationClass, {self.from_sbd:,} from SBD cls/*.mat\n"
            f"wrote {self.mask_dir}/ and {self.list_file}"
        )


def _scipy_io():
    try:
        import scipy.io
    except ImportError as error:
        raise ImportError(f"reading the SBD .mat files needs SciPy: {_SBD_HELP}") from error
    return scipy.io


def find_sbd(root: Path) -> Path:
    """SBD's ``dataset`` folder (holding cls/, train.txt, val.txt) from the release root, benchmark_RELEASE or
    the dataset folder itself."""
    root = Path(root)
    for candidate in (root, root / "dataset", root / "benchmark_RELEASE" / "dataset"):
        if (candidate / "cls").is_dir():
            return candidate
    if not root.is_dir():
        raise LayoutError("missing_root", root, f"{root}: SBD folder not found")
    raise LayoutError(
        "missing_folder",
        root / "dataset" / "cls",
        f"{root}: no SBD cls/ folder (looked in {root / 'cls'}, {root / 'dataset' / 'cls'} and "
        f"{root / 'benchmark_RELEASE' / 'dataset' / 'cls'}); pass the benchmark_RELEASE folder or its dataset/",
    )


def read_sbd_mat(path: str | os.PathLike) -> np.ndarray:
    """The (H, W) uint8 class-id mask of one SBD ``cls/NAME.mat`` file (``GTcls.Segmentation``)."""
    path = Path(path)
    scipy_io = _scipy_io()
    try:
        data = scipy_io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except FileNotFoundError:
        raise DataError(f"{path}: SBD .mat file not found") from None
    except Exception as error:
        raise DataError(f"{path}: cannot read the SBD .mat file: {error}") from error
    if "GTcls" not in data:
        raise DataError(f"{path}: no 'GTcls' struct (keys: {sorted(k for k in data if not k.startswith('__'))})")
    struct = data["GTcls"]
    segmentation = getattr(struct, "Segmentation", None)
    if segmentation is None:
        raise DataError(f"{path}: the GTcls struct has no 'Segmentation' field")
    segmentation = np.asarray(segmentation)
    if segmentation.ndim != 2 or not np.issubdtype(segmentation.dtype, np.integer):
        raise DataError(
            f"{path}: GTcls.Segmentation must be a 2-D integer image, got {segmentation.dtype} {segmentation.shape}"
        )
    bad = np.setdiff1d(np.unique(segmentation), np.r_[np.arange(21), 255])
    if bad.size:
        raise DataError(f"{path}: GTcls.Segmentation holds values {bad.tolist()[:10]} outside 0..20 and 255")
    return segmentation.astype(np.uint8)


def _write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise LayoutError("missing_list", path, f"{path}: list file not found")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def prepare_voc_aug(
    sbd: str | os.PathLike, voc: str | os.PathLike, *, progress: bool = True, workers: int | None = None
) -> VocAugSummary:
    """Build VOC2012/SegmentationClassAug/*.png and ImageSets/Segmentation/train_aug.txt from SBD + VOC 2012.

    ``sbd``: SBD's benchmark_RELEASE folder (or its dataset/ folder, or the folder holding benchmark_RELEASE);
    ``voc``: the folder holding VOCdevkit/VOC2012 or VOC2012, or VOC2012 itself. Every input is checked before
    anything is written: missing folders, list files, masks or JPEGs raise DataError naming them. Needs SciPy
    (``pip install 'pspnet[sbd]'``) to read the .mat files. Running it again rewrites the same files.
    """
    _scipy_io()  # fail before any work when SciPy is missing
    sbd_dir = find_sbd(Path(sbd))
    voc_root = Path(voc)
    if not voc_root.is_dir():
        raise LayoutError("missing_root", voc_root, f"{voc_root}: VOC folder not found")
    voc_dir = find_voc2012(voc_root)
    segmentation_class = voc_dir / "SegmentationClass"
    jpegs = voc_dir / "JPEGImages"
    for folder in (segmentation_class, jpegs):
        if not folder.is_dir():
            raise LayoutError("missing_folder", folder, f"{folder}: VOC 2012 folder not found")
    lists = voc_dir / "ImageSets" / "Segmentation"
    sbd_train, sbd_val = _read_list(sbd_dir / "train.txt"), _read_list(sbd_dir / "val.txt")
    voc_train, voc_val = _read_list(lists / "train.txt"), _read_list(lists / "val.txt")
    excluded = set(voc_val)
    names = sorted((set(sbd_train) | set(sbd_val) | set(voc_train)) - excluded)

    sources: list[tuple[str, Path, bool]] = []  # (name, source file, from VOC)
    missing_masks, missing_images = [], []
    for name in names:
        voc_mask = segmentation_class / f"{name}.png"
        sbd_mask = sbd_dir / "cls" / f"{name}.mat"
        if voc_mask.is_file():
            sources.append((name, voc_mask, True))
        elif sbd_mask.is_file():
            sources.append((name, sbd_mask, False))
        else:
            missing_masks.append(f"{sbd_mask} (nor {voc_mask})")
        if not (jpegs / f"{name}.jpg").is_file():
            missing_images.append(str(jpegs / f"{name}.jpg"))
    for missing, what in ((missing_masks, "masks"), (missing_images, "images")):
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise DataError(f"{len(missing)} train_aug {what} not found: {', '.join(missing[:5])}{more}")

    out_dir = voc_dir / "SegmentationClassAug"
    out_dir.mkdir(exist_ok=True)

    def convert(item: tuple[str, Path, bool]) -> None:
        name, source, from_voc = item
        if from_voc:
            mask = read_mask(source)  # palette indices = class ids, 255 on borders
            if mask.ndim != 2:
                raise DataError(f"{source}: expected a palette (index) PNG, got an RGB image")
        else:
            mask = read_sbd_mat(source)
        write_mask_png(out_dir / f"{name}.png", mask)

    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        tqdm(total=len(sources), desc="voc-aug", unit="mask", file=sys.stderr, disable=not progress) as bar,
    ):
        for _ in pool.map(convert, sources):
            bar.update(1)
    list_file = lists / "train_aug.txt"
    _write_text(list_file, "".join(f"{name}\n" for name in names))
    from_voc = sum(1 for _, _, v in sources if v)
    return VocAugSummary(
        sbd_train=len(sbd_train),
        sbd_val=len(sbd_val),
        voc_train=len(voc_train),
        voc_val=len(voc_val),
        train_aug=len(names),
        from_voc=from_voc,
        from_sbd=len(sources) - from_voc,
        mask_dir=out_dir,
        list_file=list_file,
    )
