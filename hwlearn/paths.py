"""Where the bundled fonts and corpus statistics live.

The repository ships ``fonts/`` and ``corpora/`` next to the ``hwlearn`` package. An editable
install (``pip install -e .``) finds them there; otherwise set ``HWLEARN_FONTS`` /
``HWLEARN_CORPUS`` or pass ``--fonts`` / ``--corpus`` explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS_NAME = "en_default.json"


def default_fonts_dir() -> Path:
    """The bundled fonts directory (``$HWLEARN_FONTS``, else ``<repo>/fonts``, else ``./fonts``)."""
    env = os.environ.get("HWLEARN_FONTS")
    if env:
        return Path(env)
    for candidate in (REPO_ROOT / "fonts", Path.cwd() / "fonts"):
        if candidate.is_dir():
            return candidate
    return REPO_ROOT / "fonts"


def default_corpus_path() -> Path:
    """The bundled English statistics file (``$HWLEARN_CORPUS``, else ``<repo>/corpora/en_default.json``)."""
    env = os.environ.get("HWLEARN_CORPUS")
    if env:
        return Path(env)
    for candidate in (REPO_ROOT / "corpora" / DEFAULT_CORPUS_NAME, Path.cwd() / "corpora" / DEFAULT_CORPUS_NAME):
        if candidate.is_file():
            return candidate
    return REPO_ROOT / "corpora" / DEFAULT_CORPUS_NAME
