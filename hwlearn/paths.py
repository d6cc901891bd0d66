"""Where the bundled fonts and corpus statistics live, and how a file is written so that no reader sees half of it.

The repository ships ``fonts/`` and ``corpora/`` next to the ``hwlearn`` package. An editable
install (``pip install -e .``) finds them there; otherwise set ``HWLEARN_FONTS`` /
``HWLEARN_CORPUS`` or pass ``--fonts`` / ``--corpus`` explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS_NAME = "en_default.json"


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file beside it and a rename: a reader sees the
    old file or the new one, never a half-written one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
    for folder in _corpus_folders():
        if (folder / DEFAULT_CORPUS_NAME).is_file():
            return folder / DEFAULT_CORPUS_NAME
    return REPO_ROOT / "corpora" / DEFAULT_CORPUS_NAME


def _corpus_folders() -> list[Path]:
    """Where bundled corpus statistics are looked for: ``<repo>/corpora``, then ``./corpora``."""
    return [REPO_ROOT / "corpora", Path.cwd() / "corpora"]


def recorded_path(recorded: str | None, kind: str) -> Path | None:
    """Where the fonts directory (``kind="fonts"``) or corpus statistics file (``kind="corpus"``) that a
    checkpoint records is now: the recorded path when it is there; else, for a checkpoint copied to
    another machine or checkout, the fonts of :func:`default_fonts_dir` or the corpus file of the
    same name in ``$HWLEARN_CORPUS``'s folder or the bundled ``corpora/`` (a note says so; the
    caller checks the fonts are as many as recorded); None for None. Raises
    :class:`~hwlearn.errors.HwlearnError`, naming the path and the variable to set, when neither is
    there."""
    if recorded is None:
        return None
    if Path(recorded).exists():
        return Path(recorded)
    from .console import console
    from .errors import HwlearnError

    if kind == "fonts":
        found, variable = default_fonts_dir(), "HWLEARN_FONTS"
        found = found if found.is_dir() else None
    else:
        name, variable = Path(recorded).name, "HWLEARN_CORPUS"
        folders = [Path(os.environ["HWLEARN_CORPUS"]).parent] if os.environ.get("HWLEARN_CORPUS") else []
        folders += _corpus_folders()
        found = next((f / name for f in folders if (f / name).is_file()), None)
    if found is None:
        raise HwlearnError(f"{recorded}: not found, nor a copy where hwlearn looks (set {variable} to the {kind} "
                           "the model was pretrained with)")
    console.print(f"[yellow]{recorded}: not here; using {found}", highlight=False)
    return found
