"""One word -> one grayscale image that looks like a handwritten word crop.

:class:`Renderer` draws a word with a handwriting font that covers all of its characters and
randomizes everything else from the caller's :class:`numpy.random.Generator`, so the same seed
gives the same pixels in any process. The steps, each a few vectorized numpy / scipy / Pillow
operations:

1. **glyphs** — pick a covering font and a size (so that the font's line height is about the
   output height), draw the word with Pillow (RAQM layout, so cursive joins and contextual forms
   work; occasionally per character with extra tracking, or with trailing punctuation set a gap
   apart; in the ``historical`` style an ordinal's letters raised, a line-break hyphen on the
   baseline) onto a generous canvas, crop it to the ink, then move the stroke edges towards a
   random pen width (dilation by blur + shifted threshold, thinning by lowering the
   anti-aliased coverage);
2. **geometry** — one inverse warp (``scipy.ndimage.map_coordinates``) combining horizontal
   stretch, slant (shear), a perspective-like taper, rotation, baseline waviness and a smooth
   elastic displacement field;
3. **crop** — the ink bounding box, optionally grown towards the font's ascender/descender lines
   (so short lowercase words are not always blown up to the full height), plus random margins,
   resized to the output height with the width following the aspect ratio;
4. **appearance** — at output resolution: ink of neighbouring words cut by the crop, paper
   brightness and mottled texture, ink contrast and fading, blur, resolution loss and noise.

All random ranges live in the frozen :class:`RenderStyle` (presets ``default``, ``historical``,
``hard``, ``clean``); ``docs/rendering.md`` lists them with their units. Font objects are never pickled:
each process opens them lazily, cached by ``(path, size)``, so a :class:`Renderer` can be sent to
DataLoader workers.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features
from scipy import ndimage
from scipy.special import ndtr

from .charset import BREAK_MARK, normalize
from .errors import HwlearnError
from .fonts import FontInfo, FontLibrary

Range = tuple[float, float]


# -- style: the random ranges -------------------------------------------------------------------


@dataclass(frozen=True)
class RenderStyle:
    """Random ranges of every rendering parameter; each ``(lo, hi)`` is sampled uniformly.

    Units: *em* = the font size, *line* = the font's ascender-to-descender height, *word* = the
    height of the crop before margins, *h* = the output height. See ``docs/rendering.md``.
    """

    # glyphs
    font_scale: Range = (0.8, 1.2)  # line height used for drawing, in h (internal resolution)
    stroke_width: Range = (0.03, 0.075)  # pen width, line (bundled fonts' own: 0.03..0.12; 0 = keep)
    tracking_prob: float = 0.15  # chance of per-character layout with extra letter spacing
    tracking: Range = (0.0, 0.12)  # extra space between characters, em
    mark_gap_prob: float = 0.5  # chance of a gap before trailing punctuation (``day ,``: pens lift, fonts don't)
    mark_gap: Range = (0.05, 0.4)  # that gap, em
    long_s_prob: float = 0.0  # chance that a double s is drawn with a long first s (``ſs``, before ~1800)
    superscript_prob: float = 0.0  # chance that an ordinal's letters are drawn small and raised (``28ᵗʰ.``)
    superscript_scale: Range = (0.45, 0.7)  # their size, em of the word's
    superscript_raise: Range = (0.5, 0.9)  # their baseline's height, in heights of the digits
    low_hyphen_prob: float = 0.0  # chance that a line-break hyphen (``immedi-``) is drawn on the baseline
    # geometry
    stretch: Range = (0.9, 1.6)  # horizontal scale factor
    slant: Range = (-10.0, 25.0)  # shear angle in degrees, > 0 leans right
    rotation: Range = (-2.5, 2.5)  # degrees, > 0 counter-clockwise
    taper: Range = (0.0, 0.08)  # height change from one end of the word to the other
    wave_amplitude: Range = (0.0, 0.05)  # baseline waviness, em
    wave_length: Range = (2.0, 6.0)  # waviness period, em
    elastic_amplitude: Range = (0.0, 0.025)  # smooth random displacement, em
    elastic_scale: Range = (0.25, 0.5)  # correlation length of that displacement, em
    # crop
    line_box: Range = (0.7, 1.0)  # 0: tight to the ink vertically, 1: full ascender..descender box
    margin_x: Range = (0.02, 0.2)  # padding left and right (each sampled), word
    margin_y: Range = (0.05, 0.4)  # padding top and bottom (each sampled), word
    # appearance
    paper: Range = (0.72, 1.0)  # paper brightness (0 = black, 1 = white)
    paper_texture: Range = (0.0, 0.03)  # amplitude of low-frequency paper mottling
    contrast: Range = (0.45, 0.95)  # ink darkness relative to the paper (1 = black ink)
    ink_fade: Range = (0.0, 0.35)  # low-frequency loss of contrast along the strokes
    clutter_prob: float = 0.25  # chance of letters of neighbouring words cut by the edges
    blur: Range = (0.0, 0.012)  # gaussian blur sigma, h
    downsample_prob: float = 0.2  # chance of resolution loss (down- then up-sampling)
    downsample: Range = (1.2, 2.0)  # resolution loss factor
    noise: Range = (0.0, 0.03)  # gaussian pixel noise standard deviation (intensity 0..1)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple):
                if len(value) != 2 or value[0] > value[1]:
                    raise HwlearnError(f"render style: {field.name} must be a (lo, hi) range, got {value}")
            elif field.name.endswith("_prob") and not 0.0 <= value <= 1.0:
                raise HwlearnError(f"render style: {field.name} must be in [0, 1], got {value}")

    @classmethod
    def preset(cls, name: str) -> "RenderStyle":
        """A named style: ``default``, ``hard`` (stronger distortions and noise, for a synthetic
        target domain) or ``clean`` (plain black ink on white, for font previews)."""
        try:
            return PRESETS[name]
        except KeyError:
            raise HwlearnError(f"unknown render style {name!r} (choose from {', '.join(PRESETS)})") from None

    def replace(self, **changes) -> "RenderStyle":
        """A copy with some ranges changed, e.g. ``style.replace(slant=(0, 30))``."""
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, RenderStyle] = {
    "default": RenderStyle(),
    "hard": RenderStyle(
        stroke_width=(0.025, 0.085),
        tracking_prob=0.25,
        stretch=(0.7, 1.7),
        slant=(-20.0, 40.0),
        rotation=(-6.0, 6.0),
        taper=(0.0, 0.15),
        wave_amplitude=(0.0, 0.1),
        elastic_amplitude=(0.01, 0.05),
        margin_x=(-0.02, 0.35),
        margin_y=(-0.02, 0.4),
        paper=(0.6, 0.95),
        paper_texture=(0.02, 0.07),
        contrast=(0.5, 0.9),
        ink_fade=(0.1, 0.4),
        clutter_prob=0.5,
        blur=(0.003, 0.018),
        downsample_prob=0.5,
        downsample=(1.3, 2.2),
        noise=(0.01, 0.05),
    ),
    # handwriting from before about 1800 (GW's letters of 1755): the default, and half of all double s drawn
    # with a long first s (``neceſsary``), which a model pretrained without reads as one f (``necefary``); half
    # of all ordinals with raised letters (``28ᵗʰ``, read as ``it``) and half of all line-break hyphens on the
    # baseline (``particu_``, read as ``particu.``)
    "historical": RenderStyle(long_s_prob=0.5, superscript_prob=0.5, low_hyphen_prob=0.5),
    "clean": RenderStyle(
        font_scale=(1.0, 1.0), stroke_width=(0.0, 0.0), tracking_prob=0.0, mark_gap_prob=0.0, stretch=(1.0, 1.0),
        slant=(0.0, 0.0), rotation=(0.0, 0.0), taper=(0.0, 0.0), wave_amplitude=(0.0, 0.0),
        elastic_amplitude=(0.0, 0.0), line_box=(1.0, 1.0), margin_x=(0.1, 0.1), margin_y=(0.05, 0.05),
        paper=(1.0, 1.0), paper_texture=(0.0, 0.0), contrast=(1.0, 1.0), ink_fade=(0.0, 0.0),
        clutter_prob=0.0, blur=(0.0, 0.0), downsample_prob=0.0, noise=(0.0, 0.0),
    ),
}


# -- the renderer -------------------------------------------------------------------------------


class Renderer:
    """Renders words as grayscale uint8 arrays ``(height, W)``, dark ink on light paper."""

    def __init__(self, fonts: FontLibrary, height: int = 64, style: RenderStyle | None = None):
        if len(fonts) == 0:
            raise HwlearnError("renderer needs at least one font")
        if height < 8:
            raise HwlearnError(f"render height must be at least 8 pixels, got {height}")
        self.fonts = fonts
        self.height = int(height)
        self.style = style or RenderStyle()
        self._covering: dict[frozenset[int], tuple[FontInfo, ...]] = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_covering"] = {}  # a cache: rebuilt in the receiving process
        return state

    def fonts_for(self, word: str) -> tuple[FontInfo, ...]:
        """The fonts that can draw every character of ``word``."""
        needed = frozenset(ord(ch) for ch in normalize(word))
        found = self._covering.get(needed)
        if found is None:
            found = self._covering[needed] = tuple(self.fonts.covering(word))
        return found

    def can_render(self, word: str) -> bool:
        """True when ``word`` has a visible character and some font covers all of its characters."""
        return bool(word.strip()) and bool(self.fonts_for(word))

    def render(self, word: str, rng: np.random.Generator) -> np.ndarray:
        """``word`` as a uint8 image ``(height, W)``; every random choice is drawn from ``rng``.

        Raises :class:`HwlearnError` for a blank word or one that no font covers.
        """
        word = normalize(word)
        if not word.strip():
            raise HwlearnError(f"cannot render a blank word {word!r}")
        candidates = self.fonts_for(word)
        if not candidates:
            raise HwlearnError(f"no font covers every character of {word!r} (missing in all: "
                               f"{self._missing_everywhere(word)!r})")
        font = candidates[int(rng.integers(len(candidates)))]
        return self.render_with_font(word, font, rng)

    def render_with_font(self, word: str, font: FontInfo, rng: np.random.Generator) -> np.ndarray:
        """Like :meth:`render` with the font fixed (it must cover ``word``)."""
        word = normalize(word)
        if not word.strip():
            raise HwlearnError(f"cannot render a blank word {word!r}")
        if not font.covers(word):
            raise HwlearnError(f"{font.path}: font cannot draw {font.missing(word)!r} of {word!r}")
        s, h = self.style, self.height
        line_per_em, native_stroke = _font_metrics(str(font.path))
        size = max(8, round(h * _u(rng, s.font_scale) / line_per_em))
        if s.long_s_prob > 0 and "ss" in word and font.covers(LONG_S):
            word = _with_long_s(word, rng, s.long_s_prob)  # (drawn so: the label stays the word)
        glyphs = _draw_word(word, font, size, rng, s)
        target = _u(rng, s.stroke_width)
        if target > 0:  # 0 keeps the font's own pen
            glyphs.mask = _shift_weight(glyphs.mask, 0.5 * (target - native_stroke) * line_per_em * size)
        warped, lines = _warp(glyphs, size, rng, s)
        alpha = _crop_and_resize(warped, lines, h, rng, s)
        if rng.random() < s.clutter_prob:
            alpha = _clutter(alpha, font, rng)
        return _appearance(alpha, rng, s)

    def _missing_everywhere(self, word: str) -> str:
        return "".join(ch for ch in dict.fromkeys(word) if not self.fonts.covering(ch))


# -- step 1: glyphs -----------------------------------------------------------------------------


@dataclass
class _Glyphs:
    mask: np.ndarray  # float32 (h, w), 1 = ink, anti-aliased
    box: tuple[float, float, float, float]  # ink box (x0, y0, x1, y1) in mask pixels
    top_line: float  # y of the font's ascender line (tall lowercase letters)
    bottom_line: float  # y of the font's descender line


_LAYOUT = ImageFont.Layout.RAQM if features.check_feature("raqm") else ImageFont.Layout.BASIC


@lru_cache(maxsize=2048)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    """The Pillow font of one file at one size, opened once per process."""
    return ImageFont.truetype(path, size, layout_engine=_LAYOUT)


@lru_cache(maxsize=None)
def _font_metrics(path: str) -> tuple[float, float]:
    """(line height per em, the font's own stroke width in line heights), measured once.

    The line height runs from the top of ``bdhkl`` to the bottom of ``gjpqy``; the stroke width
    is ``2 * area / boundary length`` of the ink of a few round and straight lowercase letters.
    """
    size = 100
    top, bottom = _reference_lines(path, size)
    line = max(1.0, bottom - top)
    font = _font(path, size)
    sample = "noemuavxrs"
    left, t, right, b = font.getbbox(sample, anchor="ls")
    image = Image.new("L", (int(right - left) + 8, int(b - t) + 8), 0)
    ImageDraw.Draw(image).text((4 - left, 4 - t), sample, fill=255, font=font, anchor="ls")
    ink = np.asarray(image) > 127
    boundary = np.count_nonzero(ink & ~ndimage.binary_erosion(ink))
    stroke = 2.0 * np.count_nonzero(ink) / boundary / line if boundary else 0.05
    return line / size, float(stroke)


@lru_cache(maxsize=2048)
def _reference_lines(path: str, size: int) -> tuple[float, float]:
    """(ascender top, descender bottom) relative to the baseline: the median extent of the
    ascenders ``bdhkl`` and descenders ``gjpqy`` (one freak letter does not count)."""
    font = _font(path, size)
    tops = [font.getbbox(ch, anchor="ls")[1] for ch in "bdhkl"]
    bottoms = [font.getbbox(ch, anchor="ls")[3] for ch in "gjpqy"]
    return float(np.median(tops)), float(np.median(bottoms))


#: What a long s (``ſ``) is drawn with (``RenderStyle.long_s_prob``): no bundled font draws U+017F, and
#: handwriting's long s is an f without (or with half) its crossbar.
LONG_S = "f"


def _with_long_s(word: str, rng: np.random.Generator, prob: float) -> str:
    """``word`` with the first s of each double s drawn as :data:`LONG_S`, each with probability ``prob``."""
    return re.sub("ss", lambda m: LONG_S + "s" if rng.random() < prob else "ss", word)


#: Punctuation that may stand apart from the word it ends (``RenderStyle.mark_gap``).
TRAILING_MARKS = ",.;:"

#: An ordinal (``28th.``, ``1st``, ``2d``): its digits, its letters, the marks after it.
ORDINAL = re.compile(rf"(\d+)(st|nd|rd|th|d)([{re.escape(TRAILING_MARKS)}]*)")

#: A line-break part (``immedi-``): letters, then :data:`hwlearn.charset.BREAK_MARK`.
LINE_BREAK_PART = re.compile(rf"(.*\w){re.escape(BREAK_MARK)}")


class _Piece(NamedTuple):
    """Text drawn at ``(x, y)`` from the word's baseline origin (y down) with one font."""

    x: float
    y: float
    text: str
    font: ImageFont.FreeTypeFont


def _pieces(word: str, info: FontInfo, size: int, rng: np.random.Generator, s: RenderStyle) -> list[_Piece]:
    """Where each part of ``word`` is drawn: all of it at once (the font's own layout, joins and all), or one
    character at a time with extra letter spacing (``tracking``), or with its trailing marks a gap apart
    (``mark_gap``: handwriting's commas and periods often stand well after the word, a font's right after its
    last letter), or an ordinal with raised letters (``superscript_prob``), or a line-break part with its hyphen
    on the baseline (``low_hyphen_prob``). The rng is drawn from only for the choices that ``word`` allows."""
    font = _font(str(info.path), size)
    if rng.random() < s.tracking_prob and len(word) > 1:
        extra = _u(rng, s.tracking) * size
        pieces, x = [], 0.0
        for ch in word:
            pieces.append(_Piece(x, 0.0, ch, font))
            x += font.getlength(ch) + extra
        return pieces
    if s.superscript_prob and (m := ORDINAL.fullmatch(word)) and rng.random() < s.superscript_prob:
        digits, letters, marks = m.groups()
        small = _font(str(info.path), max(4, round(size * _u(rng, s.superscript_scale))))
        x = font.getlength(digits) + 0.05 * size
        y = font.getbbox(digits, anchor="ls")[1] * _u(rng, s.superscript_raise)  # (the digits' top is < 0)
        pieces = [_Piece(0.0, 0.0, digits, font), _Piece(x, y, letters, small)]
        if marks:  # under the letters, on the baseline (GW: ``28.`` with ``th`` above the period)
            pieces.append(_Piece(x + _u(rng, (0.2, 0.8)) * small.getlength(letters), 0.0, marks, font))
        return pieces
    if s.low_hyphen_prob and (m := LINE_BREAK_PART.fullmatch(word)) and rng.random() < s.low_hyphen_prob:
        body = m.group(1)
        mask, (_, y) = font.getmask2(BREAK_MARK, anchor="ls")  # (getbbox's box reaches down to the baseline)
        _, top, _, bottom = mask.getbbox() or (0, 0, 0, 0)
        x = font.getlength(body) + _u(rng, s.mark_gap) * size
        return [_Piece(0.0, 0.0, body, font), _Piece(x, -(y + 0.5 * (top + bottom)) - _u(rng, (0.0, 0.1)) * size,
                                                     BREAK_MARK, font)]
    body = word.rstrip(TRAILING_MARKS)
    if body.strip() and body != word and rng.random() < s.mark_gap_prob:
        return [_Piece(0.0, 0.0, body, font),
                _Piece(font.getlength(body) + _u(rng, s.mark_gap) * size, 0.0, word[len(body):], font)]
    return [_Piece(0.0, 0.0, word, font)]


def _draw_word(word: str, info: FontInfo, size: int, rng: np.random.Generator, s: RenderStyle) -> _Glyphs:
    """Draw ``word`` (:func:`_pieces`), then crop the canvas to its ink plus a margin for the later stroke
    dilation.

    The canvas is the layout box (``getbbox``) grown by half an em on every side, because the
    swashes of script fonts reach well outside the box Pillow reports.
    """
    pieces = _pieces(word, info, size, rng, s)
    boxes = [p.font.getbbox(p.text, anchor="ls") for p in pieces]
    left = min(p.x + b[0] for p, b in zip(pieces, boxes))
    right = max(p.x + b[2] for p, b in zip(pieces, boxes))
    top, bottom = min(p.y + b[1] for p, b in zip(pieces, boxes)), max(p.y + b[3] for p, b in zip(pieces, boxes))
    spill = int(math.ceil(0.5 * size))
    image = Image.new("L", (int(math.ceil(right - left)) + 2 * spill, int(math.ceil(bottom - top)) + 2 * spill), 0)
    draw = ImageDraw.Draw(image)
    ox, oy = spill - left, spill - top  # where the baseline origin lands
    for p in pieces:
        draw.text((ox + p.x, oy + p.y), p.text, fill=255, font=p.font, anchor="ls")
    ink = np.asarray(image)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        raise HwlearnError(f"{info.path}: font drew no ink for {word!r}")
    pad = int(math.ceil(0.1 * size)) + 2
    y0, x0 = max(0, rows[0] - pad), max(0, cols[0] - pad)
    y1, x1 = min(ink.shape[0], rows[-1] + 1 + pad), min(ink.shape[1], cols[-1] + 1 + pad)
    mask = ink[y0:y1, x0:x1].astype(np.float32) * (1.0 / 255.0)
    box = (float(cols[0] - x0), float(rows[0] - y0), float(cols[-1] + 1 - x0), float(rows[-1] + 1 - y0))
    asc, desc = _reference_lines(str(info.path), size)
    return _Glyphs(mask, box, oy - y0 + asc, oy - y0 + desc)


def _shift_weight(mask: np.ndarray, offset: float) -> np.ndarray:
    """Move every stroke boundary outwards by ``offset`` pixels (inwards when negative).

    Bolder: blurring a shape with a gaussian of width sigma turns a boundary into the ramp
    ``Phi(distance / sigma)``; thresholding that ramp at ``Phi(-offset / sigma)`` puts the new
    boundary ``offset`` pixels out, and scaling by the ramp's slope keeps a one-pixel soft edge.
    Thinner: at most half a pixel, by lowering the anti-aliased coverage (no blur, so hairlines
    of script fonts survive).
    """
    if abs(offset) < 0.1:
        return mask
    if offset < 0:
        cut = min(0.5, -offset)
        return np.clip((mask - cut) * (1.0 / (1.0 - cut)), 0.0, 1.0)
    sigma = max(0.7, 0.8 * offset)
    blurred = ndimage.gaussian_filter(mask, sigma, mode="constant", truncate=3.0)
    z = -offset / sigma
    level = float(ndtr(z))
    slope = math.exp(-0.5 * z * z) / (math.sqrt(2.0 * math.pi) * sigma)  # d(blurred)/dx at the edge
    return np.clip((blurred - level) / slope + 0.5, 0.0, 1.0, dtype=np.float32)


# -- step 2: geometry ---------------------------------------------------------------------------


def _warp(g: _Glyphs, size: int, rng: np.random.Generator, s: RenderStyle) -> tuple[np.ndarray, tuple[float, float]]:
    """Warp the glyph mask; returns the warped mask and the reference lines' y in it."""
    stretch = _u(rng, s.stretch)
    shear = math.tan(math.radians(_u(rng, s.slant)))
    angle = math.radians(_u(rng, s.rotation))
    taper = _u(rng, s.taper) * (1 if rng.random() < 0.5 else -1)
    wave_amp = _u(rng, s.wave_amplitude) * size
    wave_len = max(1.0, _u(rng, s.wave_length) * size)
    wave_phase = rng.uniform(0, 2 * math.pi)
    elastic_amp = _u(rng, s.elastic_amplitude) * size
    elastic_cell = max(2.0, _u(rng, s.elastic_scale) * size)

    x0, y0, x1, y1 = g.box
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    half_w = max(1.0, 0.5 * (x1 - x0) * stretch)
    cos, sin = math.cos(angle), math.sin(angle)

    def forward(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X, Y = (x - cx) * stretch, y - cy
        X = X - Y * shear
        Y = Y * (1.0 + taper * X / half_w)
        return X * cos + Y * sin, -X * sin + Y * cos

    corners = forward(np.array([x0, x1, x0, x1]), np.array([y0, y0, y1, y1]))
    margin = wave_amp + 3.0 * elastic_amp + 2.0
    u_min, v_min = corners[0].min() - margin, corners[1].min() - margin
    out_w = int(math.ceil(corners[0].max() + margin - u_min))
    out_h = int(math.ceil(corners[1].max() + margin - v_min))

    v, u = np.mgrid[0:out_h, 0:out_w].astype(np.float32)
    if wave_amp > 0:
        v -= (wave_amp * np.sin(2 * math.pi * u[0] / wave_len + wave_phase)).astype(np.float32)
    if elastic_amp > 0:
        u -= _smooth_field(rng, out_h, out_w, elastic_cell, elastic_amp)
        v -= _smooth_field(rng, out_h, out_w, elastic_cell, elastic_amp)
    # invert: rotation, taper, shear, stretch
    U, V = u + u_min, v + v_min
    X, Y = U * cos - V * sin, U * sin + V * cos
    Y = Y / (1.0 + taper * X / half_w)
    X = X + Y * shear
    src_x, src_y = X / stretch + cx, Y + cy
    warped = ndimage.map_coordinates(g.mask, (src_y, src_x), order=1, cval=0.0, prefilter=False)

    lines_x = np.array([cx, cx])
    _, (top, bottom) = forward(lines_x, np.array([g.top_line, g.bottom_line]))
    return warped, (float(top - v_min), float(bottom - v_min))


def _smooth_field(rng: np.random.Generator, h: int, w: int, cell: float, amplitude: float) -> np.ndarray:
    """A smooth random field of shape ``(h, w)``: gaussian values on a grid of spacing ``cell``,
    bilinearly interpolated."""
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    coarse = (rng.standard_normal((gh, gw), dtype=np.float32) * amplitude).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR))


# -- step 3: crop -------------------------------------------------------------------------------


def _crop_and_resize(
    mask: np.ndarray, lines: tuple[float, float], height: int, rng: np.random.Generator, s: RenderStyle
) -> np.ndarray:
    """Crop to the ink (grown towards the reference lines, plus margins) and resize to ``height``."""
    rows = np.flatnonzero(mask.max(axis=1) > 0.1)
    cols = np.flatnonzero(mask.max(axis=0) > 0.1)
    if rows.size == 0:  # strokes thinned away entirely: keep the whole canvas
        rows, cols = np.array([0, mask.shape[0] - 1]), np.array([0, mask.shape[1] - 1])
    top, bottom = float(rows[0]), float(rows[-1] + 1)
    left, right = float(cols[0]), float(cols[-1] + 1)
    grow = _u(rng, s.line_box)
    top += grow * min(0.0, lines[0] - top)
    bottom += grow * max(0.0, lines[1] - bottom)
    ink_h = bottom - top
    top -= _u(rng, s.margin_y) * ink_h
    bottom += _u(rng, s.margin_y) * ink_h
    left -= _u(rng, s.margin_x) * ink_h
    right += _u(rng, s.margin_x) * ink_h

    scale = height / (bottom - top)
    width = max(height // 4, int(round((right - left) * scale)))
    # pad so the crop box lies inside the array (margins may reach past the canvas)
    pad = int(math.ceil(max(0.0, -top, -left, bottom - mask.shape[0], right - mask.shape[1])))
    if pad:
        mask = np.pad(mask, pad)
    box = (left + pad, top + pad, right + pad, bottom + pad)
    resized = Image.fromarray(mask).resize((width, height), Image.Resampling.BILINEAR, box=box)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


# -- step 4: appearance -------------------------------------------------------------------------


def _appearance(alpha: np.ndarray, rng: np.random.Generator, s: RenderStyle) -> np.ndarray:
    """Composite ink ``alpha`` onto paper and degrade it like a scan; returns uint8."""
    h, w = alpha.shape
    paper = _u(rng, s.paper)
    texture = _u(rng, s.paper_texture)
    contrast = _u(rng, s.contrast)
    fade = _u(rng, s.ink_fade)

    background = np.full((h, w), paper, dtype=np.float32)
    if texture > 0:
        background += _smooth_field(rng, h, w, h / 3.0, texture)
    ink_strength = np.full((h, w), contrast, dtype=np.float32)
    if fade > 0:
        ink_strength *= np.clip(1.0 - fade * np.abs(_smooth_field(rng, h, w, h / 2.0, 1.0)), 0.2, 1.0)
    image = background * (1.0 - alpha * ink_strength)

    sigma = _u(rng, s.blur) * h
    if sigma > 0.25:
        image = ndimage.gaussian_filter(image, sigma, mode="nearest", truncate=3.0)
    if rng.random() < s.downsample_prob:
        factor = _u(rng, s.downsample)
        small = Image.fromarray(image).resize(
            (max(1, round(w / factor)), max(1, round(h / factor))), Image.Resampling.BILINEAR)
        image = np.asarray(small.resize((w, h), Image.Resampling.BILINEAR))
    noise = _u(rng, s.noise)
    if noise > 0:
        image = image + rng.standard_normal((h, w), dtype=np.float32) * noise
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _clutter(alpha: np.ndarray, font: FontInfo, rng: np.random.Generator) -> np.ndarray:
    """Ink of neighbouring words cut by the crop: one or two letters of the same font whose
    descenders / ascenders poke in at the top / bottom edge, or a sliver of a letter at a side
    (never a whole letter there, which would read as part of the word)."""
    h, w = alpha.shape
    letters = [ch for ch in _CLUTTER_LETTERS if ord(ch) in font.codepoints] or ["l"]
    line_per_em, _ = _font_metrics(str(font.path))
    pil_font = _font(str(font.path), max(6, round(h * rng.uniform(0.55, 0.9) / line_per_em)))
    image = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 3))):
        ch = letters[int(rng.integers(len(letters)))]
        left, top, right, bottom = pil_font.getbbox(ch, anchor="ls")
        edge = int(rng.integers(4))  # 0 top, 1 bottom, 2 left, 3 right
        reach = rng.uniform(0.04, 0.2) * h if edge < 2 else rng.uniform(0.01, 0.05) * h
        if edge == 0:
            x, y = rng.uniform(-left, w), reach - bottom
        elif edge == 1:
            x, y = rng.uniform(-left, w), h - reach - top
        elif edge == 2:
            x, y = reach - right, rng.uniform(0.6, 0.85) * h
        else:
            x, y = w - reach - left, rng.uniform(0.6, 0.85) * h
        draw.text((x, y), ch, fill=255, font=pil_font, anchor="ls")
    return np.maximum(alpha, np.asarray(image, dtype=np.float32) * (1.0 / 255.0))


_CLUTTER_LETTERS = "bdfghjklpqty"


# -- contact sheets -----------------------------------------------------------------------------


def contact_sheet(
    images: Sequence[np.ndarray | Image.Image],
    labels: Sequence[str] | None = None,
    cols: int = 8,
    cell_height: int = 64,
    cell_width: int | None = None,
    label_chars: int = 40,
) -> Image.Image:
    """A grid of word images (each scaled to ``cell_height``, shrunk to fit ``cell_width``,
    default 4 x height) with optional labels (their first ``label_chars`` characters) underneath,
    on a gray background."""
    if not images:
        raise HwlearnError("contact sheet needs at least one image")
    cell_width = cell_width or 4 * cell_height
    label_h = 16 if labels is not None else 0
    gap = 6
    rows = (len(images) + cols - 1) // cols
    sheet = Image.new("L", (cols * (cell_width + gap) + gap, rows * (cell_height + label_h + gap) + gap), 150)
    draw = ImageDraw.Draw(sheet)
    label_font = _label_font()
    for k, img in enumerate(images):
        tile = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img, dtype=np.uint8))
        tile = tile.convert("L")
        scale = min(cell_height / tile.height, cell_width / tile.width)
        tile = tile.resize((max(1, round(tile.width * scale)), max(1, round(tile.height * scale))),
                           Image.Resampling.BILINEAR)
        r, c = divmod(k, cols)
        x, y = gap + c * (cell_width + gap), gap + r * (cell_height + label_h + gap)
        sheet.paste(tile, (x, y))
        if labels is not None:
            draw.text((x + 1, y + cell_height + 1), str(labels[k])[:label_chars], fill=0, font=label_font)
    return sheet


def _label_font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A plain sans font for sheet labels (DejaVu Sans covers umlauts; else Pillow's default)."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", 12)
    except OSError:
        return ImageFont.load_default(size=12)


def _u(rng: np.random.Generator, r: Range) -> float:
    """One uniform draw from the range ``(lo, hi)`` (always consumes one random number)."""
    return float(rng.uniform(r[0], r[1]))
