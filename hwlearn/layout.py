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
period). Margins are in units of the resulting image height; their values
are the medians measured on synthetic words (:func:`synthetic_margins`), so they follow the
renderer. A layout is stored in a checkpoint's ``meta["preprocessing"]["layout"]`` and applied to
every real image the checkpoint reads (``evaluate``, ``recognize``, fine-tuning, adaptation).
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


def ink_box(img: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` (inclusive rows/columns) of the ink in uint8 ``img``: the
    rows without the outermost 1 % of ink pixels at the top and the bottom, the columns from the
    first to the last holding ink of a blob of at least :data:`MIN_BLOB` pixels (of any ink, when
    there is no such blob); None when there is no ink."""
    from scipy.ndimage import label

    from .data import ink_map

    ink = ink_map(img) > INK_THRESHOLD
    total = int(ink.sum())
    if total == 0:
        return None
    rows = np.cumsum(ink.sum(axis=1)) / total
    top, bottom = int(np.searchsorted(rows, ROW_MASS)), int(np.searchsorted(rows, 1.0 - ROW_MASS))
    blobs, _ = label(ink, structure=np.ones((3, 3), bool))
    sizes = np.bincount(blobs.ravel())
    sizes[0] = 0  # the paper
    solid = sizes[blobs] >= MIN_BLOB
    columns = np.flatnonzero((solid if solid.any() else ink).any(axis=0))
    return top, min(bottom, img.shape[0] - 1), int(columns[0]), int(columns[-1])


@dataclass(frozen=True)
class Layout:
    """One of :data:`LAYOUTS` with its margins (units: image height after trimming)."""

    kind: str = "as-is"
    top: float = 0.20
    bottom: float = 0.27
    left: float = 0.09
    right: float = 0.11

    def __post_init__(self) -> None:
        if self.kind not in LAYOUTS:
            raise HwlearnError(f"unknown layout {self.kind!r}; choose one of {', '.join(LAYOUTS)}")
        if min(self.top, self.bottom, self.left, self.right) < 0 or self.top + self.bottom >= 1:
            raise HwlearnError(f"layout margins out of range: {self}")

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """``img`` (uint8 ``(H, W)``) in this layout; an image without ink is returned unchanged."""
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
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "Layout":
        return cls() if not d else cls(**{k: d[k] for k in ("kind", "top", "bottom", "left", "right") if k in d})

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


def candidates(kinds: Iterable[str], margins: Mapping[str, float]) -> list[Layout]:
    """A :class:`Layout` per kind in ``kinds``, all with ``margins``."""
    return [Layout(kind, **margins) for kind in kinds]
