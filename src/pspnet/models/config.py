"""``ModelConfig``: every field that rebuilds a PSPNet, and the one statement of their allowed ranges."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..constants import MAX_CLASSES
from ..errors import ConfigError
from ..parsing import is_int, is_number, shown
from .resnet import STAGE_BLOCKS, STEMS

__all__ = ["BIN_COUNTS", "MAX_BIN", "MAX_CHANNELS", "ModelConfig", "check_model_config"]

# Bounds of the model fields. The pyramid's branches share layer4's 512 or 2048 channels equally; a bin finer than
# the feature map only repeats its pixels (128 = a 1024-pixel side at output stride 8); no published head is wider
# than 8192 channels. The class count is bounded by MAX_CLASSES (a class id fits a 16-bit PNG label map).
BIN_COUNTS = (1, 2, 4, 8)
MAX_BIN = 128
MAX_CHANNELS = 8192


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a PSPNet; the defaults are the official PSPNet50.

    Fields map one-to-one onto the keyword arguments of :class:`pspnet.models.pspnet.PSPNet`. ``num_classes`` is
    None only in a training config (:class:`pspnet.engine.config.TrainConfig`), where the data set supplies it.
    """

    num_classes: int | None = None
    depth: int = 50
    stem: str = "deep"
    output_stride: int = 8
    contract_dilation: bool = False
    bins: tuple[int, ...] = (1, 2, 3, 6)
    head_channels: int = 512
    aux: bool = True
    aux_channels: int = 256
    dropout: float = 0.1
    align_corners: bool = True
    ppm: bool = True  # False only for ablations: the head then sees layer4 alone (no global context)

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
)


def check_model_config(config: ModelConfig, where: str, *, prefix: str = "", classes_given: bool = True) -> None:
    """Raise a ConfigError ``"{where}: {prefix}{field} must be ..., got ..."`` (``where`` may be empty) for the
    first field of ``config``
    that is out of range (types included, so a config built in code is checked too).

    ``classes_given=False`` skips ``num_classes`` while it is None (a training config, before the data set is
    read). Used by training configs, model files and :class:`~pspnet.models.pspnet.PSPNet` itself, so the rules
    are written once.
    """
    for name, allowed, rule in _RULES:
        value = getattr(config, name)
        if name == "num_classes" and value is None and not classes_given:
            continue
        if not allowed(value):
            raise ConfigError(f"{where + ': ' if where else ''}{prefix}{name} must be {rule}, got {shown(value)}")
