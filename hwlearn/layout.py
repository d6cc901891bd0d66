"""Word-image layout: trimming a real crop's blank margins to those of the synthetic words.

Real word crops come with whatever margins their segmentation left. The George Washington crops
have a median 0.27 / 0.39 image heights of blank paper left / right of the ink; the DHSD names
sit in fixed 256x64 boxes, their ink spanning 41 % of the height. hwlearn's synthetic words sit
on a canvas sized to their ink: ~0.1 image heights at each side, ink spanning ~53 % of the height.
A recognizer trained on synthetic words reads a real crop better when its margins look like the
synthetic ones, *unless* trimming changes the scale of the letters: cropping rows to the ink box
makes a word without ascenders or descenders ("one") much taller than the same word drawn by
the renderer, whose canvas keeps room above and below. Which layout suits a collection therefore
depends on the collection, and :func:`hwlearn.selftrain.adapt` chooses it without labels, by the
pretrained model's mean confidence on the unlabeled images (measured: it picked the layout with
the lowest CER on both GW and DHSD; see ``benchmarks/EXPERIMENTS.md``).

Layouts (:data:`LAYOUTS`):

- ``as-is``: the image untouched;
- ``trim-sides``: the columns outside the ink box are cut and the synthetic side margins added;
- ``trim-all``: rows too: the ink box gets the synthetic words' margins on all four sides.

The ink box is found on the contrast-stretched image (:func:`hwlearn.data.ink_map`, ink > 0.5).
It spans the rows holding the central 98 % of the ink pixels (so that a stroke from the line above
or below does not stretch it) and every column with ink of a connected ink blob of at least
:data:`MIN_BLOB` pixels (lone noise pixels do not count; a thin pen stroke is one long blob). The
columns keep *all* the ink because what sits at a word's ends is part of it: a trailing period or
comma can hold less than 0.5 % of a long word's ink, and cutting columns by ink share (as hwlearn
did before) removed it from the image while the label kept it (GW's ``Instructions.`` lost its
period). For the same reason the columns also take in **faint ink** (> 0.3) near them
(:data:`FAINT_REACH` image heights): a word's ends are often its faintest strokes, a comma's flick,
a hyphen, a capital's lead-in, and above 0.5 alone ``trim-sides`` cut GW's ``here,`` to ``here``
and ``Com-`` to ``Com`` (measured on GW's train labels with the character model: an adapted model
read them 0.0501 -> 0.0479 by this alone; adapted with it, two pretrained models read 0.0501 ->
0.0456 and 0.0517 -> 0.0510; DHSD's boxes barely change, its faint form lines lying far from the
names; ``benchmarks/EXPERIMENTS.md``, session 79).
The one exception is a **form rule** (:func:`edge_rules`): a thin vertical line at the left or
right end, apart from the word, running at least the whole height of the rest of the ink.
Crops cut from forms keep pieces of the boxes' borders (92 of DHSD's 4,745 train names, none of
GW's words), and a recognizer reads them as ``I`` or ``l``. Margins are in units of the resulting
image height; their values are the medians measured on synthetic words
(:func:`synthetic_margins`), so they follow the renderer. A layout is stored in a checkpoint's
``meta["preprocessing"]["layout"]`` and applied to every real image the checkpoint reads
(``evaluate``, ``recognize``, fine-tuning, adaptation).

A layout also records the images' **polarity**: a collection of light ink on dark paper (film
negatives, some microfilm scans) is read with its grey levels inverted (``Layout.invert``), as the
renderer draws dark ink on light paper and a model reads a negative as nothing (GW's test words
inverted: CER 0.06 -> 1.00). One image's polarity is a guess (a tight crop of ``I`` is mostly
ink), a collection's is not: :func:`light_ink_share` counts the images whose median grey level is
nearer their darkest than their lightest (the paper is the median pixel of a word image), and
adaptation inverts a collection when most of its images vote so. Measured: none of GW's 2,375 and
DHSD's 4,745 train images votes so, and every one of them does inverted (but DHSD's 3 blank ones).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

import numpy as np

from .errors import HwlearnError

# hwlearn.data (and torch) are imported where used, so that the CLI can list LAYOUTS cheaply

LAYOUTS = ("as-is", "trim-sides", "trim-all")
ROW_MASS = 0.01  # share of ink pixels allowed above and below the ink box (each side)
MIN_BLOB = 3  # ink blobs (8-connected) smaller than this many pixels do not widen the ink box
INK_THRESHOLD = 0.5
FAINT_INK = 0.3  # ink level that widens the ink box's columns near the word (:func:`_faint_columns`)
FAINT_REACH = 0.25  # how far from the word, in image heights, faint ink still counts
RULE_WIDTH = 0.03  # a form rule is at most this many image heights wide (and at least 2 pixels may be)
RULE_INK = 0.35  # ink level that counts for a rule's rows (scanned rules are often faint)
MIN_POLARITY_CONTRAST = 16  # grey levels between an image's 1st and 99th percentile for it to vote on polarity


def ink_box(img: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` (inclusive rows/columns) of the ink in uint8 ``img``: the
    rows without the outermost 1 % of ink pixels at the top and the bottom, the columns from the
    first to the last holding ink of a blob of at least :data:`MIN_BLOB` pixels (of any ink, when
    there is no such blob), widened by the faint ink near them (:func:`_faint_columns`), less the
    form rules at either end (:func:`edge_rules`); None when there is no ink."""
    from .data import ink_map

    level = ink_map(img)
    ink = level > INK_THRESHOLD
    if not ink.any():
        return None
    _, solid = _blobs(ink)
    for _side, first, last in edge_rules(level, solid):
        ink[:, first : last + 1] = solid[:, first : last + 1] = False
    total = int(ink.sum())
    rows = np.cumsum(ink.sum(axis=1)) / total
    top, bottom = int(np.searchsorted(rows, ROW_MASS)), int(np.searchsorted(rows, 1.0 - ROW_MASS))
    columns = np.flatnonzero((solid if solid.any() else ink).any(axis=0))
    left, right = _faint_columns(level, int(columns[0]), int(columns[-1]))
    return top, min(bottom, img.shape[0] - 1), left, right


def _faint_columns(level: np.ndarray, left: int, right: int) -> tuple[int, int]:
    """``(left, right)`` widened to the faint ink (:data:`FAINT_INK`) of the blobs of at least
    :data:`MIN_BLOB` pixels that reach within :data:`FAINT_REACH` image heights of them, less the
    form rules among that ink.

    A word's ends are often its faintest ink: a comma's or a hyphen's quick stroke, a capital's
    lead-in, a last letter's tail. Above :data:`INK_THRESHOLD` alone the box cut them (GW's
    ``here,`` lost its comma and ``Com-`` its hyphen to ``trim-sides``), while the label keeps
    them. Faint ink far from the word is left out: a form's dotted line at the end of a DHSD box
    is faint too."""
    from scipy.ndimage import find_objects

    blobs, solid = _blobs(level > FAINT_INK)
    for _side, first, last in edge_rules(level, solid):
        solid[:, first : last + 1] = False
    blobs[~solid] = 0
    reach = FAINT_REACH * level.shape[0]
    new_left, new_right = left, right
    for box in find_objects(blobs):
        if box is None:
            continue
        first, last = box[1].start, box[1].stop - 1
        if last >= left - reach and first <= right + reach:
            new_left, new_right = min(new_left, first), max(new_right, last)
    return new_left, new_right


def _blobs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8-connected blobs of the boolean ``mask`` (labels, 0 for none) and which of its pixels
    lie in a blob of at least :data:`MIN_BLOB` pixels (lone noise pixels do not)."""
    from scipy.ndimage import label

    blobs, _ = label(mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(blobs.ravel())
    sizes[0] = 0  # the paper
    return blobs, sizes[blobs] >= MIN_BLOB


def _column_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(first, last)`` of each run of consecutive True entries of the 1-D ``mask``."""
    x = np.flatnonzero(mask)
    if len(x) == 0:
        return []
    breaks = np.flatnonzero(np.diff(x) > 1)
    return list(zip(x[np.r_[0, breaks + 1]].tolist(), x[np.r_[breaks, len(x) - 1]].tolist()))


def edge_rules(ink_level: np.ndarray, solid: np.ndarray) -> list[tuple[str, int, int]]:
    """``(side, first column, last column)`` of the form rules at the ends of a word image.

    ``ink_level`` is :func:`hwlearn.data.ink_map` of the image, ``solid`` the ink pixels that count
    (blobs of at least :data:`MIN_BLOB` pixels). A rule is the outermost run of inked columns on its
    side, at most ``max(2 px, RULE_WIDTH image heights)`` wide, with at least two blank columns
    between it and the rest; its rows with ink above :data:`RULE_INK` span at least half the image
    height and at least every row of the rest's ink, and fill at least half of that span. A
    handwritten ``I`` or ``l`` apart from the next letter is seldom so thin, and in a crop with room
    above and below the word it spans less than half the height; a period or comma is short. In a
    crop cut tight to the ink, a separate ``I`` one or two pixels wide and as tall as the word would
    be taken for a rule. Measured: 92 of DHSD's 4,745 train names (checked against their labels:
    none is a letter), none of GW's 3,655 words, 1 of 10,000 synthetic words."""
    height = ink_level.shape[0]
    runs = _column_runs(solid.any(axis=0))
    found = []
    for side in ("left", "right"):
        if len(runs) < 2:
            break
        (first, last), neighbour = (runs[0], runs[1]) if side == "left" else (runs[-1], runs[-2])
        gap = neighbour[0] - last - 1 if side == "left" else first - neighbour[1] - 1
        rows = np.flatnonzero((ink_level[:, first : last + 1] > RULE_INK).any(axis=1))
        rest = solid.copy()
        for _side, a, b in found + [(side, first, last)]:
            rest[:, a : b + 1] = False
        rest_rows = np.flatnonzero(rest.any(axis=1))
        if len(rows) == 0 or len(rest_rows) == 0:
            continue
        span = rows[-1] - rows[0] + 1
        if (last - first + 1 <= max(2, RULE_WIDTH * height) and gap >= 2 and span >= 0.5 * height
                and rows[0] <= rest_rows[0] and rows[-1] >= rest_rows[-1] and len(rows) >= 0.5 * span):
            found.append((side, int(first), int(last)))
            runs = runs[1:] if side == "left" else runs[:-1]
    return found


def paper_is_dark(img: np.ndarray) -> bool | None:
    """Whether uint8 ``img`` looks like light ink on dark paper: its median grey level (the paper's,
    in a word image) nearer its 1st percentile than its 99th. None for an image with fewer than
    :data:`MIN_POLARITY_CONTRAST` grey levels between those (blank: no vote)."""
    dark, median, light = np.percentile(img, [1, 50, 99])
    if light - dark < MIN_POLARITY_CONTRAST:
        return None
    return bool(median - dark < light - median)


def polarity_votes(images: Iterable[np.ndarray]) -> list[bool]:
    """:func:`paper_is_dark` of each of ``images`` (uint8, as loaded) that votes (not blank)."""
    return [v for v in map(paper_is_dark, images) if v is not None]


def light_ink_share(images: Iterable[np.ndarray]) -> float:
    """The share of ``images`` (uint8, as loaded) that look like light ink on dark paper
    (:func:`paper_is_dark`), among those that vote; 0.0 when none does."""
    votes = polarity_votes(images)
    return sum(votes) / len(votes) if votes else 0.0


@dataclass(frozen=True)
class Layout:
    """One of :data:`LAYOUTS` with its margins (units: image height after trimming), on the image
    with its grey levels inverted first when ``invert`` (light ink on dark paper)."""

    kind: str = "as-is"
    top: float = 0.20
    bottom: float = 0.27
    left: float = 0.09
    right: float = 0.11
    invert: bool = False

    def __post_init__(self) -> None:
        if self.kind not in LAYOUTS:
            raise HwlearnError(f"unknown layout {self.kind!r}; choose one of {', '.join(LAYOUTS)}")
        if min(self.top, self.bottom, self.left, self.right) < 0 or self.top + self.bottom >= 1:
            raise HwlearnError(f"layout margins out of range: {self}")

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """``img`` (uint8 ``(H, W)``) in this layout; an image without ink is returned unchanged (but
        inverted, with ``invert``)."""
        if self.invert:
            img = 255 - img
        if self.kind == "as-is":
            return img
        box = ink_box(img)
        if box is None:
            return img
        from .data import paper_level

        top, bottom, left, right = box
        if self.kind == "trim-sides":
            rows, height, pad_rows = img, img.shape[0], (0, 0)
        else:
            rows = img[top : bottom + 1]
            height = (bottom + 1 - top) / (1.0 - self.top - self.bottom)
            pad_rows = (round(self.top * height), round(self.bottom * height))
        pad_columns = (round(self.left * height), round(self.right * height))
        return np.pad(rows[:, left : right + 1], (pad_rows, pad_columns), constant_values=paper_level(img))

    def to_dict(self) -> dict:
        """The fields, ``invert`` only when set (so a dark-on-light layout is stored as before it existed)."""
        d = asdict(self)
        if not self.invert:
            del d["invert"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "Layout":
        keys = ("kind", "top", "bottom", "left", "right", "invert")
        return cls() if not d else cls(**{k: d[k] for k in keys if k in d})

    def describe(self) -> str:
        """``"trim-sides"``, or ``"trim-sides, inverted"`` with ``invert``."""
        return self.kind + ", inverted" * self.invert

    @classmethod
    def of(cls, meta: Mapping) -> "Layout":
        """The layout a checkpoint's ``meta`` records (``as-is`` when none)."""
        return cls.from_dict(meta.get("preprocessing", {}).get("layout"))


def synthetic_margins(images: Iterable[np.ndarray]) -> dict[str, float]:
    """Median ``top``/``bottom``/``left``/``right`` blank margins of ``images`` (uint8 words, e.g.
    rendered ones), in units of image height, rounded to 0.01. Images without ink are skipped."""
    found: dict[str, list[float]] = {"top": [], "bottom": [], "left": [], "right": []}
    for img in images:
        box = ink_box(img)
        if box is None:
            continue
        h, w = img.shape
        top, bottom, left, right = box
        for key, blank in (("top", top), ("bottom", h - 1 - bottom), ("left", left), ("right", w - 1 - right)):
            found[key].append(blank / h)
    if not found["top"]:
        raise HwlearnError("no ink in any of the images given to measure margins")
    margins = {k: round(float(np.median(v)), 2) for k, v in found.items()}
    margins["top"], margins["bottom"] = min(margins["top"], 0.45), min(margins["bottom"], 0.45)
    return margins


def candidates(kinds: Iterable[str], margins: Mapping[str, float], invert: bool = False) -> list[Layout]:
    """A :class:`Layout` per kind in ``kinds``, all with ``margins`` and ``invert``."""
    return [Layout(kind, **margins, invert=invert) for kind in kinds]
