"""``pspnet export``: a model as one self-describing deployment file, checked against eager PyTorch before it lands.

The file computes :class:`DeployedForward`: the model with BatchNorm folded into its convolutions (float32, eval
mode), wrapped so that a deployer needs nothing but the file. By default it takes ``uint8`` RGB images
``(N, H, W, 3)`` (the layout image decoders give) and normalises them inside the graph with the model card's mean
and std; ``input_kind="normalized"`` takes float32 ``(N, 3, H, W)`` already normalised instead. It returns, as
chosen, logits ``(N, K, H, W)`` float32, their softmax over the K classes, or class ids ``(N, H, W)`` int64 (the
argmax), always at the input's size. Batch, height and width are dynamic unless ``static_size`` fixes H and W.
``precision="fp16"`` (ONNX only) makes a float16 graph for GPU runtimes: the model's weights and activations in
float16, the input and output kinds as above (cast to float16 inside, logits cast back to float32).

Formats (:data:`FORMATS`): ONNX (``torch.onnx.export`` from a ``torch.export`` program), TorchScript
(``torch.jit.trace``) and a ``torch.export`` ExportedProgram (``torch.export.save``). Every file carries the model
card (classes, palette, normalisation, crop and base size, architecture, ...) and what its input and output are,
as string entries (:func:`export_metadata`): an ONNX file's ``metadata_props``, a TorchScript or ExportedProgram
archive's extra file ``pspnet_metadata.json``. :func:`read_metadata` reads them back through the model card's one
parser.

The file is written beside its destination under a temporary name and checked there (:func:`check_export`): it is
run by its runtime (ONNX Runtime; ``torch.jit.load`` / ``torch.export.load``) on random images at sizes the pyramid
bins do not divide and compared with the eager model as loaded (BatchNorm not folded). Only a file whose logits lie
within :data:`LOGIT_RTOL` of the largest logit and whose labels equal eager's on at least
:data:`MIN_LABEL_AGREEMENT` of the pixels is renamed into place; otherwise an :class:`~pspnet.errors.ExportError`
says what differed and nothing is left at the destination. A float16 file is held to a bound derived from float16's
rounding (:func:`fp16_logit_rtol`) and to equal labels wherever eager's two best logits are further apart than
twice that bound; it is run twice, as written and with its float16 storage emulated (:func:`fp16_storage_emulated`),
because ONNX Runtime's CPU provider computes float16 convolutions and most other float16 operators in float32.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .atomic import temporary_beside
from .errors import ExportError
from .inference import normalize
from .models.card import ModelCard
from .models.config import ARCHITECTURES
from .models.network import SegmentationNetwork
from .models.ppm import PyramidPoolingModule
from .segmenter import prepare_for_inference
from .weights.exported import (
    FORMATS,
    INPUT_KINDS,
    METADATA_FILE,
    OUTPUT_KINDS,
    PRECISIONS,
    SUFFIXES,
    ExportedMetadata,
    export_metadata,
    parse_metadata,
)
from .weights.model_file import make_card

__all__ = [
    "CHECK_SIZES",
    "FORMATS",
    "INPUT_KINDS",
    "INT8_DECIDED_MARGIN",
    "INT8_MIN_LABEL_AGREEMENT",
    "LOGIT_RTOL",
    "MAX_CALIBRATION_IMAGES",
    "METADATA_FILE",
    "MIN_LABEL_AGREEMENT",
    "OUTPUT_KINDS",
    "PRECISIONS",
    "SUFFIXES",
    "CheckReport",
    "DeployedForward",
    "ExportReport",
    "ExportedMetadata",
    "Int8Check",
    "SizeCheck",
    "calibration_images",
    "check_export",
    "check_int8",
    "export_metadata",
    "export_model",
    "fp16_logit_rtol",
    "fp16_storage_emulated",
    "quantize_int8",
    "read_metadata",
    "require_onnx",
]

# (batch, height, width) of the check: the 1/8 feature maps (13x10, 16x9) are divisible by none of the bins 2, 3, 6.
CHECK_SIZES: tuple[tuple[int, int, int], ...] = ((1, 97, 75), (2, 121, 67))
# The product guarantee of an fp32 export: logits within 1e-4 of the largest logit, labels equal on 99.99% of pixels.
LOGIT_RTOL = 1e-4
MIN_LABEL_AGREEMENT = 0.9999
FP16_UNIT_ROUNDOFF = 2.0**-11  # float16's u: the largest relative error of rounding a number to float16
# The example batch of the export (2: a batch of 1 would make torch.export specialise the batch dimension to 1) and
# the example size of a dynamic export (height != width, so that the two stay separate symbols).
_EXAMPLE = (2, 72, 88)
_ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")


def require_onnx() -> None:
    """Raise an :class:`~pspnet.errors.ExportError` saying how to install them when onnx, onnxruntime or onnxscript
    (``torch.onnx``'s exporter) cannot be imported: they are the optional extra ``pspnet[onnx]``."""
    missing = []
    for name in _ONNX_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(
            f"ONNX export needs the packages {', '.join(_ONNX_PACKAGES)} (missing: {', '.join(missing)}); install "
            "them with: pip install 'pspnet[onnx]'"
        )


class DeployedForward(nn.Module):
    """What an exported file computes: ``model`` (called as is: pass it BatchNorm-folded and in eval mode, and in
    float16 for ``precision="fp16"``) between the input and output conventions of a deployment.

    ``forward(image)``: with ``input_kind="uint8-rgb"`` a ``(N, H, W, 3)`` uint8 RGB tensor, normalised here as
    :func:`pspnet.inference.normalize` does (``(x - mean) / std`` in float32, mean and std per RGB channel on the
    0-255 scale); with ``"normalized"`` a ``(N, 3, H, W)`` float32 tensor passed to the model as it is. Returns
    logits ``(N, K, H, W)`` float32, their softmax over K (``"proba"``) or the argmax ``(N, H, W)`` int64
    (``"labels"``). With ``precision="fp16"`` the normalised float32 image is cast to float16 for the model and its
    logits back to float32, so the softmax and argmax run in float32 and the ends are those of a float32 file.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        input_kind: str,
        output_kind: str,
        precision: str = "fp32",
    ):
        super().__init__()
        if input_kind not in INPUT_KINDS:
            raise ValueError(f"input kind must be one of {list(INPUT_KINDS)}, got {input_kind!r}")
        if output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output kind must be one of {list(OUTPUT_KINDS)}, got {output_kind!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.model = model
        self.input_kind = input_kind
        self.output_kind = output_kind
        self.precision = precision
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: Tensor) -> Tensor:
        if self.input_kind == "uint8-rgb":
            x = (image.permute(0, 3, 1, 2).to(torch.float32) - self.mean) / self.std  # (N, 3, H, W)
        else:
            x = image
        if self.precision == "fp16":
            x = x.to(torch.float16)
        logits = self.model(x)  # (N, K, H, W)
        if self.precision == "fp16":
            logits = logits.to(torch.float32)
        if self.output_kind == "proba":
            return torch.softmax(logits, dim=1)
        if self.output_kind == "labels":
            return logits.argmax(dim=1)  # (N, H, W) int64
        return logits


def fp16_logit_rtol(model: nn.Module) -> float:
    """The float16 file's bound on ``max |logits_fp16 - logits_eager| / max |logits_eager|``, from float16's unit
    roundoff u = 2^-11 and the depth of ``model``.

    First order, as the bfloat16 bound of the tests (``tests/rounding.py``): every convolution of the forward pass
    (the aux head's excepted: eval mode does not run it) rounds its input, its weights and its output to float16
    and is followed by at most one more rounding step (a residual addition, an upsampling, the pyramid's pooling
    product): 4 u per layer, and the relative errors of the layers on a path add up. Everything that is not a
    float16 rounding (the order of the float32 sums inside the kernels, BatchNorm folded) is what the float32 file
    is held to, :data:`LOGIT_RTOL`. The conv after a pyramid pooling module counts twice: on the pooled grids it is
    a 1x1 map and two interpolation products (:meth:`~pspnet.models.ppm.PyramidPoolingModule.convolve`). It
    assumes kernels that accumulate their sums in float32 (ONNX Runtime's CPU provider computes them in float32
    altogether); one that sums thousands of products in float16 is not covered.
    Tiny test model (ResNet-18, 30 layers): 0.059; PSPNet50: 0.121; PSPNet101: 0.221.
    """
    aux = getattr(model, "aux_head", None)
    skipped = set() if aux is None else {id(module) for module in aux.modules()}
    layers = sum(isinstance(m, nn.Conv2d) and id(m) not in skipped for m in model.modules())
    layers += sum(isinstance(m, PyramidPoolingModule) for m in model.modules())  # the conv after it: two layers
    return 4 * layers * FP16_UNIT_ROUNDOFF + LOGIT_RTOL


def _format_of(path: Path) -> str:
    for name, suffix in SUFFIXES.items():
        if path.suffix == suffix:
            return name
    raise ExportError(f"{path}: not an exported file name ({', '.join(f'*{s}' for s in SUFFIXES.values())})")


def read_metadata(path: str | os.PathLike[str], *, format: str | None = None) -> ExportedMetadata:
    """The metadata of an exported file (``format`` defaults to the one its suffix names, :data:`SUFFIXES`)."""
    path = Path(path)
    format = format or _format_of(path)
    if format == "onnx":
        require_onnx()
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        props = {entry.key: entry.value for entry in proto.metadata_props}
    else:
        extra = {METADATA_FILE: ""}
        with _quiet_exporter():
            if format == "torchscript":
                torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
            else:
                torch.export.load(str(path), extra_files=extra)
        props = json.loads(extra[METADATA_FILE] or "{}")
    return parse_metadata(props, path)


# -- the check -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeCheck:
    """The exported file against eager PyTorch on ``batch`` random images of ``height x width`` pixels.

    ``logit_rdiff``: ``max |logits_file - logits_eager| / max |logits_eager|`` (None when the file's output is not
    logits and its graph gives none to compare); ``proba_diff``: the largest absolute probability difference (a
    ``proba`` output); ``label_agreement``: the share of the ``pixels`` (batch x height x width) whose labels are
    equal (the argmax of each side's logits or probabilities; a ``labels`` output's ids). A float16 file's checks
    also say how it was run (``variant``: ``"as written"`` or ``"float16 emulated"``), and count the
    ``decided_pixels``, those whose two best eager logits are further apart than twice the logit bound (rounding
    within the bound cannot change their label), and the share of them with equal labels (``decided_agreement``,
    None when there are none)."""

    batch: int
    height: int
    width: int
    logit_rdiff: float | None
    proba_diff: float | None
    proba_tolerance: float | None
    label_agreement: float
    pixels: int
    variant: str = ""
    decided_pixels: int | None = None
    decided_agreement: float | None = None


@dataclass(frozen=True)
class CheckReport:
    """Every size checked (:class:`SizeCheck`), the runtime that ran the file, and the guarantee it is held to:
    logits within ``logit_rtol`` of the largest logit, and labels equal on at least ``min_label_agreement`` of the
    pixels (None: not required, as for a float16 file, whose labels must be equal on the clearly decided pixels)."""

    runtime: str
    sizes: tuple[SizeCheck, ...]
    logit_rtol: float = LOGIT_RTOL
    min_label_agreement: float | None = MIN_LABEL_AGREEMENT

    @property
    def logit_rdiff(self) -> float | None:
        diffs = [s.logit_rdiff for s in self.sizes if s.logit_rdiff is not None]
        return max(diffs) if diffs else None

    @property
    def label_agreement(self) -> float:
        """The share of equal labels over the pixels of every size together."""
        equal = sum(s.label_agreement * s.pixels for s in self.sizes)
        return equal / sum(s.pixels for s in self.sizes)

    def problems(self) -> list[str]:
        """What fails the guarantee (empty when the file passes)."""
        out = []
        for s in self.sizes:
            where = f"at {s.batch}x{s.height}x{s.width}" + (f" ({s.variant})" if s.variant else "")
            if s.logit_rdiff is not None and not s.logit_rdiff <= self.logit_rtol:
                out.append(
                    f"{where} the logits differ by {s.logit_rdiff:.3g} of the largest (at most {self.logit_rtol:.3g})"
                )
            if s.proba_diff is not None and not s.proba_diff <= (s.proba_tolerance or 0.0):
                out.append(f"{where} the probabilities differ by {s.proba_diff:.3g} (at most {s.proba_tolerance:.3g})")
            if self.min_label_agreement is not None and not s.label_agreement >= self.min_label_agreement:
                out.append(
                    f"{where} the labels are equal on {100 * s.label_agreement:.4f}% of the pixels (at least "
                    f"{100 * self.min_label_agreement:g}%)"
                )
            if s.decided_agreement is not None and not s.decided_agreement >= 1.0:
                out.append(
                    f"{where} the labels differ on {100 * (1 - s.decided_agreement):.4f}% of the {s.decided_pixels:,} "
                    "clearly decided pixels (none may)"
                )
        return out

    @property
    def passed(self) -> bool:
        return not self.problems()


def _eager_logits(model: nn.Module, images: np.ndarray, card: ModelCard, input_kind: str) -> Tensor:
    """The eager model's float32 logits ``(N, K, H, W)`` for the check's inputs (uint8 NHWC or normalised NCHW)."""
    x = torch.from_numpy(images)
    if input_kind == "uint8-rgb":
        x = normalize(x.permute(0, 3, 1, 2), card.mean, card.std)  # as Segmenter does
    with torch.no_grad():
        return model(x)


def _check_inputs(batch: int, height: int, width: int, card: ModelCard, input_kind: str, seed: int) -> np.ndarray:
    """Random uint8 RGB images (N, H, W, 3), or their normalisation (N, 3, H, W) float32."""
    images = np.random.default_rng(seed).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    if input_kind == "uint8-rgb":
        return images
    return normalize(torch.from_numpy(images).permute(0, 3, 1, 2), card.mean, card.std).numpy()


def _compare(
    output_kind: str,
    got: np.ndarray,
    got_logits: np.ndarray | None,
    expected: Tensor,
    shape: tuple[int, int, int],
    *,
    logit_rtol: float = LOGIT_RTOL,
    decided: bool = False,
    variant: str = "",
) -> SizeCheck:
    """One :class:`SizeCheck` from a file's output (and its logits, if the runtime gave them) and eager logits;
    with ``decided``, the agreement on the pixels whose two best eager logits are more than ``2 * logit_rtol`` of
    the largest logit apart too."""
    reference = expected.numpy()
    scale = float(np.abs(reference).max()) or 1.0
    logits = got if output_kind == "logits" else got_logits
    logit_rdiff = None if logits is None else float(np.abs(logits - reference).max()) / scale
    proba_diff = proba_tolerance = None
    if output_kind == "proba":
        proba_diff = float(np.abs(got - torch.softmax(expected, dim=1).numpy()).max())
        # the softmax moves by at most half the largest logit change (|dp_i| <= 2 p_i (1 - p_i) max|dz|), so the
        # logit guarantee allows this much
        proba_tolerance = 0.5 * logit_rtol * scale
    labels = got if output_kind == "labels" else got.argmax(axis=1)
    same = labels == reference.argmax(axis=1)
    decided_pixels = decided_agreement = None
    if decided:  # each logit within logit_rtol * scale: a lead of more than twice that survives
        top2 = np.sort(reference, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 2 * logit_rtol * scale
        decided_pixels = int(clear.sum())
        decided_agreement = float(same[clear].mean()) if decided_pixels else None
    batch, height, width = shape
    return SizeCheck(
        batch,
        height,
        width,
        logit_rdiff,
        proba_diff,
        proba_tolerance,
        float(same.mean()),
        batch * height * width,
        variant,
        decided_pixels,
        decided_agreement,
    )


def fp16_storage_emulated(proto: Any, *, where: Any = "the ONNX model") -> Any:
    """A copy of the float16 ONNX model ``proto`` that runs in float32 but rounds every float16 tensor as the file
    stores it: float16 weights and constants become float32 (exactly), casts to float16 become casts to float32, and
    after every operator whose output is float16 a Cast to float16 and back rounds the output.

    ONNX Runtime's CPU provider has no float16 kernels for Conv, Add, Div, Floor, MatMul, Resize, MaxPool and Relu
    (its OperatorKernels.md lists them for float and double only; for this graph on x86-64 every arithmetic operator
    ran in float32): it inserts casts around them and then drops those between two float32 operators, so the file
    as written runs with float16 weights but with nearly no float16 rounding of activations, and even a logit of
    190,000 (float16 tops out at 65,504) comes out finite. Run with graph optimisations off (ONNX Runtime would
    fold the Cast pairs away), this copy computes what a runtime that stores every tensor in float16 and sums in
    float32 computes. An operator whose output type shape inference cannot tell is an ExportError naming ``where``
    (the file), never skipped.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = copy.deepcopy(proto)
    graph = proto.graph
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.input, *inferred.output, *inferred.value_info]}
    types.update({t.name: t.data_type for t in graph.initializer})

    def as_float32(tensor: Any) -> Any:
        return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)

    for i, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.FLOAT16:
            graph.initializer[i].CopyFrom(as_float32(tensor))
    nodes = []
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == TensorProto.FLOAT16:
                attribute.t.CopyFrom(as_float32(attribute.t))
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT16:
                attribute.i = TensorProto.FLOAT
        nodes.append(node)
        for k, name in enumerate(node.output):
            if not name:
                continue
            if name not in types:
                raise ExportError(
                    f"{where}: cannot emulate float16 storage: the type of {name!r} ({node.op_type}) is unknown"
                )
            if types[name] == TensorProto.FLOAT16:
                node.output[k] = f"{name}__float32"
                nodes.append(
                    helper.make_node("Cast", [f"{name}__float32"], [f"{name}__float16"], to=TensorProto.FLOAT16)
                )
                nodes.append(helper.make_node("Cast", [f"{name}__float16"], [name], to=TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    for info in [*graph.input, *graph.output, *graph.value_info]:
        if info.type.tensor_type.elem_type == TensorProto.FLOAT16:
            info.type.tensor_type.elem_type = TensorProto.FLOAT
    return proto


def _onnx_runner(
    path: Path, output_kind: str, *, emulate_fp16: bool = False
) -> tuple[Callable[[np.ndarray], tuple[np.ndarray, Any]], str]:
    """A function running the ONNX file in ONNX Runtime: input -> (output, logits or None). For a ``proba`` or
    ``labels`` file the logits are read from the same graph: its last node (Softmax or ArgMax) has them as input,
    exposed as an extra output of an in-memory copy of the file. ``emulate_fp16``: run
    :func:`fp16_storage_emulated`'s copy instead, without graph optimisations."""
    import onnx
    import onnxruntime

    onnx.checker.check_model(str(path))
    proto = onnx.load(str(path))
    options = onnxruntime.SessionOptions()
    if emulate_fp16:
        proto = fp16_storage_emulated(proto, where=path)
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    logits_name = None
    if output_kind != "logits":
        producer = next((n for n in proto.graph.node if proto.graph.output[0].name in n.output), None)
        if producer is not None and producer.op_type in ("Softmax", "ArgMax"):
            logits_name = producer.input[0]
            proto.graph.output.append(onnx.helper.make_tensor_value_info(logits_name, onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = session.run(None, {input_name: x})
        return outputs[0], outputs[1] if logits_name is not None else None

    return run, f"ONNX Runtime {onnxruntime.__version__}"


def _torch_runner(path: Path, format: str) -> tuple[Callable[[np.ndarray], tuple[np.ndarray, Any]], str]:
    """A function running a TorchScript or ExportedProgram file reloaded by torch: input -> (output, None)."""
    if format == "torchscript":
        module = torch.jit.load(str(path), map_location="cpu")
        runtime = f"torch.jit.load (torch {torch.__version__})"
    else:
        module = torch.export.load(str(path)).module()
        runtime = f"torch.export.load (torch {torch.__version__})"

    def run(x: np.ndarray) -> tuple[np.ndarray, None]:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy(), None

    return run, runtime


def check_export(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    card: ModelCard,
    format: str,
    input_kind: str,
    output_kind: str,
    sizes: Sequence[tuple[int, int, int]] = CHECK_SIZES,
    seed: int = 0,
    precision: str = "fp32",
) -> CheckReport:
    """Run the exported file at ``path`` in its runtime and ``model`` (eager, float32, eval mode) on the same random
    images, one batch per ``(batch, height, width)`` in ``sizes``, and compare (:class:`SizeCheck`). The report's
    :meth:`~CheckReport.problems` say what fails the guarantee; nothing is raised for a difference.

    A float16 ONNX file (``precision="fp16"``) is run twice per batch, as written and with its float16 storage
    emulated (:func:`fp16_storage_emulated`), and held to :func:`fp16_logit_rtol` and to equal labels on the
    clearly decided pixels instead of :data:`LOGIT_RTOL` and :data:`MIN_LABEL_AGREEMENT`."""
    path = Path(path)
    fp16 = precision == "fp16"
    with _quiet_exporter():
        if format != "onnx":
            runners = [(*_torch_runner(path, format), "")]
        elif not fp16:
            runners = [(*_onnx_runner(path, output_kind), "")]
        else:
            runners = [
                (*_onnx_runner(path, output_kind), "as written"),
                (*_onnx_runner(path, output_kind, emulate_fp16=True), "float16 emulated"),
            ]
    logit_rtol = fp16_logit_rtol(model) if fp16 else LOGIT_RTOL
    checks = []
    for i, (batch, height, width) in enumerate(sizes):
        x = _check_inputs(batch, height, width, card, input_kind, seed + i)
        expected = _eager_logits(model, x, card, input_kind)
        for run, _, variant in runners:
            got, got_logits = run(x)
            checks.append(
                _compare(
                    output_kind,
                    got,
                    got_logits,
                    expected,
                    (batch, height, width),
                    logit_rtol=logit_rtol,
                    decided=fp16,
                    variant=variant,
                )
            )
    return CheckReport(
        runtime=runners[0][1],
        sizes=tuple(checks),
        logit_rtol=logit_rtol,
        min_label_agreement=None if fp16 else MIN_LABEL_AGREEMENT,
    )


# -- writing ---------------------------------------------------------------------------------------------------


def _dynamic_shapes(input_kind: str, static: bool) -> dict[str, dict[int, Any]]:
    """torch.export's dynamic_shapes for the image: the batch always, height and width unless static (their range
    is found by torch.export: Dim.DYNAMIC)."""
    dim = torch.export.Dim
    spatial = (1, 2) if input_kind == "uint8-rgb" else (2, 3)
    dims: dict[int, Any] = {0: dim("batch", min=1)}
    if not static:
        dims.update({spatial[0]: dim.DYNAMIC, spatial[1]: dim.DYNAMIC})
    return {"image": dims}


def _dynamic_names(program: torch.export.ExportedProgram, input_kind: str) -> dict[str, str]:
    """{symbol: name} of the image's dynamic sides in ``program`` ("s77" -> "batch", ...)."""
    image = [node for node in program.graph.nodes if node.op == "placeholder"][-1].meta["val"]
    names = {0: "batch", **({1: "height", 2: "width"} if input_kind == "uint8-rgb" else {2: "height", 3: "width"})}
    return {str(image.shape[axis]): name for axis, name in names.items() if isinstance(image.shape[axis], torch.SymInt)}


def _min_size(program: torch.export.ExportedProgram, input_kind: str) -> tuple[int, int]:
    """The smallest (height, width) ``program`` accepts, from torch.export's ranges of its symbols (9 x 9 for output
    stride 8: a 1x1 feature map makes align_corners upsampling a special case)."""
    lower = {str(symbol): int(bounds.lower) for symbol, bounds in program.range_constraints.items()}
    names = {name: symbol for symbol, name in _dynamic_names(program, input_kind).items()}
    return lower.get(names.get("height", ""), 1), lower.get(names.get("width", ""), 1)


def _rename_dims(proto: Any, names: Mapping[str, str]) -> None:
    """Give the ONNX graph's dynamic sides their names (``batch``, ``height``, ``width``) instead of torch's
    symbols, in its inputs, outputs and value infos (expressions like ``s53//8`` included)."""
    if not names:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    for info in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in info.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: names[m.group(1)], dim.dim_param)


def _doc_string(meta: Mapping[str, str], card: ModelCard) -> str:
    return (
        f"{ARCHITECTURES[card.config.architecture].title} semantic segmentation, {card.num_classes} classes, "
        f"exported by {meta['exported_by']}. "
        f"Inside: {PRECISIONS[meta.get('precision', 'fp32')]}. "
        f"Input 'image': {INPUT_KINDS[meta['input']]}; output '{meta['output']}': {OUTPUT_KINDS[meta['output']]}. "
        "metadata_props hold the classes, palette, normalisation, crop and base size and the architecture (JSON)."
    )


def _write_onnx(
    program: torch.export.ExportedProgram,
    example: Tensor,
    path: Path,
    meta: dict[str, str],
    card: ModelCard,
    *,
    input_kind: str,
    output_kind: str,
    opset: int | None,
) -> int | None:
    """Translate ``program`` to ONNX, add ``meta`` as metadata_props, write it to ``path``; returns its opset."""
    import onnx
    import onnxscript.optimizer

    try:
        onnx_program = torch.onnx.export(
            program,
            (example,),
            input_names=["image"],
            output_names=[output_kind],
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    except Exception as error:
        detail = " ".join(str(error).split())[:300]
        if opset is not None:
            raise ExportError(f"{opset}: torch.onnx.export failed at this opset: {detail}", argument="opset") from error
        raise ExportError(f"torch.onnx.export failed: {detail}") from error
    # PyramidPoolingModule.convolve slices the head conv's weight and reorders its pyramid part into 1x1 maps: fold
    # that into initializers, as every other weight is (onnxscript's default limits leave tensors over 8192 values
    # unfolded, and int8 quantisation needs every Conv weight to be an initializer)
    onnxscript.optimizer.fold_constants(onnx_program.model, input_size_limit=2**31, output_size_limit=2**31)
    onnxscript.optimizer.remove_unused_nodes(onnx_program.model)
    proto = onnx_program.model_proto
    written = next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), None)
    if opset is not None and written != opset:  # torch.onnx keeps its own opset when it cannot convert
        raise ExportError(
            f"{opset}: torch.onnx could not convert the model to this opset (it would be {written}); choose another",
            argument="opset",
        )
    _rename_dims(proto, _dynamic_names(program, input_kind))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = _doc_string(meta, card)
    if proto.ByteSize() >= 2**31:
        raise ExportError("the model is over 2 GB, the most one ONNX file holds; nothing was written")
    onnx.save_model(proto, str(path))
    return written


# Loggers of torch.onnx and onnxscript: the registry's notes on torchvision operators it skips; the note that an
# opset below 18 is reached by conversion, and the converter's traceback when that fails (export_model then
# refuses the file, naming the opset).
_QUIET_LOGGERS = (
    "torch.onnx._internal.exporter._registration",
    "torch.onnx._internal.exporter._compat",
    "onnxscript.version_converter",
)


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence what torch's exporters print that this module says better or that says nothing about the model:
    :data:`_QUIET_LOGGERS`, a FutureWarning of torch.utils._pytree raised inside torch.export, and torch.jit's
    deprecation warnings (the --help of the command says TorchScript is deprecated)."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            # torch 2.13 deprecates torch.jit; 'pspnet export --help' says so where it offers TorchScript
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_model` did: the ``path`` written, its ``format``, ``opset`` (ONNX), its ``metadata``
    entries, its size in ``bytes``, the ``check`` that passed, and the seconds spent exporting and checking; for an
    int8 file the ``int8`` check of the quantised graph (the float32 ``check`` is of the graph it was made from) and
    the seconds spent quantising; the ``precision`` inside the graph (a key of :data:`PRECISIONS`)."""

    path: Path
    format: str
    opset: int | None
    metadata: dict[str, str]
    bytes: int
    check: CheckReport
    export_seconds: float
    check_seconds: float
    int8: Int8Check | None = None
    quantize_seconds: float = 0.0
    precision: str = "fp32"


# -- int8 -----------------------------------------------------------------------------------------------------

# The int8 file's guarantee, checked on its calibration images (see Int8Check): labels equal to eager's on at least
# 99% of the pixels that eager decides clearly, those whose two best logits are at least 10% of the largest logit
# apart. Quantisation moves logits by a few per cent of the largest (at most 7-10% measured, random-weight PSPNet18),
# so it may flip a near-tie but never a clear decision unless the quantised graph is broken.
INT8_MIN_LABEL_AGREEMENT = 0.99
INT8_DECIDED_MARGIN = 0.1
MAX_CALIBRATION_IMAGES = 16  # ONNX Runtime's MinMax calibration needs a few images, and runs each one in fp32
# The operators that run in int8: the convolutions (nearly all of the work) and what lies between them (ReLU, the
# residual Add, max pooling, the Concat of the pyramid's grids and the bilinear Resize), so that activations stay
# uint8 from one convolution to the next instead of being dequantised and quantised again around every float32
# operator (on a 2-core AVX2 CPU, convolutions alone ran 1.62-1.73x ONNX Runtime fp32, this set 1.76-1.88x:
# docs/benchmarks.md, "On a quiet AVX2 CPU"). Not MatMul: the adaptive pooling's and the head's interpolation
# matrices are computed from the input size, and an int8 range calibrated at one size would clip their weights
# (1 / cell area; interpolation weights) at other sizes.
_QUANTIZED_OPS = ("Conv", "Relu", "Add", "MaxPool", "Concat", "Resize")


def calibration_images(
    folder: str | os.PathLike[str], crop_size: tuple[int, int], *, limit: int = MAX_CALIBRATION_IMAGES
) -> np.ndarray:
    """The first ``limit`` images of ``folder`` (by name; files with an image suffix, subfolders not searched) as
    ``(N, height, width, 3)`` uint8 RGB, each resized (bilinear) to ``crop_size`` (height, width): the size the
    protocol feeds the network, so the activation ranges the quantiser records are the deployment's. A folder
    without images is an :class:`~pspnet.errors.ExportError` naming ``calib``."""
    from PIL import Image

    from .data.datasets import IMAGE_SUFFIXES
    from .data.io import read_image

    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{folder}: not a folder of calibration images", argument="calib")
    names = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())[:limit]
    if not names:
        raise ExportError(f"{folder}: no images ({' '.join(IMAGE_SUFFIXES)}) to calibrate with", argument="calib")
    height, width = crop_size
    resized = [np.asarray(Image.fromarray(read_image(name)).resize((width, height), Image.BILINEAR)) for name in names]
    return np.stack(resized)  # (N, H, W, 3) uint8


@dataclass(frozen=True)
class Int8Check:
    """The int8 file against eager PyTorch (float32) on its ``images`` calibration images, one at a time.

    ``logit_rdiff``: ``max |logits_int8 - logits_eager| / max |logits_eager|`` (None for a ``labels`` file);
    ``label_agreement``: the share of all ``pixels`` with equal labels; ``decided_pixels``: the pixels whose two
    best eager logits are at least :data:`INT8_DECIDED_MARGIN` of the largest logit apart, and
    ``decided_agreement`` the share of those with equal labels (None when there are none).

    Why these images and this rule: a quantised graph is only accurate on inputs whose activations lie in the ranges
    its calibration recorded, so random noise images (the float32 check's) say nothing about it; the calibration
    images are real images at the protocol's size. And with random or weakly trained weights many pixels are
    near-ties between classes that the few-per-cent noise of int8 flips at random (about 7% of the pixels of a
    random-weight PSPNet18), so all-pixel agreement measures the weights, not the quantisation; clear decisions
    must survive it on any model."""

    images: int
    pixels: int
    logit_rdiff: float | None
    label_agreement: float
    decided_pixels: int
    decided_agreement: float | None

    def problems(self) -> list[str]:
        if self.decided_agreement is not None and not self.decided_agreement >= INT8_MIN_LABEL_AGREEMENT:
            share = 100 * self.decided_agreement
            problem = (
                f"on the {self.decided_pixels:,} clearly decided pixels of the calibration images the int8 labels "
                f"equal eager's on {share:.2f}% (at least {100 * INT8_MIN_LABEL_AGREEMENT:g}%)"
            )
            return [problem]
        return []

    @property
    def passed(self) -> bool:
        return not self.problems()


def check_int8(
    path: str | os.PathLike[str],
    model: nn.Module,
    images: np.ndarray,
    *,
    card: ModelCard,
    input_kind: str,
    output_kind: str,
) -> Int8Check:
    """Run the int8 ONNX file at ``path`` and ``model`` (eager, float32) on ``images`` (``(N, H, W, 3)`` uint8
    RGB, the calibration images) and compare (:class:`Int8Check`)."""
    run, _ = _onnx_runner(Path(path), output_kind)
    pixels = equal = decided = decided_equal = 0
    rdiff: float | None = None
    for image in images:
        x = image[None]
        if input_kind == "normalized":
            x = normalize(torch.from_numpy(x).permute(0, 3, 1, 2), card.mean, card.std).numpy()
        got, got_logits = run(x)
        expected = _eager_logits(model, x, card, input_kind).numpy()  # (1, K, H, W)
        logits = got if output_kind == "logits" else got_logits
        labels = got if output_kind == "labels" else got.argmax(axis=1)
        scale = float(np.abs(expected).max()) or 1.0
        if logits is not None:
            diff = float(np.abs(logits - expected).max()) / scale
            rdiff = diff if rdiff is None else max(rdiff, diff)
        same = labels == expected.argmax(axis=1)
        top2 = np.sort(expected, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) >= INT8_DECIDED_MARGIN * scale
        pixels, equal = pixels + same.size, equal + int(same.sum())
        decided, decided_equal = decided + int(clear.sum()), decided_equal + int(same[clear].sum())
    return Int8Check(
        images=len(images),
        pixels=pixels,
        logit_rdiff=rdiff,
        label_agreement=equal / pixels,
        decided_pixels=decided,
        decided_agreement=decided_equal / decided if decided else None,
    )


def quantize_int8(
    fp32_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    images: np.ndarray,
    *,
    card: ModelCard,
    input_kind: str,
    metadata: Mapping[str, str],
) -> None:
    """Quantise the float32 ONNX file ``fp32_path`` to int8 and write it to ``out`` with ``metadata``.

    ONNX Runtime's static quantiser: the graph is first prepared by its ``quant_pre_process`` (shape inference and
    graph optimisation), then its convolutions (all but the first, on the image) get int8 weights per output
    channel and uint8 activations, and the ReLU, Add, MaxPool, Concat and Resize between them uint8 activations
    (:data:`_QUANTIZED_OPS`), as QuantizeLinear/DequantizeLinear pairs (QDQ format, which ONNX Runtime fuses into
    integer kernels, VNNI where the CPU has it); the activation ranges are the MinMax of a float32 run on ``images``
    (``(N, H, W, 3)`` uint8 RGB, fed one at a time in the file's ``input_kind``). Input and output stay float32 (or uint8 / int64 as exported).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(_calibration_inputs(images, card, input_kind))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.batches, None)
            return None if x is None else {"image": x}

    out = Path(out)
    fd, pre_name = temporary_beside(out, suffix=".pre.onnx")
    os.close(fd)
    try:
        # auto_merge: the 1/8 feature size reaches the graph as two equal expressions, the stride-2 layers' nested
        # floor((x - 1) / 2) and PyramidPoolingModule.convolve's floor((x - 1) / 8) (its interpolation matrices).
        # Run in a scratch folder: when its shape inference fails, ONNX Runtime leaves the model and its weights
        # (sym_shape_infer_temp.onnx and a .data file) in the working directory.
        source, prepared = Path(fp32_path).resolve(), Path(pre_name).resolve()
        with tempfile.TemporaryDirectory(prefix="pspnet-quant-") as scratch, contextlib.chdir(scratch):
            try:
                quant_pre_process(str(source), str(prepared), auto_merge=True)
            except Exception as error:
                detail = " ".join(str(error).split())[:300]
                raise ExportError(
                    f"ONNX Runtime's int8 pre-processing failed on the exported graph: {detail}"
                ) from error
        # the first convolution, on the image itself, stays float32: it costs little time (3 input channels) and
        # quantising it flipped the most labels (a trained CamVid PSPNet18: 97.45% of val pixels equal to float32
        # with it quantised, 98.65% without, at the same speed)
        first_conv = next(node.name for node in onnx.load(pre_name).graph.node if node.op_type == "Conv")
        quantize_static(
            pre_name,
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=list(_QUANTIZED_OPS),
            nodes_to_exclude=[first_conv],
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        Path(pre_name).unlink(missing_ok=True)
    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = _doc_string(metadata, card) + f" Quantised: {metadata['quantization']}."
    onnx.save_model(proto, str(out))


def _calibration_inputs(images: np.ndarray, card: ModelCard, input_kind: str) -> Iterator[np.ndarray]:
    for image in images:
        x = image[None]  # (1, H, W, 3) uint8
        if input_kind == "normalized":
            x = normalize(torch.from_numpy(x).permute(0, 3, 1, 2), card.mean, card.std).numpy()
        yield x


def _check_options(
    format: str,
    input_kind: str,
    output_kind: str,
    static_size: tuple[int, int] | None,
    opset: int | None,
    precision: str = "fp32",
    calibration: np.ndarray | None = None,
) -> None:
    for argument, value, allowed in (
        ("format", format, FORMATS),
        ("input_kind", input_kind, INPUT_KINDS),
        ("output_kind", output_kind, OUTPUT_KINDS),
        ("precision", precision, PRECISIONS),
    ):
        if value not in allowed:
            raise ExportError(f"{value!r}: choose one of {', '.join(allowed)}", argument=argument)
    if static_size is not None and (len(static_size) != 2 or min(static_size) < 1):
        raise ExportError(f"{list(static_size)}: give a height and a width of at least 1 pixel", argument="static_size")
    if opset is not None and format != "onnx":
        raise ExportError(f"{opset}: an opset is an ONNX setting, not one of {format}", argument="opset")
    if opset is not None and opset < 1:
        raise ExportError(f"{opset}: an ONNX opset is a positive integer", argument="opset")
    if precision == "fp16" and format != "onnx":
        raise ExportError(
            f"'fp16': a float16 graph is written as ONNX (--format onnx), not as {format}", argument="precision"
        )
    if precision == "fp16" and calibration is not None:
        raise ExportError(
            "'fp16': a file is float16 (for GPU runtimes) or int8 (quantised for CPUs), not both; export one of each",
            argument="precision",
        )


def export_model(
    model: SegmentationNetwork,
    out: str | os.PathLike[str],
    *,
    format: str = "onnx",
    input_kind: str = "uint8-rgb",
    output_kind: str = "logits",
    static_size: tuple[int, int] | None = None,
    opset: int | None = None,
    check_sizes: Sequence[tuple[int, int, int]] | None = None,
    calibration: np.ndarray | None = None,
    precision: str = "fp32",
) -> ExportReport:
    """Export ``model`` (not changed: a copy is folded) as ``out`` in ``format``, check it, then put it in place.

    ``input_kind`` and ``output_kind``: see :class:`DeployedForward`. ``static_size`` (height, width) fixes the
    spatial size (the batch stays dynamic); else batch, height and width are dynamic. ``opset``: the ONNX opset
    (default: torch.onnx's). ``check_sizes``: the ``(batch, height, width)`` batches of the check (default:
    :data:`CHECK_SIZES`, or batches of 1 and 2 at ``static_size``). ``calibration`` (ONNX only): ``(N, H, W, 3)``
    uint8 RGB images (:func:`calibration_images`); with them the checked float32 graph is quantised to int8
    (:func:`quantize_int8`), checked on those images (:func:`check_int8`, :class:`Int8Check`) and written instead,
    its metadata saying ``quantization: "int8 static, N calibration images"``. ``precision="fp16"`` (ONNX, not with
    ``calibration``): the folded model in float16 (:class:`DeployedForward`), checked against the float32 eager model
    within :func:`fp16_logit_rtol` (:func:`check_export`), its metadata saying ``precision: "fp16"``. The metadata
    (:func:`export_metadata`) comes from ``model.card`` (:func:`~pspnet.weights.make_card`'s defaults for a model
    without one).

    The file is written under a temporary name beside ``out``, checked (:func:`check_export`) and renamed to
    ``out`` only when it passes; an :class:`~pspnet.errors.ExportError` (a failed check, an option the format lacks,
    onnx not installed) or any other failure leaves nothing at ``out`` (an existing file there is kept).
    """
    _check_options(format, input_kind, output_kind, static_size, opset, precision, calibration)
    if calibration is not None and format != "onnx":
        raise ExportError(f"{format}: int8 quantisation is for ONNX files (--format onnx)", argument="format")
    if calibration is not None and (calibration.ndim != 4 or calibration.shape[-1] != 3 or not len(calibration)):
        raise ExportError(f"{calibration.shape}: give (N, H, W, 3) uint8 RGB images", argument="calibration")
    if format == "onnx":
        require_onnx()
    out = Path(out)
    card = model.card if model.card is not None else make_card(model.config)
    reference = copy.deepcopy(model).to("cpu", torch.float32).eval()  # the eager model as loaded
    folded = prepare_for_inference(copy.deepcopy(reference), "fp32")  # BatchNorm folded in float32, then cast
    if precision == "fp16":
        folded = folded.half()
    deployed = DeployedForward(
        folded, mean=card.mean, std=card.std, input_kind=input_kind, output_kind=output_kind, precision=precision
    ).eval()
    batch, height, width = _EXAMPLE
    if static_size is not None:
        height, width = static_size
    pixels = np.random.default_rng(0).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    example = torch.from_numpy(pixels)
    if input_kind == "normalized":
        example = normalize(example.permute(0, 3, 1, 2), card.mean, card.std).contiguous()
    if check_sizes is None:
        check_sizes = CHECK_SIZES if static_size is None else ((1, height, width), (2, height, width))

    fd, tmp_name = temporary_beside(out, suffix=f".tmp{out.suffix}")  # torch.export.load wants its .pt2
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        started = time.perf_counter()
        min_size = written_opset = None
        with torch.no_grad(), _quiet_exporter():
            if format == "torchscript":
                scripted = torch.jit.trace(deployed, (example,), check_trace=False)
                meta = export_metadata(
                    card, format=format, input_kind=input_kind, output_kind=output_kind, static_size=static_size
                )
                torch.jit.save(scripted, str(tmp), _extra_files={METADATA_FILE: json.dumps(meta)})
            else:
                program = torch.export.export(
                    deployed, (example,), dynamic_shapes=_dynamic_shapes(input_kind, static_size is not None)
                )
                if static_size is None:
                    min_size = _min_size(program, input_kind)
                meta = export_metadata(
                    card,
                    format=format,
                    input_kind=input_kind,
                    output_kind=output_kind,
                    static_size=static_size,
                    min_size=min_size,
                    precision=precision,
                )
                if format == "onnx":
                    written_opset = _write_onnx(
                        program, example, tmp, meta, card, input_kind=input_kind, output_kind=output_kind, opset=opset
                    )
                else:
                    torch.export.save(program, str(tmp), extra_files={METADATA_FILE: json.dumps(meta)})
        exported = time.perf_counter()
        if min_size is not None:
            check_sizes = [(b, max(h, min_size[0]), max(w, min_size[1])) for b, h, w in check_sizes]
        check = check_export(
            tmp,
            reference,
            card=card,
            format=format,
            input_kind=input_kind,
            output_kind=output_kind,
            sizes=check_sizes,
            precision=precision,
        )
        checked = time.perf_counter()
        if not check.passed:
            raise ExportError(
                f"{out}: the exported file does not compute what the model computes ({check.runtime} against eager "
                f"PyTorch): {'; '.join(check.problems())}; nothing was written",
            )
        int8 = None
        quantized = checked
        if calibration is not None:
            fd, tmp8_name = temporary_beside(out, suffix=".int8.onnx")
            os.close(fd)
            tmp8 = Path(tmp8_name)
            try:
                meta = {**meta, "quantization": f"int8 static, {len(calibration)} calibration images"}
                with _quiet_exporter():
                    quantize_int8(tmp, tmp8, calibration, card=card, input_kind=input_kind, metadata=meta)
                quantized = time.perf_counter()
                int8 = check_int8(
                    tmp8, reference, calibration, card=card, input_kind=input_kind, output_kind=output_kind
                )
                if not int8.passed:
                    raise ExportError(
                        f"{out}: the int8 file does not compute what the model computes: "
                        f"{'; '.join(int8.problems())}; nothing was written"
                    )
                os.replace(tmp8, tmp)
            finally:
                tmp8.unlink(missing_ok=True)
        size = tmp.stat().st_size
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportReport(
        path=out,
        format=format,
        opset=written_opset,
        metadata=meta,
        bytes=size,
        check=check,
        export_seconds=exported - started,
        check_seconds=checked - exported,
        int8=int8,
        quantize_seconds=quantized - checked,
        precision=precision,
    )
