"""``Segmenter``: load a model file once, then predict label maps for photos of any size.

The one inference implementation lives in :mod:`pspnet.inference` (whole image, sliding windows, scales, flip,
precision); this class turns user inputs into what it takes and its probabilities into label maps::

    from pspnet.segmenter import Segmenter

    segmenter = Segmenter.from_checkpoint("camvid.safetensors")        # device "auto": CUDA, then MPS, then CPU
    labels = segmenter.predict("street.jpg")                           # (H, W) uint8 class ids at the photo's size
    proba = segmenter.predict_proba(pil_image)                         # (K, H, W) float32, sums to 1 over K
    many = segmenter.predict_batch([path, array, pil_image])           # equal sizes go through the network together
    deployed = Segmenter.from_checkpoint("camvid.onnx")                # ONNX Runtime: segmenter.backend == "onnxruntime"

An image is a path (``str`` or ``Path``), a PIL image or an ``(H, W, 3) uint8`` RGB numpy array. Paths and PIL
images are turned upright by their EXIF orientation, as every image viewer shows them; arrays are taken as they are.

A ``.onnx`` file (``pspnet export MODEL --input normalized --output logits``) runs on ONNX Runtime
(:class:`~pspnet.onnx_model.OnnxModel`, CPU, float32) through the same protocol; its card comes from its metadata.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from . import heap
from .data.io import read_image, to_rgb8, upright
from .errors import DataError, InputError
from .inference import (
    DEFAULT_MAX_PIXELS,
    InferenceSettings,
    check_image_size,
    class_ids,
    infer_proba,
    normalize,
    resolve_device,
    resolve_precision,
)
from .models.card import ModelCard
from .models.network import SegmentationNetwork
from .onnx_model import OnnxModel, is_onnx_path
from .runs import load_model
from .weights.model_file import make_card

__all__ = ["ImageInput", "Segmenter", "as_rgb_array", "prepare_for_inference", "size_batches"]

ImageInput = str | os.PathLike | Image.Image | np.ndarray


def as_rgb_array(image: ImageInput) -> np.ndarray:
    """An upright ``(H, W, 3) uint8`` RGB array from a path, a PIL image or an RGB uint8 array.

    Paths are read by :func:`pspnet.data.io.read_image` (EXIF orientation applied; a missing or unreadable file is
    a :class:`~pspnet.errors.DataError` naming it); PIL images follow the same rule (:func:`pspnet.data.io.upright`:
    a malformed EXIF block is a warning naming the file, the pixels are kept as stored) and get the same mode
    conversions (grey, palette, alpha dropped, 16-bit scaled); one whose pixels cannot be decoded (a truncated file
    opened with ``Image.open``) is a DataError naming its file. A wrongly shaped or typed array or an image without
    pixels is a ``ValueError``, any other object a ``TypeError``, saying what was expected.
    """
    if isinstance(image, (str, os.PathLike)):
        array = read_image(image)
        where = f"{os.fspath(image)}: "
    elif isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"the PIL image has no pixels (size {image.width}x{image.height})")
        try:  # Image.open decodes lazily: a truncated or corrupt file fails here, named, not deep in NumPy
            image.load()
        except MemoryError:
            raise
        except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, zlib errors...
            name = getattr(image, "filename", "") or "the PIL image"
            raise DataError(f"{name}: cannot decode the PIL image: {error}") from error
        array = to_rgb8(upright(image, getattr(image, "filename", "") or "the PIL image"), Path("<PIL image>"))
        where = ""
    elif isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"an image array must be RGB (H, W, 3), got shape {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"an image array must be uint8 RGB in [0, 255], got dtype {image.dtype}")
        array = np.ascontiguousarray(image)
        where = ""
    else:
        raise TypeError(
            f"an image must be a path, a PIL image or an (H, W, 3) uint8 numpy array, got {type(image).__name__}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{where}the image has no pixels (size {array.shape[1]}x{array.shape[0]})")
    return array


def prepare_for_inference(model: SegmentationNetwork, precision: str) -> SegmentationNetwork:
    """``model`` made ready for fast inference at ``precision``, in place, and returned: BatchNorm folded into the
    convolutions (:meth:`SegmentationNetwork.fold_batchnorm`), and for bf16 the weights cast to bfloat16 once, in the
    channels-last layout (inputs follow the weights' dtype; fp32 and fp16 keep float32 weights, fp16 by autocast).
    The model can no longer train; :meth:`Segmenter.from_checkpoint` does this to the model it loads."""
    model.fold_batchnorm()
    if precision == "bf16":
        model.to(dtype=torch.bfloat16, memory_format=torch.channels_last)
    return model


def size_batches(shapes: Sequence[tuple[int, ...]], max_batch: int) -> list[list[int]]:
    """Indices of ``shapes`` grouped by equal shape (first-appearance order), each group cut into chunks of at
    most ``max_batch``: ``size_batches([a, b, a], 4) == [[0, 2], [1]]`` for shapes a != b."""
    if max_batch < 1:
        raise ValueError(f"max batch must be positive, got {max_batch}")
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(index)
    return [group[i : i + max_batch] for group in groups.values() for i in range(0, len(group), max_batch)]


def _onnx_model(path: str | os.PathLike, device: str | torch.device, precision: str) -> tuple[OnnxModel, str, str]:
    """The ONNX Runtime model of ``path`` with its precision and why; refuses a device or precision it lacks."""
    if str(device) not in ("auto", "cpu"):
        raise InputError(
            f"{device!r}: an ONNX file runs on ONNX Runtime's CPU provider here; use cpu", argument="device"
        )
    if precision not in ("auto", "fp32"):
        raise InputError(
            f"{precision!r}: an ONNX file runs in fp32 on ONNX Runtime (an int8 file: int8 inside, fp32 in and "
            "out); use fp32, or the .safetensors model for bf16 or fp16",
            argument="precision",
        )
    model = OnnxModel(path)
    reason = "ONNX Runtime runs float32 files in fp32" if precision == "auto" else "as asked"
    if model.metadata.quantization:
        reason = f"{model.metadata.quantization}, float32 input and output"
    return model, "fp32", reason


class Segmenter:
    """A model in eval mode on its device, with the inference settings and the class names and colours it predicts.

    Build it with :meth:`from_checkpoint`, or from a model: ``Segmenter(model, settings)``. The classes, colours
    and normalisation come from ``model.card`` (for a model without a card, :func:`~pspnet.weights.make_card`'s
    defaults: ``class_0..``, the default palette, ImageNet normalisation); without ``settings``, the card's crop and
    base size with the defaults of :class:`~pspnet.inference.InferenceSettings` otherwise. ``max_batch`` caps how
    many images of one size go through the network at once in :meth:`predict_batch`. ``model`` may be an
    :class:`~pspnet.onnx_model.OnnxModel` (an ONNX file on ONNX Runtime); ``backend`` says which runs it:
    ``"torch"`` or ``"onnxruntime"``.
    """

    def __init__(
        self, model: SegmentationNetwork | OnnxModel, settings: InferenceSettings | None = None, *, max_batch: int = 4
    ):
        if max_batch < 1:
            raise ValueError(f"max batch must be positive, got {max_batch}")
        heap.keep_freed_memory()  # one forward's memory is reused by the next (pspnet.heap)
        self.model = model.eval()
        self.backend: str = getattr(model, "backend", "torch")
        self.settings = settings if settings is not None else InferenceSettings.from_card(model.card)
        self.card: ModelCard = model.card if model.card is not None else make_card(model.config)
        self.max_batch = max_batch
        parameter = next(model.parameters(), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")
        # inputs go in in the model's dtype: float32, float64 in numerical tests
        self.dtype = parameter.dtype if parameter is not None else torch.float32
        self.mean, self.std = self.card.mean, self.card.std
        self.precision_reason = "as the settings say"
        self.classes: list[str] = list(self.card.classes)
        self.palette: list[tuple[int, int, int]] = list(self.card.palette)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "auto",
        precision: str = "auto",
        mode: str = "auto",
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        *,
        max_batch: int = 4,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> Segmenter:
        """Load a model file or a training run directory (its best, else latest, model) once.

        ``device``: "auto" (CUDA, then Apple MPS, then CPU) or a torch device name. ``precision``: "auto" (bf16
        where the device computes it natively, else fp32: :func:`pspnet.inference.resolve_precision`; the choice and
        why are in ``precision_reason``), "fp32", "bf16" or "fp16" (autocast, CUDA). The model is prepared for
        inference once, here: BatchNorm folded into the convolutions (:meth:`SegmentationNetwork.fold_batchnorm`), and for bf16
        the weights cast to bfloat16 in the channels-last layout. ``mode``: "whole", "slide" or "auto" (sliding windows when a side exceeds the
        checkpoint's crop after resizing the long side to its base size). ``scales`` and ``flip``: multi-scale and
        flip averaging of the official test protocol. Crop and base size come from the checkpoint's model card.
        A ``.onnx`` path (exported with ``--input normalized --output logits``) runs on ONNX Runtime
        (:class:`~pspnet.onnx_model.OnnxModel`): on the CPU (``device`` "auto" or "cpu") in float32 (``precision``
        "auto" or "fp32"; another is an :class:`~pspnet.errors.InputError` naming ``precision``).
        ``max_pixels``: the most pixels of any image inference makes (:data:`pspnet.inference.DEFAULT_MAX_PIXELS`,
        16.8 MP); a photo above it is refused with a ``ValueError``, and settings that could exceed it (a base size
        at the largest scale, as a square; the file's own crop or base size included) are refused here with a
        ``ValueError`` naming the file and the limit.
        """
        model: SegmentationNetwork | OnnxModel
        if is_onnx_path(path):
            model, chosen, reason = _onnx_model(path, device, precision)
        else:
            model = load_model(path, device=resolve_device(device))
            chosen, reason = resolve_precision(precision, next(model.parameters()).device)
            prepare_for_inference(model, chosen)
        try:
            settings = InferenceSettings.from_card(
                model.card,
                precision=chosen,
                mode=mode,
                scales=tuple(float(s) for s in scales),
                flip=bool(flip),
                max_pixels=max_pixels,
            )
        except ValueError as error:  # the file's crop or base size, or the arguments, beyond the limits
            raise ValueError(f"inference settings for {os.fspath(path)}: {error}") from None
        segmenter = cls(model, settings, max_batch=max_batch)
        segmenter.precision_reason = reason
        return segmenter

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    @property
    def label_dtype(self) -> np.dtype:
        """uint8 when every class id fits in 8 bits (at most 256 classes), else int32."""
        return np.dtype(np.uint8 if self.num_classes <= 256 else np.int32)

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"Segmenter({self.num_classes} classes on {self.device}, mode {s.mode}, crop {s.crop_size}, base size "
            f"{s.base_size}, scales {list(s.scales)}, flip {s.flip}, {s.precision}, max batch {self.max_batch})"
        )

    # -- the one path every prediction takes ---------------------------------------------------------------------

    def infer(self, images: Sequence[np.ndarray]) -> Tensor:
        """Probabilities ``(N, K, H, W)`` float32 on the model's device for upright RGB uint8 arrays of one size."""
        if not images:
            raise ValueError("no images to infer")
        shape = images[0].shape
        if any(image.shape != shape for image in images):
            raise ValueError(f"images of one batch must have one size, got {sorted({i.shape for i in images})}")
        batch = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
        # normalised in float32 (float64 for numerical tests), then in the weights' dtype and memory layout
        x = normalize(batch, self.mean, self.std, dtype=torch.float64 if self.dtype == torch.float64 else torch.float32)
        layout = torch.channels_last if self.dtype == torch.bfloat16 else torch.contiguous_format
        return infer_proba(self.model, x.to(self.dtype).contiguous(memory_format=layout), self.settings)

    def labels(self, proba: Tensor) -> np.ndarray:
        """``(N, K, H, W)`` probabilities -> ``(N, H, W)`` class ids on the CPU (uint8, int32 above 256 classes)."""
        ids = class_ids(proba)
        return ids.to("cpu", torch.uint8 if self.label_dtype == np.uint8 else torch.int32).numpy()

    def _checked(self, image: ImageInput) -> np.ndarray:
        """``as_rgb_array(image)``, refused (ValueError naming its file, if it has one) when it is above the
        pixel cap, before any image is predicted."""
        array = as_rgb_array(image)
        try:
            check_image_size(array.shape[0], array.shape[1], self.settings)
        except ValueError as error:
            name = os.fspath(image) if isinstance(image, (str, os.PathLike)) else getattr(image, "filename", "")
            raise ValueError(f"{name}: {error}" if name else str(error)) from None
        return array

    def _run(self, images: Sequence[ImageInput], max_batch: int | None, want_proba: bool) -> list[np.ndarray]:
        arrays = [self._checked(image) for image in images]
        results: list[np.ndarray | None] = [None] * len(arrays)
        for chunk in size_batches([a.shape for a in arrays], max_batch or self.max_batch):
            proba = self.infer([arrays[i] for i in chunk])
            outputs = proba.to("cpu").numpy() if want_proba else self.labels(proba)
            for k, index in enumerate(chunk):
                results[index] = outputs[k]
        return results  # type: ignore[return-value]

    # -- public predictions --------------------------------------------------------------------------------------

    def predict(self, image: ImageInput) -> np.ndarray:
        """``(H, W)`` class ids (uint8; int32 above 256 classes) at the input's (upright) size."""
        return self._run([image], 1, want_proba=False)[0]

    def predict_proba(self, image: ImageInput) -> np.ndarray:
        """``(K, H, W)`` float32 class probabilities at the input's (upright) size."""
        return self._run([image], 1, want_proba=True)[0]

    def predict_batch(self, images: Sequence[ImageInput], *, max_batch: int | None = None) -> list[np.ndarray]:
        """Label maps of ``images`` (any mix of sizes and input types), in input order.

        Images of equal size go through the network together, at most ``max_batch`` (default: the segmenter's)
        at once. A bad image raises before any is predicted.
        """
        return self._run(list(images), max_batch, want_proba=False)

    def predict_proba_batch(self, images: Sequence[ImageInput], *, max_batch: int | None = None) -> list[np.ndarray]:
        """``(K, H, W)`` float32 probabilities of ``images``, batched as in :meth:`predict_batch`."""
        return self._run(list(images), max_batch, want_proba=True)
