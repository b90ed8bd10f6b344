"""Video files for OpenCV: the regular-file check made before opening one, its announced frame count, codecs."""

from __future__ import annotations

from pathlib import Path

from ..data.io import open_regular
from ..errors import DataError

__all__ = ["FOURCC", "frame_count", "not_regular"]

# OpenCV codecs per container: mp4v (MPEG-4 part 2) is what OpenCV's own builds write without extra libraries.
FOURCC = {".mp4": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}


def not_regular(path: Path) -> str | None:
    """Why ``path`` cannot be read as a video file (missing, a folder, a FIFO...), or None for a regular file:
    :func:`pspnet.data.io.open_regular`'s check, made before OpenCV opens it (OpenCV would block on a FIFO)."""
    try:
        with open_regular(path, "video"):
            return None
    except DataError as error:
        return str(error)


def frame_count(path: Path) -> int:
    """The frame count a video's container announces (at least 1; 1 when it cannot be opened or is no regular
    file, which OpenCV would wait on forever)."""
    import cv2

    if not_regular(path) is not None:
        return 1
    try:
        capture = cv2.VideoCapture(str(path))
    except Exception:  # noqa: BLE001 - the video step reports the file
        return 1
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if capture.isOpened() else 0
    except (ValueError, OverflowError):  # a NaN or infinite count
        count = 0
    finally:
        capture.release()
    return max(count, 1)
