"""Converters from published checkpoints to pspnet files: a table of renaming rules per source + one strict check.

Sources (``--from``):

- ``official``: the authors' PyTorch PSPNet (``layer0``, ``ppm.features``, ``cls``, ``aux``), optionally with a
  ``module.`` prefix and inside ``{'epoch', 'state_dict', 'optimizer'}``; deep stem 64-64-128, every block of a
  dilated stage dilated, ``align_corners=True``.
- ``mmseg``: mmsegmentation PSPNet (``backbone.stem``, ``decode_head.psp_modules``, ``auxiliary_head``) inside
  ``{'meta', 'state_dict'}``; ResNetV1c stem 32-32-64, contracted dilation, ``align_corners=False``.
- ``official-backbone``: the official deep-stem ImageNet ResNets (``conv1/bn1/conv2/bn2/conv3/bn3``, ``layer1..4``).
- ``torchvision``: torchvision or timm plain ``resnet*`` ImageNet files (7x7 ``conv1``, ``bn1``, ``layer1..4``).

Every source key must be used and every model key filled (a missing ``num_batches_tracked`` is fine), else the
conversion fails naming the unknown and missing keys. Only the ImageNet classifier ``fc`` is skipped.
Pickled sources are read with ``torch.load(weights_only=True)``, which refuses arbitrary objects.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor

from ..data.classes import DATASETS, dataset_for_classes
from ..errors import ConversionError
from ..models.build import build_model
from ..models.config import ModelConfig
from ..models.resnet import STAGE_BLOCKS, STEMS, ResNet
from .model_file import FORMAT_VERSION, key_mismatches, make_card, write_model_file, write_weights_file

__all__ = ["SOURCES", "ConversionReport", "convert", "load_foreign_state_dict", "rename_keys"]

Rules = list[tuple[str, str]]

# Model rules map to PSPNet state-dict names; backbone rules map to ResNet state-dict names.
OFFICIAL_RULES: Rules = [
    (r"^layer0\.", "backbone.stem."),
    (r"^(layer[1-4])\.", r"backbone.\1."),
    (r"^ppm\.features\.(\d+)\.1\.", r"decode_head.ppm.branches.\1.conv."),
    (r"^ppm\.features\.(\d+)\.2\.", r"decode_head.ppm.branches.\1.bn."),
    (r"^cls\.0\.", "decode_head.conv."),
    (r"^cls\.1\.", "decode_head.bn."),
    (r"^cls\.4\.", "decode_head.classifier."),
    (r"^aux\.0\.", "aux_head.conv."),
    (r"^aux\.1\.", "aux_head.bn."),
    (r"^aux\.4\.", "aux_head.classifier."),
]
MMSEG_RULES: Rules = [
    (r"^backbone\.(stem|layer[1-4])\.", r"backbone.\1."),
    (r"^decode_head\.psp_modules\.(\d+)\.1\.(conv|bn)\.", r"decode_head.ppm.branches.\1.\2."),
    (r"^decode_head\.bottleneck\.(conv|bn)\.", r"decode_head.\1."),
    (r"^decode_head\.conv_seg\.", "decode_head.classifier."),
    (r"^auxiliary_head\.convs\.0\.(conv|bn)\.", r"aux_head.\1."),
    (r"^auxiliary_head\.conv_seg\.", "aux_head.classifier."),
]
OFFICIAL_BACKBONE_RULES: Rules = [
    (r"^conv1\.", "stem.0."),
    (r"^bn1\.", "stem.1."),
    (r"^conv2\.", "stem.3."),
    (r"^bn2\.", "stem.4."),
    (r"^conv3\.", "stem.6."),
    (r"^bn3\.", "stem.7."),
    (r"^(layer[1-4])\.", r"\1."),
]
TORCHVISION_RULES: Rules = [
    (r"^conv1\.", "stem.0."),
    (r"^bn1\.", "stem.1."),
    (r"^(layer[1-4])\.", r"\1."),
]
SKIPPED = re.compile(r"^fc\.")  # the ImageNet classifier of backbone files

SOURCES: dict[str, Rules] = {
    "official": OFFICIAL_RULES,
    "mmseg": MMSEG_RULES,
    "official-backbone": OFFICIAL_BACKBONE_RULES,
    "torchvision": TORCHVISION_RULES,
}
BACKBONE_SOURCES = ("official-backbone", "torchvision")


@dataclass
class ConversionReport:
    """What a conversion did: the file written, its kind, the tensors loaded and the keys skipped."""

    destination: Path
    kind: str
    source: str
    loaded: int
    skipped: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    dataset_inferred: bool = False


def rename_keys(keys: list[str], rules: Rules) -> tuple[dict[str, str], list[str]]:
    """Apply the first matching rule to each key (after dropping a ``module.`` prefix).

    Returns ``({source_key: new_key}, [keys no rule matched])``.
    """
    mapping: dict[str, str] = {}
    unmatched: list[str] = []
    for key in keys:
        bare = key.removeprefix("module.")
        for pattern, replacement in rules:
            if re.match(pattern, bare):
                mapping[key] = re.sub(pattern, replacement, bare, count=1)
                break
        else:
            unmatched.append(key)
    return mapping, unmatched


def load_foreign_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a checkpoint from another code base: a ``.safetensors`` file or a PyTorch pickle.

    Pickles are loaded with ``torch.load(weights_only=True)``; a file that needs arbitrary code is refused with a
    :class:`ConversionError` naming it. The state dict may be bare or inside ``{'state_dict': ...}`` (or
    ``{'model': ...}``); other top-level entries (``optimizer``, ``meta``, ``epoch``) are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        try:
            return dict(safetensors.torch.load_file(path))
        except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError, OSError, ...
            raise ConversionError(f"{path}: not a readable safetensors file: {error}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConversionError(
            f"{path}: refused to unpickle - the file holds objects other than tensors and plain containers, "
            f"which could run code ({first})"
        ) from None
    except Exception as error:  # noqa: BLE001 - a truncated zip, not a pickle at all: torch raises many kinds
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupted?): {error}") from None
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ConversionError(f"{path}: no state dict found (expected a dict of tensors, or one under 'state_dict')")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise ConversionError(f"{path}: entries that are not tensors: {not_tensors[:10]}")
    return dict(obj)


def _blocks(tensors: Mapping[str, Tensor], prefix: str) -> tuple[int, ...]:
    counts = []
    for stage in range(1, 5):
        pattern = re.compile(rf"^{re.escape(prefix)}layer{stage}\.(\d+)\.")
        indices = {int(m.group(1)) for k in tensors if (m := pattern.match(k))}
        counts.append(max(indices) + 1 if indices else 0)
    return tuple(counts)


def _backbone_spec(path: Path, tensors: Mapping[str, Tensor], prefix: str) -> tuple[int, str]:
    """(depth, stem) of the renamed ResNet weights under ``prefix``."""
    bottleneck = f"{prefix}layer1.0.conv3.weight" in tensors
    blocks = _blocks(tensors, prefix)
    depths = [d for d, (b, n) in STAGE_BLOCKS.items() if b == bottleneck and n == blocks]
    if not depths:
        kind = "bottleneck" if bottleneck else "basic"
        raise ConversionError(f"{path}: {blocks} {kind} blocks per stage match no ResNet depth {sorted(STAGE_BLOCKS)}")
    first = tensors.get(f"{prefix}stem.0.weight")
    if first is None:
        raise ConversionError(f"{path}: no stem convolution found")
    widths = tuple(
        tensors[f"{prefix}stem.{i}.weight"].shape[0] for i in (0, 3, 6) if f"{prefix}stem.{i}.weight" in tensors
    )
    if first.shape[-1] == 7:
        widths = (first.shape[0],)
        stems = ["basic"] if widths == STEMS["basic"] else []
    else:
        stems = [name for name, w in STEMS.items() if name != "basic" and w == widths]
    if not stems:
        raise ConversionError(f"{path}: stem with channels {widths} is none of {STEMS}")
    return depths[0], stems[0]


def _model_config(path: Path, source: str, tensors: Mapping[str, Tensor]) -> ModelConfig:
    depth, stem = _backbone_spec(path, tensors, "backbone.")
    if depth in (18, 34) and source == "mmseg":
        # mmseg's BasicBlock dilates only its first conv; ours dilates both (the receptive field of the original).
        raise ConversionError(f"{path}: mmseg ResNet-{depth} (basic blocks) are not supported, only ResNet-50/101/152")
    classifier = tensors.get("decode_head.classifier.weight")
    if classifier is None:
        raise ConversionError(f"{path}: no classifier found (decode_head.classifier / cls.4 / conv_seg)")
    branches = sorted({int(m.group(1)) for k in tensors if (m := re.match(r"decode_head\.ppm\.branches\.(\d+)\.", k))})
    if len(branches) != 4:
        raise ConversionError(f"{path}: {len(branches)} pyramid branches found; the bins (1, 2, 3, 6) need 4")
    aux = "aux_head.classifier.weight" in tensors
    return ModelConfig(
        num_classes=int(classifier.shape[0]),
        depth=depth,
        stem=stem,
        output_stride=8,
        contract_dilation=source == "mmseg",
        bins=(1, 2, 3, 6),
        head_channels=int(tensors["decode_head.conv.weight"].shape[0]) if "decode_head.conv.weight" in tensors else 512,
        aux=aux,
        aux_channels=int(tensors["aux_head.conv.weight"].shape[0]) if "aux_head.conv.weight" in tensors else 256,
        align_corners=source == "official",
    )


def _listing(label: str, items: list[str]) -> str:
    more = f" and {len(items) - 12} more" if len(items) > 12 else ""
    return f"{len(items)} {label}: {items[:12]}{more}"


def _strict_match(
    path: Path,
    source: str,
    raw: Mapping[str, Tensor],
    mapping: Mapping[str, str],
    unmatched: list[str],
    expected: Mapping[str, Tensor],
) -> dict[str, Tensor]:
    """Use every source key exactly once for ``expected`` (a state dict); fill a missing num_batches_tracked.

    ``mapping`` is {source key: pspnet key}; errors name unknown keys as they are in the source file and missing
    keys by their pspnet names.
    """
    renamed = {new: raw[old] for old, new in mapping.items()}
    unknown_renamed, missing, wrong = key_mismatches(renamed, expected)
    source_name = {new: old for old, new in mapping.items()}
    unknown = sorted(unmatched + [source_name[k] for k in unknown_renamed])
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if unknown or missing or wrong:
        parts = [
            _listing(label, items)
            for label, items in (
                ("unknown key(s)", unknown),
                ("missing key(s)", missing),
                ("shape mismatch(es)", wrong),
            )
            if items
        ]
        raise ConversionError(f"{path}: cannot convert as {source}: " + "; ".join(parts))
    out = {}
    for key, reference in expected.items():
        value = renamed.get(key)
        if value is None:  # a num_batches_tracked absent from the source
            value = torch.zeros((), dtype=reference.dtype)
        out[key] = value.to(dtype=reference.dtype).contiguous()
    return out


def convert(
    source: str,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    dataset: str | None = None,
) -> ConversionReport:
    """Convert the checkpoint ``src`` of kind ``source`` (a key of :data:`SOURCES`) into the pspnet file ``dst``.

    Full models (``official``, ``mmseg``) become model files; the number of classes comes from the classifier.
    ``dataset`` attaches that data set's class names, palette and inference settings and is refused when its class
    count differs. Without it, a class count that matches exactly one known data set selects that data set
    (``report.dataset_inferred``). ImageNet sources become backbone files.
    """
    if source not in SOURCES:
        raise ConversionError(f"{source!r}: choose one of {sorted(SOURCES)}", argument="source")
    if dataset is not None and dataset not in DATASETS:
        raise ConversionError(f"{dataset!r}: choose one of {sorted(DATASETS)}", argument="dataset")
    if dataset is not None and source in BACKBONE_SOURCES:
        raise ConversionError("applies to full models, not to ImageNet backbone files", argument="dataset")
    src, dst = Path(src), Path(dst)
    raw = load_foreign_state_dict(src)
    mapping, unmatched = rename_keys(list(raw), SOURCES[source])
    skipped = []
    if source in BACKBONE_SOURCES:
        skipped = sorted(k for k in unmatched if SKIPPED.match(k))
        unmatched = [k for k in unmatched if not SKIPPED.match(k)]
    renamed = {new: raw[old] for old, new in mapping.items()}
    provenance = {"from": source, "file": src.name}
    try:  # the architecture is read off the weights
        spec = _backbone_spec(src, renamed, "") if source in BACKBONE_SOURCES else _model_config(src, source, renamed)
    except ConversionError as error:
        if unmatched:  # most likely the wrong --from: say which keys it did not recognise
            raise ConversionError(
                f"{src}: cannot convert as {source}: {_listing('unknown key(s)', sorted(unmatched))} ({error})"
            ) from None
        raise

    if source in BACKBONE_SOURCES:
        depth, stem = spec
        with torch.device("meta"):
            expected = ResNet(depth=depth, stem=stem).state_dict()
        tensors = _strict_match(src, source, raw, mapping, unmatched, expected)
        meta = {
            "kind": "backbone",
            "format_version": FORMAT_VERSION,
            "backbone": {"depth": depth, "stem": stem},
            "source": provenance,
        }
        write_weights_file(dst, tensors, meta)
        return ConversionReport(dst, "backbone", source, len(mapping), skipped, {"depth": depth, "stem": stem})

    config = spec
    inferred = False
    if dataset is None:
        match = dataset_for_classes(config.num_classes)
        if match is not None:
            dataset, inferred = match.name, True
    elif DATASETS[dataset].num_classes != config.num_classes:
        raise ConversionError(
            f"{dataset}: has {DATASETS[dataset].num_classes} classes, but {src} has a classifier for "
            f"{config.num_classes}",
            argument="dataset",
        )
    with torch.device("meta"):
        expected = build_model(config).state_dict()
    tensors = _strict_match(src, source, raw, mapping, unmatched, expected)
    write_model_file(dst, tensors, make_card(config, dataset=dataset, source=provenance))
    return ConversionReport(dst, "model", source, len(mapping), [], config.to_dict(), dataset, inferred)
