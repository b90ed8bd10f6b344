"""Reading ``--palette``: a data set's colours by name, or a palette file (JSON or ``r g b`` lines)."""

from __future__ import annotations

import json
from pathlib import Path

from ..data.classes import DATASETS
from ..parsing import is_rgb

__all__ = ["load_palette"]


def load_palette(spec: str, num_classes: int) -> list[tuple[int, int, int]]:
    """A palette from a data set name (``pspnet.data.classes.DATASETS``) or a file: a JSON list of ``[r, g, b]``,
    or one ``r g b`` per line (commas allowed; blank lines and ``#`` comments ignored).

    Raises ``ValueError`` naming the file or data set when it cannot be read, a colour is not three integers in
    0..255, or its class count differs from ``num_classes``.
    """
    if spec in DATASETS:
        colours = [tuple(c) for c in DATASETS[spec].palette]
        what = f"palette {spec!r}"
    else:
        path = Path(spec)
        what = f"palette file {path}"
        if not path.is_file():
            raise ValueError(f"{what}: not found (give a data set name, one of {sorted(DATASETS)}, or a file)")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"{what}: cannot read: {error}") from None
        stripped = text.lstrip()
        try:
            if stripped.startswith("["):
                data = json.loads(text)
                if not isinstance(data, list):
                    raise ValueError("expected a JSON list of [r, g, b]")
                colours = [tuple(c) if isinstance(c, list) else (c,) for c in data]
            else:
                colours = []
                for line in text.splitlines():
                    line = line.split("#", 1)[0].replace(",", " ").strip()
                    if line:
                        colours.append(tuple(int(v) for v in line.split()))
        except ValueError as error:
            raise ValueError(f"{what}: not a JSON list of [r, g, b] nor 'r g b' lines: {error}") from None
        for i, colour in enumerate(colours):
            if not is_rgb(colour):
                raise ValueError(f"{what}: colour {i} is {list(colour)}; expected three integers in 0..255")
    if len(colours) != num_classes:
        raise ValueError(f"{what} has {len(colours)} colours but the model predicts {num_classes} classes")
    return [(int(r), int(g), int(b)) for r, g, b in colours]
