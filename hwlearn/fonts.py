"""Handwriting fonts and which characters each one can draw.

:meth:`FontLibrary.scan` walks a fonts directory (recursively: ``.ttf``, ``.otf``, ``.woff``,
``.woff2``), reads every font's best cmap with fontTools and keeps only the code points whose
glyph actually has ink (whitespace excepted), so a word is only ever rendered with a font that
covers all of its characters — no tofu boxes, no silently blank letters. A font that fontTools
or Pillow cannot open is reported (``on_error(path, reason)`` or a :mod:`warnings` warning) and
skipped.

Font names come from a ``manifest.json`` in the scanned tree when it lists the file
(``[{"family": ..., "file": "ttf/x.ttf"}, ...]``, paths relative to the manifest), else from
the font's ``name`` table (full name), else the file name.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .charset import Charset, normalize
from .errors import HwlearnError

FONT_SUFFIXES = (".ttf", ".otf", ".woff", ".woff2")
MANIFEST_NAME = "manifest.json"

#: ``on_error(path, reason)``: told about each font file that is skipped.
ErrorCallback = Callable[[Path, str], None]


@dataclass(frozen=True)
class FontInfo:
    """One usable font file: its path, a display name and the code points it draws."""

    path: Path
    name: str
    codepoints: frozenset[int]

    def covers(self, text: str) -> bool:
        """True when the font draws every character of ``text`` (after NFC)."""
        return all(ord(ch) in self.codepoints for ch in normalize(text))

    def missing(self, text: str) -> str:
        """Characters of ``text`` the font cannot draw, in order of first occurrence."""
        return "".join(dict.fromkeys(ch for ch in normalize(text) if ord(ch) not in self.codepoints))


class FontLibrary:
    """An ordered collection of :class:`FontInfo` with coverage queries."""

    def __init__(self, fonts: Iterable[FontInfo]):
        self.fonts: list[FontInfo] = list(fonts)

    def __len__(self) -> int:
        return len(self.fonts)

    def __iter__(self) -> Iterator[FontInfo]:
        return iter(self.fonts)

    def __repr__(self) -> str:
        return f"FontLibrary({len(self.fonts)} fonts)"

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fonts]

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def scan(cls, directory: str | Path, on_error: ErrorCallback | None = None) -> "FontLibrary":
        """All loadable fonts under ``directory`` (sorted by path).

        Raises :class:`HwlearnError` when the directory is missing, holds no font files, or
        none of them loads. Broken files are reported through ``on_error(path, reason)``
        (default: :func:`warnings.warn`) and skipped.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise HwlearnError(f"{directory}: fonts directory not found")
        paths = sorted(
            p for p in directory.rglob("*") if p.suffix.lower() in FONT_SUFFIXES and p.is_file()
        )
        if not paths:
            raise HwlearnError(f"{directory}: no font files (.ttf/.otf/.woff/.woff2) found")
        report = on_error or _warn
        manifest = _read_manifests(directory, report)
        fonts = []
        for path in paths:
            try:
                fonts.append(_load_font(path, manifest.get(path.resolve())))
            except Exception as exc:  # any failure of fontTools/FreeType means "unusable font"
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
                report(path, f"cannot load font, skipped ({reason})")
        if not fonts:
            raise HwlearnError(f"{directory}: none of the {len(paths)} font files could be loaded")
        return cls(fonts)

    def subset(self, names: Iterable[str]) -> "FontLibrary":
        """The fonts whose name or file stem is in ``names`` (case-insensitive), in library order."""
        names = [names] if isinstance(names, str) else list(names)
        known = {k for f in self.fonts for k in _keys(f)}
        unknown = [n for n in names if n.casefold() not in known]
        if unknown:
            raise HwlearnError(f"no such font in the library: {', '.join(unknown)}")
        wanted = {n.casefold() for n in names}
        return FontLibrary(f for f in self.fonts if wanted & _keys(f))

    def split(
        self, held_out: Sequence[str] | float, seed: int = 0
    ) -> tuple["FontLibrary", "FontLibrary"]:
        """``(kept, held_out)``: hold fonts out as a synthetic target domain.

        ``held_out`` is either a list of font names / file stems, or a fraction of the library
        chosen at random with ``seed`` (at least one font on each side).
        """
        if isinstance(held_out, (int, float)) and not isinstance(held_out, bool):
            if not 0.0 < held_out < 1.0:
                raise HwlearnError(f"held-out font fraction must be in (0, 1), got {held_out}")
            if len(self.fonts) < 2:
                raise HwlearnError("cannot split a font library of fewer than 2 fonts")
            k = min(max(1, round(held_out * len(self.fonts))), len(self.fonts) - 1)
            chosen = set(np.random.default_rng(seed).permutation(len(self.fonts))[:k].tolist())
        else:
            held = self.subset(held_out)
            chosen = {i for i, f in enumerate(self.fonts) if f in held.fonts}
        kept = FontLibrary(f for i, f in enumerate(self.fonts) if i not in chosen)
        out = FontLibrary(f for i, f in enumerate(self.fonts) if i in chosen)
        return kept, out

    # -- queries ----------------------------------------------------------------------------

    def covering(self, word: str) -> list[FontInfo]:
        """Fonts that draw every character of ``word`` (a space counts when the font maps U+0020)."""
        needed = {ord(ch) for ch in normalize(word)}
        return [f for f in self.fonts if needed <= f.codepoints]

    def charset(self, min_fonts: int = 1) -> Charset:
        """Printable characters drawn by at least ``min_fonts`` fonts, sorted by code point."""
        counts: dict[int, int] = {}
        for f in self.fonts:
            for cp in f.codepoints:
                counts[cp] = counts.get(cp, 0) + 1
        chars = [
            chr(cp) for cp in sorted(counts)
            if counts[cp] >= min_fonts and chr(cp).isprintable() and normalize(chr(cp)) == chr(cp)
        ]
        if not chars:
            raise HwlearnError(f"no character is drawn by {min_fonts} or more of the {len(self)} fonts")
        return Charset(chars)

    def coverage(self, charset: Charset | str) -> list[tuple[FontInfo, str]]:
        """For each font, the characters of ``charset`` it cannot draw (``""`` = full coverage)."""
        text = charset.to_string() if isinstance(charset, Charset) else normalize(charset)
        return [(f, f.missing(text)) for f in self.fonts]


# -- loading one font ---------------------------------------------------------------------------


def _load_font(path: Path, manifest_name: str | None) -> FontInfo:
    """Read the cmap (dropping ink-less glyphs) and the name; check that Pillow opens it too."""
    from fontTools.ttLib import TTFont
    from PIL import ImageFont

    logging.getLogger("fontTools").setLevel(logging.ERROR)  # chatty about harmless table quirks
    with TTFont(str(path), lazy=True) as font:
        cmap = font.getBestCmap()
        if not cmap:
            raise ValueError("no usable character map")
        has_ink = _ink_checker(font)
        codepoints = frozenset(
            cp for cp, glyph in cmap.items() if chr(cp).isspace() or has_ink(glyph)
        )
        name = manifest_name or _name_from_table(font) or path.stem
    if not codepoints:
        raise ValueError("no character has a glyph with ink")
    ImageFont.truetype(str(path), 16)  # the renderer uses FreeType: it must open the file too
    return FontInfo(path=path, name=name, codepoints=codepoints)


def _ink_checker(font) -> Callable[[str], bool]:
    """A function ``glyph name -> has any outline`` for TrueType or CFF outlines."""
    if "glyf" in font and "loca" in font:
        offsets = font["loca"]  # a glyph without outline data has zero length in 'glyf'
        glyph_id = font.getReverseGlyphMap()
        return lambda name: offsets[glyph_id[name] + 1] > offsets[glyph_id[name]]
    for tag in ("CFF ", "CFF2"):
        if tag in font:
            cff = font[tag].cff
            charstrings = cff.topDictIndex[0].CharStrings
            return lambda name: _charstring_draws(charstrings[name])
    return lambda name: True  # bitmap/other outlines: trust the cmap


def _charstring_draws(charstring) -> bool:
    """True unless a CFF glyph program is just an (optional) width and ``endchar``."""
    charstring.decompile()
    return any(isinstance(token, str) and token != "endchar" for token in charstring.program)


def _name_from_table(font) -> str | None:
    """Full font name (name ID 4), else family (ID 16 or 1) from the ``name`` table."""
    if "name" not in font:
        return None
    table = font["name"]
    for name_id in (4, 16, 1):
        record = table.getDebugName(name_id)
        if record and record.strip():
            return record.strip()
    return None


def _read_manifests(directory: Path, report: ErrorCallback) -> dict[Path, str]:
    """``resolved font path -> family`` from every ``manifest.json`` under ``directory``."""
    names: dict[Path, str] = {}
    for manifest in sorted(directory.rglob(MANIFEST_NAME)):
        try:
            entries = json.loads(manifest.read_text(encoding="utf-8"))
            for entry in entries:
                if entry.get("file") and entry.get("family"):
                    names[(manifest.parent / entry["file"]).resolve()] = str(entry["family"])
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            report(manifest, f"unreadable font manifest ({type(exc).__name__}); names taken from the fonts")
    return names


def _keys(font: FontInfo) -> set[str]:
    return {font.name.casefold(), font.path.stem.casefold()}


def _warn(path: Path, reason: str) -> None:
    warnings.warn(f"{path}: {reason}", stacklevel=3)
