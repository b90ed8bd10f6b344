"""``pspnet data check``: read every image and mask of a split and report what would hurt training.

It reads each pair exactly as training does (same reader, same label mapping), so a clean report means no epoch
will stop on a bad file. Problem kinds, each naming its files:

================== ==========================================================================================
missing_root       the data set root folder does not exist
missing_folder     a split's image or mask folder (or the data set's own folder) is missing
missing_list       a list file (VOC ``ImageSets/Segmentation/SPLIT.txt``) is missing
missing_classes_file / bad_classes_file   the folder data set's ``classes.yaml`` is missing or invalid
unknown_split      the reader has no such split
empty_split        the split holds no images
missing_image      a list file names an image that is not there
image_without_mask an image of a labelled split has no mask
mask_without_image a mask has no image
duplicate_image    two images share a name (e.g. ``a.jpg`` and ``a.png``)
unreadable         a file cannot be decoded: corrupt, truncated, unsupported
size_mismatch      image and mask sizes differ (both files named)
bad_labels         mask values that are neither a class id nor the ignore value, after the data set's mapping
                   (e.g. CamVid raw values above 11), or colours not in ``classes.yaml``
exif_orientation   the photo carries an EXIF orientation other than 1: the loader rotates it upright, so a mask
                   drawn on the raw pixel grid disagrees (an error when the mask matches the raw size only, a
                   warning when it matches the upright size or the sizes cannot tell)
unlabelled_split   (warning) a folder data set split without ``masks/SPLIT``: fine for prediction only
================== ==========================================================================================

Warnings do not make a report fail; errors do (``ok`` is False, ``pspnet data check`` exits 1).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import DataError
from .datasets import DATASET_READERS, LayoutError, Problem, Sample, SegmentationDataset, size_mismatch_detail
from .io import orientation_words, read_image_and_orientation, read_mask

__all__ = ["CheckReport", "Problem", "check_dataset"]


@dataclass
class CheckReport:
    """What ``check_dataset`` found: counts, image sizes, per-class pixel counts and every problem."""

    dataset: str
    root: str
    split: str
    classes: tuple[str, ...] = ()
    ignore_index: int = 255
    images: int = 0
    masks: int = 0
    image_sizes: Counter = field(default_factory=Counter)  # (height, width) -> number of images
    class_pixels: list[int] = field(default_factory=list)
    ignored_pixels: int = 0
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no problem of severity "error" was found (warnings allowed)."""
        return not self.errors

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != "error"]

    @property
    def labelled_pixels(self) -> int:
        return int(sum(self.class_pixels))

    @property
    def class_frequencies(self) -> list[float]:
        """Share of each class among labelled pixels (ignored pixels excluded): sums to 1 when any were found."""
        total = self.labelled_pixels
        return [count / total if total else 0.0 for count in self.class_pixels]

    def size_summary(self) -> dict[str, Any]:
        if not self.image_sizes:
            return {"distinct": 0}
        heights = [h for h, _ in self.image_sizes]
        widths = [w for _, w in self.image_sizes]
        return {
            "distinct": len(self.image_sizes),
            "height": [min(heights), max(heights)],
            "width": [min(widths), max(widths)],
            "most_common": [[h, w, n] for (h, w), n in self.image_sizes.most_common(5)],
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of the whole report."""
        return {
            "dataset": self.dataset,
            "root": self.root,
            "split": self.split,
            "ok": self.ok,
            "images": self.images,
            "masks": self.masks,
            "image_sizes": {
                "summary": self.size_summary(),
                "counts": [{"height": h, "width": w, "count": n} for (h, w), n in sorted(self.image_sizes.items())],
            },
            "ignore_index": self.ignore_index,
            "labelled_pixels": self.labelled_pixels,
            "ignored_pixels": self.ignored_pixels,
            "classes": [
                {"id": i, "name": name, "pixels": int(pixels), "frequency": freq}
                for i, (name, pixels, freq) in enumerate(zip(self.classes, self.class_pixels, self.class_frequencies))
            ],
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "problems": [p.to_dict() for p in self.problems],
            "seconds": round(self.seconds, 3),
        }

    def format(self) -> str:
        """The report for humans: counts, sizes, class frequency table and every problem grouped by kind."""
        lines = [f"data check: {self.dataset}, split {self.split!r}, root {self.root}"]
        lines.append(f"images: {self.images:,} ({self.masks:,} with masks), read in {self.seconds:.1f} s")
        summary = self.size_summary()
        if summary["distinct"] == 1:
            (h, w), _count = next(iter(self.image_sizes.items()))
            lines.append(f"image sizes (HxW): all {h}x{w}")
        elif summary["distinct"] > 1:
            common = ", ".join(f"{h}x{w} ({n:,})" for h, w, n in summary["most_common"])
            lines.append(
                f"image sizes (HxW): {summary['distinct']:,} distinct; height {summary['height'][0]}.."
                f"{summary['height'][1]}, width {summary['width'][0]}..{summary['width'][1]}; most common: {common}"
            )
        if self.masks and self.classes:
            total = self.labelled_pixels + self.ignored_pixels
            share = 100.0 * self.ignored_pixels / total if total else 0.0
            lines.append(
                f"class pixel frequencies over {self.labelled_pixels:,} labelled pixels "
                f"(ignore value {self.ignore_index}: {self.ignored_pixels:,} pixels, {share:.1f}% of all):"
            )
            width = max(len("class"), *(len(name) for name in self.classes))
            lines.append(f"  {'id':>4}  {'class':<{width}}  {'pixels':>15}  {'share':>7}")
            for i, (name, pixels, freq) in enumerate(zip(self.classes, self.class_pixels, self.class_frequencies)):
                lines.append(f"  {i:>4}  {name:<{width}}  {int(pixels):>15,}  {100 * freq:>6.2f}%")
            absent = [name for name, pixels in zip(self.classes, self.class_pixels) if pixels == 0]
            if absent:
                lines.append(f"  classes with no pixel in this split: {', '.join(absent)}")
        if not self.problems:
            lines.append("OK: no problems found")
            return "\n".join(lines)
        errors, warnings = len(self.errors), len(self.warnings)
        lines.append(
            f"{'FAILED' if errors else 'OK'}: {errors} error{'s' * (errors != 1)}, "
            f"{warnings} warning{'s' * (warnings != 1)}"
        )
        by_kind: dict[str, list[Problem]] = {}
        for problem in self.problems:
            by_kind.setdefault(problem.kind, []).append(problem)
        for kind, problems in by_kind.items():
            lines.append(f"{kind} ({len(problems)}):")
            for problem in problems:
                tag = "error" if problem.severity == "error" else "warning"
                lines.append(f"  {tag}: {', '.join(problem.files)}")
                lines.append(f"      {problem.detail}")
        return "\n".join(lines)


@dataclass
class _SampleResult:
    size: tuple[int, int] | None = None
    has_mask: bool = False
    class_pixels: np.ndarray | None = None
    ignored: int = 0
    problems: list[Problem] = field(default_factory=list)


def _exif_problem(sample: Sample, image_hw: tuple[int, int], mask_hw: tuple[int, int] | None, orientation: int):
    """The exif_orientation problem of a photo with orientation != 1, or None when the sizes say a plain mismatch."""
    raw_hw = (image_hw[1], image_hw[0]) if orientation in (5, 6, 7, 8) else image_hw
    files = (str(sample.image),) + ((str(sample.mask),) if sample.mask is not None else ())
    words = (
        f"EXIF orientation {orientation} ({orientation_words(orientation)}): the loader shows the photo upright at "
        f"{image_hw[0]}x{image_hw[1]} (HxW), its raw pixels are {raw_hw[0]}x{raw_hw[1]}"
    )
    if mask_hw is None:
        return Problem("exif_orientation", files, words + "; no mask to compare", "warning")
    if mask_hw == image_hw and mask_hw != raw_hw:
        return Problem(
            "exif_orientation",
            files,
            words + "; the mask matches the upright size, as the loader expects (tools that ignore EXIF will not)",
            "warning",
        )
    if mask_hw == raw_hw and mask_hw != image_hw:
        return Problem(
            "exif_orientation",
            files,
            words + "; the mask matches the RAW size: it was drawn on the unrotated pixels and disagrees with the "
            "loaded image (rotate the mask the same way, or strip the EXIF orientation from the photo)",
        )
    if mask_hw == image_hw:
        return Problem(
            "exif_orientation",
            files,
            words + "; the sizes cannot tell whether the mask was drawn on the raw or the upright pixels: look at "
            "an overlay",
            "warning",
        )
    return None  # matches neither: reported as size_mismatch


def _inspect(dataset: SegmentationDataset, index: int) -> _SampleResult:
    sample = dataset.samples[index]
    result = _SampleResult()
    try:
        image, orientation = read_image_and_orientation(sample.image)
    except DataError as error:
        result.problems.append(Problem("unreadable", (str(sample.image),), str(error)))
        image, orientation = None, 1
    if image is not None:
        result.size = (int(image.shape[0]), int(image.shape[1]))
    mask = None
    if sample.mask is not None:
        try:
            raw = read_mask(sample.mask)
        except DataError as error:
            result.problems.append(Problem("unreadable", (str(sample.mask),), str(error)))
        else:
            mask, detail = dataset.convert_mask(raw, sample)
            result.has_mask = True
            if detail is not None:
                result.problems.append(Problem("bad_labels", (str(sample.mask),), detail))
    if image is None:
        return result
    mask_hw = tuple(mask.shape) if mask is not None else None
    exif = _exif_problem(sample, result.size, mask_hw, orientation) if orientation != 1 else None
    if exif is not None:
        result.problems.append(exif)
    elif mask is not None and mask_hw != result.size:
        result.problems.append(
            Problem(
                "size_mismatch",
                (str(sample.image), str(sample.mask)),
                size_mismatch_detail(sample, result.size, mask_hw, orientation),
            )
        )
    if mask is not None:
        k, ignore = dataset.info.num_classes, dataset.info.ignore_index
        if mask.dtype == np.uint8:
            counts = np.bincount(mask.ravel(), minlength=256)
            result.class_pixels, result.ignored = counts[:k], int(counts[ignore])
        else:
            flat = mask.ravel()
            labelled = flat != ignore
            result.class_pixels = np.bincount(flat[labelled], minlength=k)[:k]
            result.ignored = int((~labelled).sum())
    return result


def _results(dataset: SegmentationDataset, workers: int) -> Iterator[_SampleResult]:
    if workers <= 1:
        for index in range(len(dataset)):
            yield _inspect(dataset, index)
        return
    # Pillow and NumPy release the GIL while decoding: threads read several files at once; map keeps the order.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(lambda i: _inspect(dataset, i), range(len(dataset)))


def check_dataset(
    name: str, root: str | os.PathLike, split: str, *, progress: bool = True, workers: int | None = None
) -> CheckReport:
    """Read every image and mask of ``split`` of data set ``name`` (a key of DATASET_READERS) under ``root``.

    Never raises for problems in the data: a missing root, folder or list file is a problem in the report too.
    ``progress`` shows a progress bar with ETA on stderr; ``workers`` threads read files (default: up to 8).
    Raises ValueError for an unknown data set name.
    """
    reader = DATASET_READERS.get(name)
    if reader is None:
        raise ValueError(f"unknown data set {name!r}; one of {', '.join(DATASET_READERS)}")
    start = time.perf_counter()
    report = CheckReport(dataset=name, root=str(root), split=split)
    info = getattr(reader, "info", None)
    if info is not None:
        report.classes, report.ignore_index = info.classes, info.ignore_index
    try:
        dataset = reader(root, split, strict=False)
    except LayoutError as error:
        report.problems.append(Problem(error.kind, (str(error.path),), str(error)))
        report.seconds = time.perf_counter() - start
        return report
    report.classes, report.ignore_index = dataset.info.classes, dataset.info.ignore_index
    report.class_pixels = [0] * dataset.info.num_classes
    report.problems.extend(dataset.layout_problems)
    report.images = len(dataset)
    if not dataset.samples:
        report.problems.append(Problem("empty_split", (str(Path(root)),), f"split {split!r} holds no images"))
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    class_pixels = np.zeros(dataset.info.num_classes, dtype=np.int64)
    bar = tqdm(
        total=len(dataset),
        desc=f"check {name}/{split}",
        unit="img",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    with bar:
        for result in _results(dataset, workers):
            if result.size is not None:
                report.image_sizes[result.size] += 1
            report.masks += int(result.has_mask)
            if result.class_pixels is not None:
                class_pixels += result.class_pixels
                report.ignored_pixels += result.ignored
            report.problems.extend(result.problems)
            bar.update(1)
    report.class_pixels = [int(c) for c in class_pixels]
    report.seconds = time.perf_counter() - start
    return report
