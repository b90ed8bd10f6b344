"""The threaded image/video pipeline of ``pspnet predict``: :func:`predict_inputs` and :class:`PredictionRun`.

Throughput: the model is loaded once; consecutive images of one size are batched; a small thread pool decodes
the next images and encodes the finished ones while the network runs. Read-ahead and pending writes are bounded,
so memory does not grow with the number of inputs.

One bad input never stops the others: any error while reading, predicting or writing one input (missing paths,
globs that match nothing, unreadable, non-image or non-regular files such as FIFOs, images without pixels or above
the pixel cap, undecodable videos, a failing forward) is reported naming the file and that input skipped; a batch
that fails in the network is retried one image at a time so that only the culprit fails. ``predictions.csv`` is
written in every case. KeyboardInterrupt and SystemExit still stop the run.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..atomic import temporary_beside
from ..errors import DataError, InputError
from ..inference import check_image_size
from ..segmenter import Segmenter, as_rgb_array
from ..visualize import colorize, overlay
from .inputs import Failure, InputItem, expand_inputs
from .outputs import OutputWriter, plan_outputs, write_atomic
from .table import CSV_NAME, csv_writer, pixel_counts, table_header, table_row
from .videos import FOURCC, frame_count, not_regular

__all__ = ["PredictReport", "PredictionRun", "predict_inputs"]


@dataclass
class PredictReport:
    """What :func:`predict_inputs` did: inputs that succeeded, failures, the CSV written and the time taken."""

    images: int = 0
    videos: int = 0
    frames: int = 0
    failures: list[Failure] = field(default_factory=list)
    csv_path: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def _message(source: Path, error: BaseException) -> str:
    """One line naming ``source`` for an error met on it; an unexpected kind of error also gives its class."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    text = lines[0].strip() if lines else type(error).__name__
    if not isinstance(error, (ValueError, OSError)) and lines:
        text = f"{type(error).__name__}: {text}"
    return text if str(source) in text else f"{source}: {text}"


class PredictionRun:
    """One run's thread pool, progress bar, report and CSV rows: predicts consecutive images (decoded ahead, batched
    by size, written in the pool) and videos (frame by frame), reporting each failure by file and going on."""

    def __init__(self, segmenter: Segmenter, outputs: OutputWriter, *, batch: int, workers: int, bar: tqdm):
        self.segmenter = segmenter
        self.outputs = outputs
        self.batch = batch
        self.workers = workers
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pspnet-predict")
        self.bar = bar
        self.report = PredictReport()
        self.rows: dict[int, list[object]] = {}
        self.writes: deque[tuple[int, InputItem, Future]] = deque()
        self.max_pending_writes = 2 * batch + workers

    def fail(self, source: object, message: str) -> None:
        """Record that ``source`` gave no output and print ``message`` on stderr, above the progress bar."""
        self.report.failures.append(Failure(str(source), message))
        self.bar.write(f"error: {message}", file=sys.stderr)

    def _row(self, item: InputItem, height: int, width: int, frames: int, counts: np.ndarray) -> list[object]:
        output = next(iter(self.outputs.names(item).values()))
        return table_row(item.source, output, height, width, frames, counts)

    def _retotal(self, change: int) -> None:
        if change and self.bar.total is not None:
            self.bar.total += change
            self.bar.refresh()

    # images

    def _finish_write(self) -> None:
        index, item, future = self.writes.popleft()
        try:
            future.result()
        except Exception as error:  # noqa: BLE001 - one input's failure never stops the others
            self.rows.pop(index, None)
            self.report.images -= 1
            self.fail(item.source, f"{item.source}: cannot write its predictions: {_message(item.source, error)}")

    def _compute(self, chunk: list[tuple[int, InputItem, np.ndarray]]) -> None:
        """Predict a batch of images of one size and queue their writes; when the batch fails in the network,
        each image is retried on its own so that only the culprit is reported."""
        try:
            proba = self.segmenter.infer([image for _, _, image in chunk])  # (N, K, H, W)
            labels = self.segmenter.labels(proba)
            saved = proba.half().cpu().numpy() if self.outputs.save_proba else None
            del proba
        except Exception as error:  # noqa: BLE001 - one input's failure never stops the others
            if len(chunk) > 1:
                for entry in chunk:
                    self._compute([entry])
                return
            _, item, _ = chunk[0]
            self.fail(item.source, _message(item.source, error))
            self.bar.update(1)
            return
        k = self.segmenter.num_classes
        for n, (index, item, image) in enumerate(chunk):
            self.rows[index] = self._row(item, *labels[n].shape, 1, pixel_counts(labels[n], k))
            self.report.images += 1
            proba_n = saved[n] if saved is not None else None
            future = self.pool.submit(self.outputs.write_image, item, image, labels[n], proba_n)
            self.writes.append((index, item, future))
            while len(self.writes) > self.max_pending_writes:
                self._finish_write()
        self.bar.update(len(chunk))

    def images(self, entries: list[tuple[int, InputItem]]) -> None:
        """Decode ahead in the pool, batch consecutive images of one size, write in the pool."""
        pending = iter(entries)
        reads: deque[tuple[int, InputItem, Future]] = deque()
        read_ahead = self.batch + self.workers
        chunk: list[tuple[int, InputItem, np.ndarray]] = []

        def fill() -> None:
            while len(reads) < read_ahead:
                entry = next(pending, None)
                if entry is None:
                    return
                reads.append((*entry, self.pool.submit(as_rgb_array, entry[1].source)))

        fill()
        while reads:
            index, item, future = reads.popleft()
            fill()
            try:
                image = future.result()
                check_image_size(image.shape[0], image.shape[1], self.segmenter.settings)
            except Exception as error:  # noqa: BLE001 - one input's failure never stops the others
                self.fail(item.source, _message(item.source, error))
                self.bar.update(1)
                continue
            if chunk and chunk[0][2].shape != image.shape:
                self._compute(chunk)
                chunk = []
            chunk.append((index, item, image))
            if len(chunk) == self.batch:
                self._compute(chunk)
                chunk = []
        if chunk:
            self._compute(chunk)
        while self.writes:
            self._finish_write()

    # videos

    def video(self, index: int, item: InputItem, expected: int) -> None:
        """Predict every frame and write the overlay video; ``expected`` is the bar's count for it (its frames as
        the container announces them), corrected as frames are decoded."""
        import cv2

        problem = not_regular(item.source)  # OpenCV would block on a FIFO
        if problem is not None:
            self.fail(item.source, problem)
            self.bar.update(expected)
            return
        capture = cv2.VideoCapture(str(item.source))
        if not capture.isOpened():
            capture.release()
            self.fail(item.source, f"{item.source}: not a video OpenCV can read")
            self.bar.update(expected)
            return
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and np.isfinite(fps) and fps > 0 else 25.0
        suffix = item.source.suffix.lower()
        target = self.outputs.out / self.outputs.names(item)["video"]
        writer = None
        frames = 0
        counts = np.zeros(self.segmenter.num_classes, dtype=np.int64)
        size: tuple[int, ...] | None = None
        temporary: str | None = None

        def read_chunk() -> list[np.ndarray]:
            chunk = []
            while len(chunk) < self.batch:
                ok, frame = capture.read()
                if not ok or frame is None:
                    break
                chunk.append(np.ascontiguousarray(frame[:, :, ::-1]))  # BGR -> RGB
            return chunk

        upcoming: Future | None = None
        try:
            handle, temporary = temporary_beside(target, suffix)  # the suffix tells OpenCV the container
            os.close(handle)
            upcoming = self.pool.submit(read_chunk)
            while True:
                chunk = upcoming.result()
                if not chunk:
                    break
                upcoming = self.pool.submit(read_chunk)  # decode the next frames while these are predicted
                if size is None:
                    size = chunk[0].shape
                    fourcc = cv2.VideoWriter_fourcc(*FOURCC[suffix])
                    writer = cv2.VideoWriter(temporary, fourcc, fps, (size[1], size[0]))
                    if not writer.isOpened():
                        raise OSError(f"OpenCV cannot write a {suffix} video with codec {FOURCC[suffix]}")
                for n, image in enumerate(chunk):
                    if image.shape != size:
                        raise DataError(
                            f"{item.source}: frame {frames + n} is {image.shape[1]}x{image.shape[0]} but the first "
                            f"frame is {size[1]}x{size[0]}; a video must keep one frame size"
                        )
                labels = self.segmenter.labels(self.segmenter.infer(chunk))
                for image, frame_labels in zip(chunk, labels):
                    counts += pixel_counts(frame_labels, self.segmenter.num_classes)
                    blend = overlay(image, colorize(frame_labels, self.outputs.palette), alpha=self.outputs.alpha)
                    writer.write(np.ascontiguousarray(blend[:, :, ::-1]))  # RGB -> BGR
                if frames + len(chunk) > expected:
                    self._retotal(frames + len(chunk) - max(expected, frames))
                frames += len(chunk)
                self.bar.update(len(chunk))
            if writer is not None:
                writer.release()
                writer = None
            if frames == 0:
                raise DataError(f"{item.source}: no frames could be decoded")
            os.replace(temporary, target)
        except Exception as error:  # noqa: BLE001 - one input's failure never stops the others
            self.fail(item.source, _message(item.source, error))
            return
        finally:
            if upcoming is not None:  # the reader thread must be done with the capture before it is released
                with contextlib.suppress(Exception):  # its error, if any, is not the one to report
                    upcoming.result()
            capture.release()
            if writer is not None:
                writer.release()
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
            self._retotal(-max(expected - frames, 0))  # the bar ends at the frames decoded
        assert size is not None
        self.rows[index] = self._row(item, size[0], size[1], frames, counts)
        self.report.videos += 1
        self.report.frames += frames

    def close(self) -> None:
        """Wait for the pool's pending reads and writes, then stop its threads."""
        self.pool.shutdown(wait=True)


def predict_inputs(
    segmenter: Segmenter,
    inputs: Sequence[str | os.PathLike] | Iterable[InputItem],
    out: str | os.PathLike,
    *,
    overlay: bool = False,
    alpha: float = 0.5,
    palette: Sequence[Sequence[int]] | None = None,
    save_proba: bool = False,
    batch: int | None = None,
    workers: int = 2,
    progress: bool = True,
) -> PredictReport:
    """Predict every input (paths, folders, globs, videos; see :func:`~pspnet.predict.inputs.expand_inputs`) and
    write the outputs described in :mod:`pspnet.predict.outputs` under ``out``. Returns the report; failures are
    printed on stderr as they happen and listed in ``report.failures``.

    ``palette`` defaults to the segmenter's (the checkpoint's); ``batch`` (default: ``segmenter.max_batch``) is
    how many images of one size go through the network at once; ``workers`` threads decode and encode files.
    Raises :class:`~pspnet.predict.outputs.UnsafeOutputs` before anything is written when an output would overwrite
    an input or leave ``out`` (:func:`~pspnet.predict.outputs.plan_outputs`), ``ValueError`` for a bad argument.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    batch = batch or segmenter.max_batch
    if batch < 1 or workers < 1:
        raise ValueError(f"batch and workers must be positive, got {batch} and {workers}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder", argument="out")
    colours = [tuple(int(v) for v in c) for c in (palette if palette is not None else segmenter.palette)]
    if len(colours) != segmenter.num_classes:
        raise ValueError(
            f"the palette has {len(colours)} colours but the model predicts {segmenter.num_classes} classes"
        )
    started = time.perf_counter()
    given = list(inputs)
    if given and all(isinstance(g, InputItem) for g in given):
        items, failures = list(given), []
    else:
        items, failures = expand_inputs(given, exclude=out)  # type: ignore[arg-type]
    items, clashes = plan_outputs(items, out, overlay=overlay, save_proba=save_proba)  # before any write
    failures += clashes
    out.mkdir(parents=True, exist_ok=True)
    outputs = OutputWriter(out, segmenter.classes, colours, overlay, alpha, save_proba)  # type: ignore[arg-type]
    # The progress bar counts images and video frames, so that its ETA holds for videos too.
    frame_counts = {index: frame_count(item.source) for index, item in enumerate(items) if item.video}
    total = len(items) - len(frame_counts) + sum(frame_counts.values())
    bar = tqdm(total=total, desc="predict", unit="img", disable=not progress, file=sys.stderr)
    run = PredictionRun(segmenter, outputs, batch=batch, workers=workers, bar=bar)
    for failure in failures:
        run.fail(failure.source, failure.message)
    try:
        # Images in runs between videos, so that the order of the inputs is kept and images batch across folders.
        images: list[tuple[int, InputItem]] = []
        for index, item in enumerate(items):
            if item.video:
                run.images(images)
                images = []
                run.video(index, item, frame_counts[index])
            else:
                images.append((index, item))
        run.images(images)
    finally:
        run.close()
        bar.close()
    report = run.report
    report.csv_path = out / CSV_NAME
    header = table_header(segmenter.classes)
    write_atomic(report.csv_path, csv_writer(header, (run.rows[index] for index in sorted(run.rows))))
    report.seconds = time.perf_counter() - started
    return report
