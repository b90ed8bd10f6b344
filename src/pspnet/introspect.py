"""Model introspection without allocating weights: parameter counts, FLOPs and feature shapes on the meta device."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .models.network import SegmentationNetwork
from .models.resnet import count_trainable

__all__ = ["ModelSummary", "summarize"]


@dataclass
class ModelSummary:
    """Counts and shapes of one forward pass of a model (any architecture) in eval mode at batch 1.

    ``flops`` are floating-point operations as counted by ``torch.utils.flop_counter``: 2 x multiply-adds of the
    convolutions and matrix products (element-wise ops, pooling and interpolation are not counted).
    """

    parameters: int  # trainable parameters, BatchNorm buffers excluded, aux head included when present
    parameters_without_aux: int
    parameters_by_part: dict[str, int]
    flops: int
    flops_by_part: dict[str, int]
    shapes: list[tuple[str, tuple[int, ...], int]]  # (name, shape, nominal reduction; sides are ceil(H / r))


def _head_stages(model: SegmentationNetwork) -> list[tuple[str, nn.Module, int]]:
    """The head's parts worth a shape line: (name, module, nominal reduction of its output)."""
    head, config, r4 = model.decode_head, model.config, model.backbone.reductions[3]
    if config.architecture == "unet":
        return [(f"decoder block {i + 1}", block, 2 ** (4 - i)) for i, block in enumerate(head.blocks)]
    if config.architecture == "deeplabv3plus":
        return [("ASPP (projected)", head.aspp, r4), ("head logits", head, 4)]
    # the pyramid pooling's concatenation is never built (PyramidPoolingModule.convolve): its line comes from layer4
    if config.skip_decoder:
        return [("PSP head (3x3 conv)", head.bottleneck, r4), ("head logits", head, 4)]
    return [("head logits", head, r4)]


def summarize(model: SegmentationNetwork, height: int, width: int) -> ModelSummary:
    """Summarise ``model`` (ideally built under ``torch.device("meta")``) for a ``(1, 3, height, width)`` input."""
    parts = {"backbone": model.backbone, "decode_head": model.decode_head}
    if model.aux_head is not None:
        parts["aux_head"] = model.aux_head
    params_by_part = {name: count_trainable(module) for name, module in parts.items()}
    total = count_trainable(model)

    reductions = model.backbone.reductions
    watched: list[tuple[str, nn.Module, int]] = [("stem + maxpool", model.backbone.maxpool, 4)]
    watched += [(f"layer{i}", getattr(model.backbone, f"layer{i}"), reductions[i - 1]) for i in range(1, 5)]
    watched += _head_stages(model)
    shapes: list[tuple[str, tuple[int, ...], int]] = []

    def hook(name: str, reduction: int):
        def record(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            shapes.append((name, tuple(output.shape), reduction))

        return record

    handles = [module.register_forward_hook(hook(name, r)) for name, module, r in watched]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, depth=2) as counter:
            out = model(torch.empty(1, 3, height, width, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if model.config.architecture == "pspnet" and model.config.ppm:
        at = [name for name, _, _ in shapes].index("layer4")
        n, _, h, w = shapes[at][1]
        ppm_shape = (n, model.decode_head.ppm.out_channels, h, w)
        shapes.insert(at + 1, ("pyramid pooling (concat, as the 3x3 conv sees it)", ppm_shape, reductions[3]))
    shapes.append(("output" if model.decodes_to_input else "output (upsampled)", tuple(out.shape), 1))
    counts = counter.get_flop_counts()
    flops_by_part = {
        name: int(sum(counts.get(f"{type(model).__name__}.{name}", {}).values()))
        for name in ("backbone", "decode_head")
    }
    return ModelSummary(
        parameters=total,
        parameters_without_aux=total - params_by_part.get("aux_head", 0),
        parameters_by_part=params_by_part,
        flops=int(counter.get_total_flops()),
        flops_by_part=flops_by_part,
        shapes=shapes,
    )
