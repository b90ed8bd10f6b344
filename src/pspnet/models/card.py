"""``ModelCard``: what a model file says about its model (classes, colours, normalisation, inference sizes, origin).

One frozen dataclass, read from a file's metadata by one parser, :meth:`ModelCard.from_dict`, which checks every
field (docs/model_files.md lists the allowed values); everything else (inference, the segmenter, evaluation,
training, conversion) reads the typed fields. :func:`pspnet.weights.model_file.make_card` builds one for a model
and a data set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..constants import IMAGENET_MEAN, IMAGENET_STD, MAX_CLASSES, __version__
from ..errors import CheckpointError, ConfigError
from ..parsing import check_keys, config_from_dict, is_int, is_number, is_rgb, metadata_error
from .config import ModelConfig, check_model_config

__all__ = ["CARD_KEYS", "MAX_SIDE", "ModelCard"]

Color = tuple[int, int, int]

# Largest crop or base size (pixels per side) a model card may ask for; the pixels an image may be resized to are
# capped separately at inference.
MAX_SIDE = 65535


@dataclass(frozen=True)
class ModelCard:
    """A model's description, as stored in its model file.

    ``config``: the architecture; ``classes`` and ``palette``: one name and one RGB colour per output class;
    ``ignore_index``: the label of unlabelled pixels (no class id); ``mean`` and ``std``: the input normalisation
    per RGB channel on the 0-255 scale; ``crop_size`` (height, width) and ``base_size`` (long side, pixels): the
    sliding-window crop and the scale-1.0 size of the data set's test protocol; ``dataset``: the name of the data set
    it was made for, if any; ``source``: where the weights came from; ``pspnet_version``: the version that wrote it.
    """

    config: ModelConfig
    classes: tuple[str, ...]
    palette: tuple[Color, ...]
    ignore_index: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_size: tuple[int, int] = (473, 473)
    base_size: int = 512
    dataset: str | None = None
    source: dict[str, Any] | None = None
    pspnet_version: str = __version__

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON-able metadata entries (the keys of ``CARD_KEYS``)."""
        return {
            "pspnet_version": self.pspnet_version,
            "model": self.config.to_dict(),
            "dataset": self.dataset,
            "classes": list(self.classes),
            "palette": [list(c) for c in self.palette],
            "ignore_index": self.ignore_index,
            "normalization": {"mean": list(self.mean), "std": list(self.std)},
            "inference": {"crop_size": list(self.crop_size), "base_size": self.base_size},
            "source": None if self.source is None else dict(self.source),
        }

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any], where: Any, *, other_keys: tuple[str, ...] = ()) -> ModelCard:
        """Parse and check metadata entries into a card; ``where`` (a file's path) starts every error message.

        ``meta`` must have exactly the keys of ``CARD_KEYS`` plus ``other_keys`` (those of the file around it,
        checked by its reader). Each field is checked against its rule, the model config against
        :func:`~pspnet.models.config.check_model_config`; the first field at fault raises a
        :class:`~pspnet.errors.CheckpointError` ``WHERE: metadata KEY must be RULE, got VALUE``.
        """
        if not isinstance(meta, Mapping):
            raise CheckpointError(f"{where}: pspnet metadata must be a JSON object, got {type(meta).__name__}")
        check_keys(where, "", meta, (*other_keys, *CARD_KEYS))
        config = _model_config(where, meta["model"])
        for key, check in _FIELD_CHECKS.items():
            check(where, meta[key], config)
        normalization, inference = meta["normalization"], meta["inference"]
        return cls(
            config=config,
            classes=tuple(meta["classes"]),
            palette=tuple((int(r), int(g), int(b)) for r, g, b in meta["palette"]),
            ignore_index=int(meta["ignore_index"]),
            mean=tuple(float(v) for v in normalization["mean"]),
            std=tuple(float(v) for v in normalization["std"]),
            crop_size=(int(inference["crop_size"][0]), int(inference["crop_size"][1])),
            base_size=int(inference["base_size"]),
            dataset=meta["dataset"],
            source=None if meta["source"] is None else dict(meta["source"]),
            pspnet_version=meta["pspnet_version"],
        )

    def checked(self, where: Any) -> ModelCard:
        """This card, checked by the rules of :meth:`from_dict` (a card built in code); raises as it does."""
        return ModelCard.from_dict(self.to_dict(), where)


def _model_config(where: Any, value: Any) -> ModelConfig:
    """The ``model`` entry: the fields of ModelConfig (those with a default may be left out), in range."""
    names = [f.name for f in dataclasses.fields(ModelConfig)]
    if not isinstance(value, dict):
        raise metadata_error(where, "model", "an object with the fields of pspnet.ModelConfig", value)
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise CheckpointError(
            f"{where}: metadata model has unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(names)}"
        )
    if "num_classes" not in value:
        raise CheckpointError(f"{where}: metadata model.num_classes is missing")
    try:
        check_model_config(ModelConfig(**value), str(where), prefix="metadata model.")  # types and ranges
        return config_from_dict(ModelConfig, value)
    except ConfigError as error:
        raise CheckpointError(str(error)) from None


def _check_pspnet_version(where: Any, value: Any, config: ModelConfig) -> None:
    if not isinstance(value, str) or not value.strip():
        raise metadata_error(where, "pspnet_version", "a non-empty string", value)


def _check_dataset(where: Any, value: Any, config: ModelConfig) -> None:
    # A name only: a built-in data set's or a folder data set's (its classes.yaml 'name'); never cross-checked.
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise metadata_error(where, "dataset", "null or a data set's name (a non-empty string)", value)


def _check_classes(where: Any, value: Any, config: ModelConfig) -> None:
    k = config.num_classes
    if not isinstance(value, list) or len(value) != k:
        raise metadata_error(where, "classes", f"a list of {k} names (one per output, model.num_classes)", value)
    seen: dict[str, int] = {}
    for i, name in enumerate(value):
        if not isinstance(name, str) or not name.strip():
            raise metadata_error(where, f"classes[{i}]", "a non-empty string", name)
        if name in seen:
            raise metadata_error(where, f"classes[{i}]", f"unique (classes[{seen[name]}] has the same name)", name)
        seen[name] = i


def _check_palette(where: Any, value: Any, config: ModelConfig) -> None:
    k = config.num_classes
    if not isinstance(value, list) or len(value) != k:
        raise metadata_error(where, "palette", f"a list of {k} colours (one per class, model.num_classes)", value)
    for i, colour in enumerate(value):
        if not isinstance(colour, list) or not is_rgb(colour):
            raise metadata_error(where, f"palette[{i}]", "[r, g, b] with integers in [0, 255]", colour)


def _check_ignore_index(where: Any, value: Any, config: ModelConfig) -> None:
    k = config.num_classes
    if not is_int(value) or not k <= value <= MAX_CLASSES:
        rule = f"an integer in [{k}, {MAX_CLASSES}] (no class id; fits a 16-bit mask)"
        raise metadata_error(where, "ignore_index", rule, value)


def _check_normalization(where: Any, value: Any, config: ModelConfig) -> None:
    check_keys(where, "normalization", value, ("mean", "std"))
    for key, allowed, rule in (
        ("mean", lambda v: is_number(v) and 0 <= v <= 255, "a number in [0, 255]"),
        ("std", lambda v: is_number(v) and v > 0, "a positive finite number"),
    ):
        values = value[key]
        if not isinstance(values, list) or len(values) != 3:
            raise metadata_error(where, f"normalization.{key}", "a list of 3 numbers (R, G, B; 0-255 scale)", values)
        for i, v in enumerate(values):
            if not allowed(v):
                raise metadata_error(where, f"normalization.{key}[{i}]", rule, v)


def _check_inference(where: Any, value: Any, config: ModelConfig) -> None:
    check_keys(where, "inference", value, ("crop_size", "base_size"))
    crop = value["crop_size"]
    if not isinstance(crop, list) or len(crop) != 2:
        raise metadata_error(where, "inference.crop_size", "[height, width]", crop)
    for i, side in enumerate(crop):
        if not is_int(side) or not 1 <= side <= MAX_SIDE:
            raise metadata_error(where, f"inference.crop_size[{i}]", f"an integer in [1, {MAX_SIDE}]", side)
    if not is_int(value["base_size"]) or not 1 <= value["base_size"] <= MAX_SIDE:
        raise metadata_error(where, "inference.base_size", f"an integer in [1, {MAX_SIDE}]", value["base_size"])


def _check_source(where: Any, value: Any, config: ModelConfig) -> None:
    if value is not None and not isinstance(value, dict):
        raise metadata_error(where, "source", "null or an object (where the weights came from)", value)


# The entries of a card after ``model``, each with its check (run in this order, after the model config's).
_FIELD_CHECKS: dict[str, Callable[[Any, Any, ModelConfig], None]] = {
    "pspnet_version": _check_pspnet_version,
    "dataset": _check_dataset,
    "classes": _check_classes,
    "palette": _check_palette,
    "ignore_index": _check_ignore_index,
    "normalization": _check_normalization,
    "inference": _check_inference,
    "source": _check_source,
}
CARD_KEYS = ("model", *_FIELD_CHECKS)
