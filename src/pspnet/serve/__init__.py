"""``pspnet serve``: an HTTP service around one :class:`~pspnet.segmenter.Segmenter`, and the page it serves.

- :mod:`.jobs`: the one bounded queue and the single worker thread that micro-batches requests (no web framework);
- :mod:`.inputs`: checks of a request's query and image bytes (raw or multipart), each failure an
  :class:`HTTPProblem` with its status;
- :mod:`.app`: the Starlette application (routes, metrics, the page) and :func:`~.app.run_server` (uvicorn).

Starlette, uvicorn, python-multipart and prometheus_client are the optional extra ``pspnet[serve]``;
:func:`require_serve` says how to install them.
"""

from __future__ import annotations

import importlib

from ..errors import InputError

__all__ = ["SERVE_PACKAGES", "require_serve"]

# import name -> distribution name
SERVE_PACKAGES = {
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "python_multipart": "python-multipart",
    "prometheus_client": "prometheus_client",
}


def require_serve() -> None:
    """Raise an :class:`~pspnet.errors.InputError` naming the missing packages and saying how to install them when
    the ``serve`` extra is not installed."""
    missing = []
    for module, distribution in SERVE_PACKAGES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(distribution)
    if missing:
        raise InputError(
            f"'pspnet serve' needs the packages {', '.join(SERVE_PACKAGES.values())} (missing: {', '.join(missing)}); "
            "install them with: pip install 'pspnet[serve]'"
        )
