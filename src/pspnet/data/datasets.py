"""Segmentation data sets: ADE20K, Cityscapes, Pascal VOC 2012 (+SBD aug), CamVid and a plain folder layout.

Every reader finds (image, mask) pairs in one split of its official folder layout and maps the raw label values of
the mask files to train ids ``0..K-1`` plus the ignore value (``info.ignore_index``, 255 by default)::

    dataset = build_dataset("camvid", "../shared/data/camvid", "train", transform=augment, seed=0)
    sample = dataset[0]          # {"image": (H, W, 3) uint8 RGB, "mask": (H, W) uint8, "name": str, "index": 0}
    batch = collate([dataset[0], dataset[1]])   # image (N, 3, H, W) uint8, mask (N, H, W) int64

``docs/data.md`` gives each layout in full. Readers look at the file system once, when they are built: a missing
root, split folder or list file raises :class:`LayoutError` (a :class:`~pspnet.errors.DataError`) naming the path,
and so does an image without its mask (fail before training starts, not half-way through an epoch). Reading a
pair (``load``) raises a DataError naming the file for anything ``pspnet data check`` would report: unreadable or
truncated files, label values that are neither a class id nor the ignore value, image/mask size mismatch.

Augmentation is reproducible per sample and independent of the DataLoader's workers: ``transform(image, mask, rng)``
gets ``rng = np.random.default_rng([seed, epoch, index])``. Call ``set_epoch(epoch)`` before each epoch (with
``persistent_workers=True`` the workers hold their own copy of the data set and do not see it).
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from ..errors import DataError, LayoutError
from .classes import DATASETS, DatasetInfo
from .classes_file import load_classes_file
from .io import orientation_words, read_image_and_orientation, read_mask

__all__ = [
    "ADE20K",
    "DATASET_READERS",
    "VOC",
    "CamVid",
    "Cityscapes",
    "FolderDataset",
    "LayoutError",
    "LoadedSample",
    "Problem",
    "Sample",
    "SegmentationDataset",
    "build_dataset",
    "collate",
    "find_voc2012",
    "load_classes_file",
]

Transform = Callable[[np.ndarray, "np.ndarray | None", np.random.Generator], tuple[Any, Any]]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Sample:
    """One item of a split: the image file, its mask file (None in unlabelled splits) and a stable name.

    ``name`` is the image path relative to the split's image folder, without suffix (``aachen/aachen_000000_000019
    _leftImg8bit`` for Cityscapes, ``2007_000032`` for VOC).
    """

    image: Path
    mask: Path | None
    name: str


@dataclass(frozen=True)
class Problem:
    """Something wrong with a data set, naming every file involved.

    ``kind`` is one of the names listed in :mod:`pspnet.data.check`; ``severity`` is "error" (training would fail
    or learn from wrong labels) or "warning" (worth a look, does not stop training).
    """

    kind: str
    files: tuple[str, ...]
    detail: str
    severity: str = "error"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "files": list(self.files), "detail": self.detail, "severity": self.severity}


class LoadedSample(NamedTuple):
    """What ``read_sample`` found: upright image, train-id mask (or None), EXIF orientation tag (1 = upright) and
    a description of invalid label values (None when all are valid; those pixels were set to the ignore value)."""

    image: np.ndarray
    mask: np.ndarray | None
    orientation: int
    label_problem: str | None


def _root_folder(root: str | os.PathLike) -> Path:
    """``root`` as a Path when it is a folder, else a LayoutError naming it. An empty root is refused: Path("") is
    the current folder, so a config's ``root: ''`` read whatever data set the command happened to run in."""
    if os.fspath(root) == "":
        raise LayoutError(
            "missing_root", Path(), "the data set root is empty ('', the current folder); name its folder"
        )
    path = Path(root)
    if not path.is_dir():
        raise LayoutError("missing_root", path, f"{path}: data set root folder not found")
    return path


def _require_dir(path: Path, kind: str, what: str) -> Path:
    if not path.is_dir():
        raise LayoutError(kind, path, f"{path}: {what} not found" + (" (it is a file)" if path.exists() else ""))
    return path


def _files(folder: Path, suffixes: Sequence[str], *, recursive: bool = True) -> list[Path]:
    """Files of ``folder`` (and below) whose suffix is one of ``suffixes`` (case-insensitive), hidden ones skipped."""
    found = []
    pattern = "**/*" if recursive else "*"
    for path in folder.glob(pattern):
        if path.suffix.lower() not in suffixes or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue  # hidden files and folders (.DS_Store, .ipynb_checkpoints/) are no samples
        if path.is_file():
            found.append(path)
    return sorted(found)


def _stem_name(path: Path, folder: Path) -> str:
    """The path of ``path`` relative to ``folder`` without its suffix, with '/' separators."""
    return path.relative_to(folder).with_suffix("").as_posix()


def _lookup_table(size: int, mapping: dict[int, int]) -> np.ndarray:
    """A raw-value -> train-id table: -1 marks values that are neither a class id nor the ignore value."""
    table = np.full(size, -1, dtype=np.int32)
    for raw, train_id in mapping.items():
        table[raw] = train_id
    return table


def _pixels(count: int) -> str:
    return f"{count:,} pixel" + ("s" if count != 1 else "")


def _list_values(values: np.ndarray, limit: int = 12) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return shown + (f", ... ({len(values)} values)" if len(values) > limit else "")


class SegmentationDataset(torch.utils.data.Dataset):
    """Base of every reader: a list of samples of one split, a class table, label mapping and seeded transforms.

    Subclasses set ``info`` (the class table) and implement ``_scan()`` (find the samples and record layout
    problems) and ``_label_table(sample)`` (raw value -> train id), or override ``convert_mask`` for other
    encodings (RGB colours).
    ``strict=True`` (the default) raises a :class:`LayoutError` for a layout problem that would break training (an
    image without its mask, a listed image that is missing); ``strict=False`` keeps going and lists every layout
    problem in ``layout_problems`` (``data check`` does that).
    """

    info: DatasetInfo
    #: layout problems that stop a strict reader at construction: they would break training when reached
    BLOCKING = frozenset({"image_without_mask", "missing_image"})
    #: splits this reader knows, or None when any split name may exist on disk (VOC list files, folder data sets)
    SPLITS: tuple[str, ...] | None = None

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        *,
        transform: Transform | None = None,
        seed: int = 0,
        strict: bool = True,
    ):
        self.root = _root_folder(root)
        self.split = split
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self.layout_problems: list[Problem] = []
        if any(part in ("", ".", "..") for part in str(split).replace("\\", "/").split("/")):
            raise LayoutError(
                "unknown_split",
                self.root,
                f"{self.root}: split {split!r} is not a folder name (an empty, '.' or '..' part reads other splits "
                "or the whole data set: validation images would be trained on)",
            )
        if self.SPLITS is not None and split not in self.SPLITS:
            raise LayoutError(
                "unknown_split", self.root, f"{type(self).__name__}: unknown split {split!r}; one of {self.SPLITS}"
            )
        self.samples: list[Sample] = self._scan()
        errors = [p for p in self.layout_problems if p.kind in self.BLOCKING]
        if strict and errors:
            shown = "; ".join(f"{p.detail} ({', '.join(p.files)})" for p in errors[:3])
            more = f" and {len(errors) - 3} more" if len(errors) > 3 else ""
            raise LayoutError(
                errors[0].kind,
                errors[0].files[0] if errors[0].files else self.root,
                f"{self.root} split {split!r}: {shown}{more}; run 'pspnet data check --dataset "
                f"{self._check_name()} --root {self.root} --split {split}' for the full list",
            )

    # -- to implement ---------------------------------------------------------------------------------------------
    def _scan(self) -> list[Sample]:
        raise NotImplementedError

    def _label_table(self, sample: Sample) -> np.ndarray:
        """Raw value -> train id (int32, -1 for invalid values) for the mask of ``sample``."""
        raise NotImplementedError

    def _check_name(self) -> str:
        for name, reader in DATASET_READERS.items():
            if type(self) is reader:
                return name
        return type(self).__name__.lower()

    # -- public ---------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, {len(self)} samples, "
            f"{self.info.num_classes} classes)"
        )

    def select(self, *, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> SegmentationDataset:
        """Keep the samples whose name starts with one of ``include`` (all when empty) and with none of ``exclude``.

        Holds a part out, e.g. a CamVid sequence: ``select(exclude=["0006R0"])`` on train, ``select(include=
        ["0006R0"])`` to evaluate on it. Works in place and returns the data set; a selection that leaves nothing
        raises a DataError naming the prefixes.
        """
        kept = [
            s
            for s in self.samples
            if (not include or s.name.startswith(tuple(include))) and not s.name.startswith(tuple(exclude) or ("\0",))
        ]
        if not kept:
            raise DataError(
                f"{self.root} split {self.split!r}: no sample left after include={list(include)} "
                f"exclude={list(exclude)}"
            )
        self.samples = kept
        return self

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of this epoch (the rng of sample i is seeded with [seed, epoch, i])."""
        self.epoch = int(epoch)

    @property
    def mask_dtype(self) -> np.dtype:
        """uint8 unless a class id or the ignore value does not fit in 8 bits (then int32)."""
        largest = max(self.info.num_classes - 1, self.info.ignore_index)
        return np.dtype(np.uint8) if largest <= 255 else np.dtype(np.int32)

    def convert_mask(self, raw: np.ndarray, sample: Sample) -> tuple[np.ndarray, str | None]:
        """Map raw mask values to train ids; invalid pixels become the ignore value and are described in the
        second item (None when every value is valid). ``load`` raises on it, ``data check`` reports it."""
        if raw.ndim != 2:
            return np.full(raw.shape[:2], self.info.ignore_index, self.mask_dtype), (
                f"an RGB mask; {self.info.name} masks are single-channel index PNGs holding class ids"
            )
        table = self._label_table(sample)
        if raw.dtype == np.uint8 and len(table) >= 256:
            mapped = table[raw]  # the common case: one table look-up per pixel
            invalid = mapped < 0
        else:
            raw = raw.astype(np.int64, copy=False)
            outside = (raw < 0) | (raw >= len(table))
            mapped = table[np.clip(raw, 0, len(table) - 1)]
            invalid = outside | (mapped < 0)
        detail = None
        if invalid.any():
            values = np.unique(raw[invalid])
            detail = (
                f"label values {_list_values(values)} are neither a class id nor the ignore value "
                f"(valid raw values: {self._raw_words()}); {_pixels(int(invalid.sum()))}"
            )
            mapped = np.where(invalid, self.info.ignore_index, mapped)
        return mapped.astype(self.mask_dtype), detail

    def _raw_words(self) -> str:
        return f"0..{self.info.num_classes - 1} and {self.info.ignore_index}"

    def read_sample(self, index: int) -> LoadedSample:
        """Read sample ``index`` without judging it: what ``data check`` inspects and ``load`` builds on.

        Unreadable files still raise DataError; invalid label values and size mismatches are left to the caller.
        """
        sample = self.samples[self._index(index)]
        image, orientation = read_image_and_orientation(sample.image)
        if sample.mask is None:
            return LoadedSample(image, None, orientation, None)
        mask, detail = self.convert_mask(read_mask(sample.mask), sample)
        return LoadedSample(image, mask, orientation, detail)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(image (H, W, 3) uint8 RGB, mask (H, W) of train ids or None) of sample ``index``.

        Raises DataError naming the file for unreadable files, invalid label values and size mismatches.
        """
        index = self._index(index)
        sample = self.samples[index]
        loaded = self.read_sample(index)
        if loaded.label_problem is not None:
            raise DataError(f"{sample.mask}: {loaded.label_problem}")
        if loaded.mask is not None and loaded.mask.shape != loaded.image.shape[:2]:
            raise DataError(size_mismatch_detail(sample, loaded.image.shape[:2], loaded.mask.shape, loaded.orientation))
        return loaded.image, loaded.mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._index(index)
        image, mask = self.load(index)
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, mask = self.transform(image, mask, rng)
        return {"image": image, "mask": mask, "name": self.samples[index].name, "index": index}

    def _index(self, index: int) -> int:
        index = operator.index(index)
        if index < 0:
            index += len(self.samples)
        if not 0 <= index < len(self.samples):
            raise IndexError(f"sample index {index} out of range for {len(self.samples)} samples")
        return index

    # -- helpers for the readers ----------------------------------------------------------------------------------
    def _pair_by_stem(
        self,
        image_dir: Path,
        mask_dir: Path | None,
        image_suffixes: Sequence[str],
        mask_suffix: str = ".png",
        *,
        recursive: bool = True,
    ) -> list[Sample]:
        """Pair images and masks with the same relative stem; record images without mask and masks without image."""
        images: dict[str, Path] = {}
        for path in _files(image_dir, image_suffixes, recursive=recursive):
            name = _stem_name(path, image_dir)
            if name in images:
                self.layout_problems.append(
                    Problem(
                        "duplicate_image",
                        (str(images[name]), str(path)),
                        f"two images named {name!r}; only the first is used",
                    )
                )
                continue
            images[name] = path
        if mask_dir is None:
            return [Sample(path, None, name) for name, path in images.items()]
        masks = {_stem_name(p, mask_dir): p for p in _files(mask_dir, (mask_suffix,), recursive=recursive)}
        samples = []
        for name, path in images.items():
            mask = masks.get(name)
            if mask is None:
                expected = mask_dir / f"{name}{mask_suffix}"
                others = [p for p in expected.parent.glob(f"{Path(name).name}.*") if p.suffix.lower() != mask_suffix]
                hint = f"; found {others[0].name}, but masks must be {mask_suffix} (lossless)" if others else ""
                self.layout_problems.append(Problem("image_without_mask", (str(path),), f"no mask {expected}{hint}"))
            samples.append(Sample(path, mask, name))
        for name, mask in masks.items():
            if name not in images:
                self.layout_problems.append(
                    Problem(
                        "mask_without_image",
                        (str(mask),),
                        f"no image named {name!r} in {image_dir}",
                    )
                )
        return samples


def size_mismatch_detail(sample: Sample, image_hw: tuple[int, ...], mask_hw: tuple[int, ...], orientation: int) -> str:
    text = (
        f"image {sample.image} is {image_hw[0]}x{image_hw[1]} (HxW) but mask {sample.mask} is {mask_hw[0]}x{mask_hw[1]}"
    )
    if orientation in (5, 6, 7, 8) and tuple(mask_hw) == (image_hw[1], image_hw[0]):
        text += (
            f"; the photo has EXIF orientation {orientation} ({orientation_words(orientation)}) and the loader shows "
            "it upright, while the mask matches the raw (unrotated) pixels"
        )
    return text


# -- ADE20K ---------------------------------------------------------------------------------------------------------


class ADE20K(SegmentationDataset):
    """ADE20K SceneParsing (ADEChallengeData2016), 150 classes.

    ``ROOT/ADEChallengeData2016/images/{training,validation}/*.jpg`` with
    ``.../annotations/{training,validation}/*.png`` (ROOT may be ADEChallengeData2016 itself). Split "train" reads
    training, "val" validation. Annotation 0 ("other") becomes the ignore value 255, 1..150 become 0..149.
    """

    info = DATASETS["ade20k"]
    SPLITS = ("train", "val")
    FOLDERS: ClassVar[dict[str, str]] = {"train": "training", "val": "validation"}

    def _scan(self) -> list[Sample]:
        base = self.root / "ADEChallengeData2016"
        if not base.is_dir():
            if (self.root / "images").is_dir() or (self.root / "annotations").is_dir():
                base = self.root
            else:
                raise LayoutError(
                    "missing_folder",
                    base,
                    f"{base}: ADE20K folder not found (ROOT must hold ADEChallengeData2016/ or be that folder)",
                )
        folder = self.FOLDERS[self.split]
        images = _require_dir(base / "images" / folder, "missing_folder", f"ADE20K {self.split} image folder")
        masks = _require_dir(base / "annotations" / folder, "missing_folder", f"ADE20K {self.split} annotation folder")
        return self._pair_by_stem(images, masks, (".jpg", ".jpeg"), recursive=False)

    TABLE = _lookup_table(256, {0: 255, **{raw: raw - 1 for raw in range(1, 151)}})

    def _label_table(self, sample: Sample) -> np.ndarray:
        return self.TABLE

    def _raw_words(self) -> str:
        return "0 (ignored) and 1..150"


# -- Cityscapes -----------------------------------------------------------------------------------------------------

# Official labelId -> trainId table (cityscapesScripts labels.py): 19 classes; every other id is ignored.
CITYSCAPES_LABEL_TO_TRAIN = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip


class Cityscapes(SegmentationDataset):
    """Cityscapes fine annotations, 19 classes.

    ``ROOT/leftImg8bit/{train,val,test}/CITY/*_leftImg8bit.png`` with ``ROOT/gtFine/SPLIT/CITY/
    *_gtFine_labelTrainIds.png`` when present (train ids 0..18 and 255, made by cityscapesScripts'
    createTrainIdLabelImgs), else ``*_gtFine_labelIds.png`` mapped through the official labelId -> trainId table.
    The test split has no public labels: its masks are None.
    """

    info = DATASETS["cityscapes"]
    SPLITS = ("train", "val", "test")
    IMAGE_SUFFIX = "_leftImg8bit.png"

    def _scan(self) -> list[Sample]:
        image_dir = _require_dir(
            self.root / "leftImg8bit" / self.split, "missing_folder", f"Cityscapes {self.split} image folder"
        )
        labelled = self.split != "test"
        mask_dir = self.root / "gtFine" / self.split
        if labelled:
            _require_dir(mask_dir, "missing_folder", f"Cityscapes {self.split} annotation folder (gtFine)")
        samples = []
        prefixes = set()
        for path in sorted(image_dir.glob(f"*/*{self.IMAGE_SUFFIX}")):
            prefix = path.name[: -len(self.IMAGE_SUFFIX)]
            city = path.parent.name
            prefixes.add((city, prefix))
            name = _stem_name(path, image_dir)
            if not labelled:
                samples.append(Sample(path, None, name))
                continue
            train_ids = mask_dir / city / f"{prefix}_gtFine_labelTrainIds.png"
            label_ids = mask_dir / city / f"{prefix}_gtFine_labelIds.png"
            mask = train_ids if train_ids.is_file() else label_ids if label_ids.is_file() else None
            if mask is None:
                self.layout_problems.append(
                    Problem("image_without_mask", (str(path),), f"no mask {train_ids.name} or {label_ids.name}")
                )
            samples.append(Sample(path, mask, name))
        if labelled:
            for pattern in ("*/*_gtFine_labelTrainIds.png", "*/*_gtFine_labelIds.png"):
                for mask in sorted(mask_dir.glob(pattern)):
                    prefix = mask.name.rsplit("_gtFine_", 1)[0]
                    if (mask.parent.name, prefix) not in prefixes:
                        self.layout_problems.append(
                            Problem(
                                "mask_without_image",
                                (str(mask),),
                                f"no image {image_dir / mask.parent.name / (prefix + self.IMAGE_SUFFIX)}",
                            )
                        )
        return samples

    TRAIN_ID_TABLE = _lookup_table(256, {**{i: i for i in range(19)}, 255: 255})
    # labelIds: the 19 evaluated classes; every other id (void, rare classes, license plate) is ignored.
    LABEL_ID_TABLE = _lookup_table(256, {raw: CITYSCAPES_LABEL_TO_TRAIN.get(raw, 255) for raw in range(256)})

    def _label_table(self, sample: Sample) -> np.ndarray:
        if sample.mask is not None and sample.mask.name.endswith("_labelTrainIds.png"):
            return self.TRAIN_ID_TABLE
        return self.LABEL_ID_TABLE


# -- Pascal VOC 2012 ------------------------------------------------------------------------------------------------


def find_voc2012(root: Path) -> Path:
    """The VOC2012 folder under ``root``: ROOT/VOC2012, ROOT/VOCdevkit/VOC2012, or ROOT itself."""
    for candidate in (root / "VOC2012", root / "VOCdevkit" / "VOC2012", root):
        if (candidate / "JPEGImages").is_dir() or (candidate / "ImageSets").is_dir():
            return candidate
    raise LayoutError(
        "missing_folder",
        root / "VOCdevkit" / "VOC2012",
        f"{root}: no VOC2012 folder (looked for {root / 'VOC2012'}, {root / 'VOCdevkit' / 'VOC2012'} and "
        f"{root / 'JPEGImages'})",
    )


class VOC(SegmentationDataset):
    """Pascal VOC 2012 segmentation, 21 classes (0 = background), 255 = object borders and difficult regions.

    ``ROOT`` is the folder holding ``VOC2012/`` or ``VOCdevkit/VOC2012/``, or VOC2012 itself. Split S lists its
    names in ``ImageSets/Segmentation/S.txt``; images are ``JPEGImages/NAME.jpg``, masks the palette PNGs
    ``SegmentationClass/NAME.png`` (their palette indices are the class ids). Split "train_aug" (10,582 images with
    SBD) reads ``ImageSets/Segmentation/train_aug.txt`` and ``SegmentationClassAug/NAME.png``, both written by
    ``pspnet data prepare voc-aug``.
    """

    info = DATASETS["voc"]

    def _scan(self) -> list[Sample]:
        base = find_voc2012(self.root)
        list_file = base / "ImageSets" / "Segmentation" / f"{self.split}.txt"
        if not list_file.is_file():
            hint = " (make it with 'pspnet data prepare voc-aug')" if self.split == "train_aug" else ""
            raise LayoutError(
                "missing_list", list_file, f"{list_file}: VOC list file of split {self.split!r} not found{hint}"
            )
        image_dir = _require_dir(base / "JPEGImages", "missing_folder", "VOC image folder")
        mask_folder = "SegmentationClassAug" if self.split == "train_aug" else "SegmentationClass"
        mask_dir = _require_dir(base / mask_folder, "missing_folder", f"VOC mask folder of split {self.split!r}")
        try:
            names = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise LayoutError("missing_list", list_file, f"{list_file}: cannot read the list file: {error}") from error
        samples = []
        for name in names:
            image = image_dir / f"{name}.jpg"
            mask = mask_dir / f"{name}.png"
            if not image.is_file():
                self.layout_problems.append(
                    Problem("missing_image", (str(image),), f"listed in {list_file.name} but not found")
                )
                continue
            if not mask.is_file():
                self.layout_problems.append(Problem("image_without_mask", (str(image),), f"no mask {mask}"))
                mask = None
            samples.append(Sample(image, mask, name))
        return samples

    TABLE = _lookup_table(256, {**{i: i for i in range(21)}, 255: 255})

    def _label_table(self, sample: Sample) -> np.ndarray:
        return self.TABLE


# -- CamVid ---------------------------------------------------------------------------------------------------------


class CamVid(SegmentationDataset):
    """CamVid, SegNet's 11-class version at 480x360.

    ``ROOT/{train,val,test}/*.png`` with label PNGs of the same names in ``ROOT/{train,val,test}annot/``. Values
    0..10 are the classes, 11 (void) becomes the ignore value 255; any other value is an error.
    """

    info = DATASETS["camvid"]
    SPLITS = ("train", "val", "test")

    def _scan(self) -> list[Sample]:
        image_dir = _require_dir(self.root / self.split, "missing_folder", f"CamVid {self.split} image folder")
        mask_dir = _require_dir(
            self.root / f"{self.split}annot", "missing_folder", f"CamVid {self.split} annotation folder"
        )
        return self._pair_by_stem(image_dir, mask_dir, (".png",), recursive=False)

    TABLE = _lookup_table(256, {**{i: i for i in range(11)}, 11: 255})

    def _label_table(self, sample: Sample) -> np.ndarray:
        return self.TABLE

    def _raw_words(self) -> str:
        return "0..10 and 11 (void, ignored)"


# -- folder data set ------------------------------------------------------------------------------------------------


def _rgb_codes(pixels: np.ndarray) -> np.ndarray:
    pixels = pixels.astype(np.int64)
    return (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]


class FolderDataset(SegmentationDataset):
    """Your own data: ``ROOT/images/SPLIT/**`` and ``ROOT/masks/SPLIT/**`` with matching relative stems.

    Images may be .jpg .jpeg .png .bmp .tif .tiff .webp; masks are .png: index masks (8-bit grey, palette or
    16-bit, whose values are class ids or ``ignore_index``) or RGB masks whose colours are the class colours of
    ``ROOT/classes.yaml`` (see :func:`load_classes_file`). A split without ``ROOT/masks/SPLIT`` is unlabelled
    (masks None), e.g. images to predict.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        *,
        transform: Transform | None = None,
        seed: int = 0,
        strict: bool = True,
    ):
        root = _root_folder(root)
        self.classes_file = root / "classes.yaml"
        self._table: np.ndarray | None = None
        self.info, self.ignore_color = load_classes_file(self.classes_file, name=root.resolve().name)
        super().__init__(root, split, transform=transform, seed=seed, strict=strict)

    def _scan(self) -> list[Sample]:
        image_dir = _require_dir(
            self.root / "images" / self.split, "missing_folder", f"image folder of split {self.split!r}"
        )
        mask_dir = self.root / "masks" / self.split
        if not mask_dir.is_dir():
            self.layout_problems.append(
                Problem(
                    "unlabelled_split",
                    (str(mask_dir),),
                    f"no mask folder: split {self.split!r} is unlabelled (fine for prediction; training and "
                    "evaluation need masks)",
                    "warning",
                )
            )
            return self._pair_by_stem(image_dir, None, IMAGE_SUFFIXES)
        return self._pair_by_stem(image_dir, mask_dir, IMAGE_SUFFIXES)

    def _label_table(self, sample: Sample) -> np.ndarray:
        if self._table is None:
            k, ignore = self.info.num_classes, self.info.ignore_index
            table = np.full(max(k, ignore + 1, 256), -1, dtype=np.int32)
            table[:k] = np.arange(k)
            table[ignore] = ignore
            self._table = table
        return self._table

    def convert_mask(self, raw: np.ndarray, sample: Sample) -> tuple[np.ndarray, str | None]:
        if raw.ndim == 2:
            return super().convert_mask(raw, sample)
        # RGB mask: each colour of classes.yaml is its class; ignore_color (if any) is the ignore value.
        palette = list(self.info.palette)
        codes = _rgb_codes(np.asarray(palette, dtype=np.int64).reshape(-1, 1, 3)).ravel()
        values = np.arange(len(palette), dtype=np.int64)
        ignore = self.info.ignore_index
        if self.ignore_color is not None:
            codes = np.append(codes, _rgb_codes(np.asarray(self.ignore_color).reshape(1, 1, 3)).ravel())
            values = np.append(values, ignore)
        unique_codes, first = np.unique(codes, return_index=True)
        if len(unique_codes) != len(codes):
            seen: dict[int, int] = {}
            for i, code in enumerate(codes.tolist()):
                if code in seen:
                    a, b = self.info.classes[seen[code]], self.info.classes[i]
                    break
                seen[code] = i
            return np.full(raw.shape[:2], ignore, self.mask_dtype), (
                f"an RGB mask, but classes {a!r} and {b!r} share the colour {list(palette[seen[code]])} in "
                f"{self.classes_file}; give each class its own 'color'"
            )
        pixel_codes = _rgb_codes(raw)
        position = np.clip(np.searchsorted(unique_codes, pixel_codes), 0, len(unique_codes) - 1)
        found = unique_codes[position] == pixel_codes
        mapped = np.where(found, values[first][position], ignore)
        detail = None
        if not found.all():
            bad = np.unique(pixel_codes[~found])
            shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in bad[:8].tolist())
            more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
            detail = (
                f"colours {shown}{more} are not in {self.classes_file} (neither a class colour nor ignore_color); "
                f"{_pixels(int((~found).sum()))}"
            )
        return mapped.astype(self.mask_dtype), detail

    def _raw_words(self) -> str:
        return f"class ids 0..{self.info.num_classes - 1} and ignore_index {self.info.ignore_index}"

    def _check_name(self) -> str:
        return "folder"


# -- factory and batching -------------------------------------------------------------------------------------------

DATASET_READERS: dict[str, type[SegmentationDataset]] = {
    "ade20k": ADE20K,
    "cityscapes": Cityscapes,
    "voc": VOC,
    "camvid": CamVid,
    "folder": FolderDataset,
}


def build_dataset(
    name: str,
    root: str | os.PathLike,
    split: str,
    *,
    transform: Transform | None = None,
    seed: int = 0,
) -> SegmentationDataset:
    """The reader of data set ``name`` (a key of DATASET_READERS) for ``split`` of the layout under ``root``.

    Raises :class:`LayoutError` (a DataError) naming the path when the root, split folder, list file or a mask is
    missing, ValueError for an unknown data set name.
    """
    reader = DATASET_READERS.get(name)
    if reader is None:
        raise ValueError(f"unknown data set {name!r}; one of {', '.join(DATASET_READERS)}")
    return reader(root, split, transform=transform, seed=seed)


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples of equal size: image uint8 (N, 3, H, W), mask int64 (N, H, W) (None if no sample has one),
    name list, index int64 (N,).

    Images may be (H, W, 3) numpy arrays or (3, H, W) tensors (as a transform returns them); masks (H, W) arrays or
    tensors. Samples of different sizes raise ValueError naming them: crop in the transform, or use batch size 1.
    """
    if not batch:
        raise ValueError("collate: empty batch")
    images, masks = [], []
    for item in batch:
        image = item["image"]
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"collate: image {item['name']!r} has shape {image.shape}, expected (H, W, 3)")
            image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        images.append(image)
        mask = item["mask"]
        if isinstance(mask, np.ndarray):
            mask = torch.from_numpy(mask.astype(np.int64))
        elif isinstance(mask, torch.Tensor):
            mask = mask.long()
        masks.append(mask)
    sizes = {tuple(image.shape[-2:]) for image in images}
    sizes |= {tuple(mask.shape[-2:]) for mask in masks if mask is not None}
    if len(sizes) > 1:
        listed = ", ".join(
            f"{item['name']} {tuple(image.shape[-2:])}"
            + (f" mask {tuple(mask.shape[-2:])}" if mask is not None and mask.shape[-2:] != image.shape[-2:] else "")
            for item, image, mask in zip(batch, images, masks)
        )
        raise ValueError(
            f"collate: samples differ in size (H, W): {listed}; crop or resize to one size in the transform, or "
            "use batch size 1"
        )
    have = [mask is not None for mask in masks]
    if any(have) and not all(have):
        missing = [item["name"] for item, h in zip(batch, have) if not h]
        raise ValueError(f"collate: samples {missing} have no mask while others in the batch have one")
    return {
        "image": torch.stack(images),
        "mask": torch.stack(masks) if all(have) else None,
        "name": [item["name"] for item in batch],
        "index": torch.tensor([int(item["index"]) for item in batch], dtype=torch.int64),
    }
