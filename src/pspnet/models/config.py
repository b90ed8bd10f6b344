"""``ModelConfig``: every field that rebuilds a model (PSPNet, DeepLab v3+ or U-Net), and the one statement of their
allowed ranges."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..constants import MAX_CLASSES
from ..errors import ConfigError
from ..parsing import is_int, is_number, shown
from .resnet import STAGE_BLOCKS, STEMS

__all__ = [
    "ARCHITECTURES",
    "BIN_COUNTS",
    "MAX_BIN",
    "MAX_CHANNELS",
    "Architecture",
    "ModelConfig",
    "check_model_config",
]

# Bounds of the model fields. The pyramid's branches share layer4's 512 or 2048 channels equally; a bin finer than
# the feature map only repeats its pixels (128 = a 1024-pixel side at output stride 8); no published head is wider
# than 8192 channels. The class count is bounded by MAX_CLASSES (a class id fits a 16-bit PNG label map).
BIN_COUNTS = (1, 2, 4, 8)
MAX_BIN = 128
MAX_CHANNELS = 8192


class Architecture(NamedTuple):
    """What a ModelConfig's ``architecture`` brings: its name for people, the defaults of the fields left as None,
    and the output strides it allows. ``head_channels`` means: PSPNet's 3x3 conv after the pyramid (paper: 512),
    DeepLab v3+'s ASPP and decoder width (paper: 256), U-Net's first decoder block, halved by each of the next four
    (256-128-64-32-16)."""

    title: str
    head_channels: int
    output_stride: int
    output_strides: tuple[int, ...]


ARCHITECTURES: dict[str, Architecture] = {
    "pspnet": Architecture("PSPNet", 512, 8, (8, 16, 32)),
    "deeplabv3plus": Architecture("DeepLab v3+", 256, 8, (8, 16)),
    "unet": Architecture("U-Net", 256, 32, (32,)),
}
# The fields that only PSPNet has, with the value every other architecture must keep.
PSPNET_ONLY: dict[str, Any] = {"bins": (1, 2, 3, 6), "ppm": True, "skip_decoder": False}
UNET_BLOCKS = 5  # U-Net decoder blocks: 1/32 -> 1/16 -> 1/8 -> 1/4 -> 1/2 -> 1/1


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; the defaults are the official PSPNet50.

    ``architecture`` picks the network (``"pspnet"``, ``"deeplabv3plus"`` or ``"unet"``, :data:`ARCHITECTURES`;
    :func:`pspnet.models.build.build_model` builds it); the other fields map onto the keyword arguments of its class
    (:class:`~pspnet.models.pspnet.PSPNet` takes them all). ``head_channels`` and ``output_stride`` left as None take
    the architecture's default (:data:`ARCHITECTURES`), so a config that names only the architecture gets the
    paper's widths. ``bins``, ``ppm`` and ``skip_decoder`` are PSPNet's alone. ``num_classes`` is None only in a
    training config (:class:`pspnet.engine.config.TrainConfig`), where the data set supplies it.
    """

    num_classes: int | None = None
    architecture: str = "pspnet"
    depth: int = 50
    stem: str = "deep"
    output_stride: int | None = None  # None: the architecture's (8; U-Net 32, it has no dilation)
    contract_dilation: bool = False
    bins: tuple[int, ...] = (1, 2, 3, 6)
    head_channels: int | None = None  # None: the architecture's (PSPNet 512, DeepLab v3+ 256, U-Net 256)
    aux: bool = True
    aux_channels: int = 256
    dropout: float = 0.1
    align_corners: bool = True
    ppm: bool = True  # False only for ablations: the head then sees layer4 alone (no global context)
    skip_decoder: bool = False  # PSPNet + DeepLab v3+'s stride-4 decoder after its head (not in the paper)

    def __post_init__(self) -> None:
        known = ARCHITECTURES.get(self.architecture) if isinstance(self.architecture, str) else None
        if known is not None:  # an unknown architecture is refused by check_model_config, naming the field
            if self.head_channels is None:
                object.__setattr__(self, "head_channels", known.head_channels)
            if self.output_stride is None:
                object.__setattr__(self, "output_stride", known.output_stride)

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able values (``bins`` as a list)."""
        out = dataclasses.asdict(self)
        out["bins"] = list(self.bins)
        return out


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _channels(value: Any) -> bool:
    return is_int(value) and 1 <= value <= MAX_CHANNELS


def _bins(value: Any) -> bool:
    # each pyramid branch gets an equal share of layer4's 512 or 2048 channels: 1, 2, 4 or 8 branches
    return (
        isinstance(value, (tuple, list))
        and len(value) in BIN_COUNTS
        and all(is_int(b) and 1 <= b <= MAX_BIN for b in value)
    )


# (field, predicate, allowed values) of every ModelConfig field.
_RULES: tuple[tuple[str, Any, str], ...] = (
    ("num_classes", lambda v: is_int(v) and 1 <= v <= MAX_CLASSES, f"an integer in [1, {MAX_CLASSES}]"),
    ("architecture", lambda v: isinstance(v, str) and v in ARCHITECTURES, f"one of {sorted(ARCHITECTURES)}"),
    ("depth", lambda v: is_int(v) and v in STAGE_BLOCKS, f"one of {sorted(STAGE_BLOCKS)}"),
    ("stem", lambda v: isinstance(v, str) and v in STEMS, f"one of {sorted(STEMS)}"),
    ("output_stride", lambda v: is_int(v) and v in (8, 16, 32), "8, 16 or 32"),
    ("contract_dilation", _is_bool, "true or false"),
    ("bins", _bins, f"a list of 1, 2, 4 or 8 integers in [1, {MAX_BIN}]"),
    ("head_channels", _channels, f"an integer in [1, {MAX_CHANNELS}]"),
    ("aux", _is_bool, "true or false"),
    ("aux_channels", _channels, f"an integer in [1, {MAX_CHANNELS}]"),
    ("dropout", lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    ("align_corners", _is_bool, "true or false"),
    ("ppm", _is_bool, "true or false"),
    ("skip_decoder", _is_bool, "true or false"),
)


def check_model_config(config: ModelConfig, where: str, *, prefix: str = "", classes_given: bool = True) -> None:
    """Raise a ConfigError ``"{where}: {prefix}{field} must be ..., got ..."`` (``where`` may be empty) for the
    first field of ``config`` that is out of range (types included, so a config built in code is checked too), then
    for a field its architecture cannot take (an output stride U-Net lacks, PSPNet's fields on another network).

    ``classes_given=False`` skips ``num_classes`` while it is None (a training config, before the data set is
    read). Used by training configs, model files and every network's constructor
    (:class:`~pspnet.models.network.SegmentationNetwork`), so the rules are written once.
    """
    for name, allowed, rule in _RULES:
        value = getattr(config, name)
        if name == "num_classes" and value is None and not classes_given:
            continue
        if not allowed(value):
            raise ConfigError(f"{where + ': ' if where else ''}{prefix}{name} must be {rule}, got {shown(value)}")
    _check_architecture_fields(config, f"{where + ': ' if where else ''}{prefix}")


def _check_architecture_fields(config: ModelConfig, at: str) -> None:
    """The fields whose range depends on the architecture (all fields already have their types)."""
    architecture = config.architecture
    strides = ARCHITECTURES[architecture].output_strides
    if config.output_stride not in strides:
        allowed = " or ".join(map(str, strides))
        why = " (U-Net has no dilation)" if architecture == "unet" else ""
        raise ConfigError(f"{at}output_stride must be {allowed} for {architecture}{why}, got {config.output_stride}")
    if architecture == "unet" and config.head_channels < 2 ** (UNET_BLOCKS - 1):
        raise ConfigError(
            f"{at}head_channels must be at least {2 ** (UNET_BLOCKS - 1)} for unet (its {UNET_BLOCKS} decoder blocks "
            f"halve it four times), got {config.head_channels}"
        )
    if architecture == "unet" and config.contract_dilation:
        raise ConfigError(f"{at}contract_dilation applies to dilated backbones; unet has none")
    if architecture != "pspnet":
        for name, kept in PSPNET_ONLY.items():
            value = getattr(config, name)
            if (tuple(value) if name == "bins" else value) != kept:
                raise ConfigError(f"{at}{name} is a PSPNet field; {architecture} takes no {name} (got {shown(value)})")
