"""Real word images in, model inputs out: loading, label files, folders, datasets and batching.

Reading order of this module:

1. :func:`load_image` reads any common image file into the in-memory convention of hwlearn, a
   ``numpy.uint8`` array ``(H, W)``, grayscale, dark ink on light paper.
2. :func:`to_model_input` turns such an array into what the model sees: a float tensor
   ``(1, height, W')`` with ink = 1 and paper = 0, after a robust contrast stretch. Synthetic and
   real images go through this same function, so they look alike to the model.
3. :func:`read_labels` parses label files (``path<TAB>text``, ``path,text`` CSV, IAM
   ``words.txt``); :func:`scan_images` lists the readable images of a folder.
4. :class:`LabeledImages` / :class:`UnlabeledImages` are torch datasets over those, :func:`collate`
   pads a batch, :class:`WidthBucketSampler` groups images of similar width into batches.
5. :func:`augment_real` is a light, seeded augmentation of real images (for fine-tuning and for the
   copies self-training reads each image in); :func:`augment_real_strong` a stronger one, for
   training on pseudo-labels.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage
from torch.utils.data import Dataset, Sampler

from .charset import normalize
from .errors import HwlearnError

#: File name extensions (lower case) treated as images by :func:`scan_images`.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")

# --------------------------------------------------------------------------------------------
# 1. reading an image file


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``numpy.uint8`` ``(H, W)``, grayscale, dark ink on light paper.

    Any Pillow mode is accepted: transparent images (RGBA, LA, PA, palette with transparency) are
    composited on white, 16/32-bit integer and float images (``I;16``, ``I``, ``F``) are scaled to
    8 bit by their value range, CMYK / RGB / 1-bit / palette images are converted to luma. The EXIF
    orientation of photos is applied. Only the first frame of a multi-page file is read. The
    polarity is kept as is: light ink on a dark background must be inverted by the caller
    (``hwlearn adapt`` decides it for a collection: :func:`hwlearn.layout.light_ink_share`).

    Raises :class:`HwlearnError` ``"<path>: cannot read image (<reason>)"`` for a missing, empty,
    corrupt or truncated file.
    """
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size == 0:
            raise _Unreadable("empty file")
        with Image.open(path) as im:
            im.load()
            im = _apply_exif_orientation(im)
            gray = _to_gray(im)
    except _Unreadable as exc:
        raise HwlearnError(f"{path}: cannot read image ({exc})") from None
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, struct.error, ...)
        raise HwlearnError(f"{path}: cannot read image ({_reason(exc)})") from None
    if gray.size == 0:
        raise HwlearnError(f"{path}: cannot read image (empty image)")
    return gray


class _Unreadable(Exception):
    """Internal: a file that is not a usable image, with the reason as message."""


def _reason(exc: BaseException) -> str:
    """A short one-line reason for a failed image read."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognized image format"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def _apply_exif_orientation(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im) or im
    except Exception:  # a broken EXIF block must not make a readable image unreadable
        return im


def _to_gray(im: Image.Image) -> np.ndarray:
    """Pillow image of any mode -> uint8 luma, transparent areas as white paper."""
    mode = im.mode
    if mode in ("1", "L"):
        return np.asarray(im.convert("L"), dtype=np.uint8)
    if mode == "P":
        # A palette may carry transparency; going through RGBA handles both cases.
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in ("I", "F") or mode.startswith("I;"):
        return _scale_to_uint8(np.asarray(im))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(paper, rgba).convert("L"), dtype=np.uint8)
    try:
        return np.asarray(im.convert("L"), dtype=np.uint8)
    except ValueError:
        try:
            return np.asarray(im.convert("RGB").convert("L"), dtype=np.uint8)
        except ValueError:
            raise _Unreadable(f"unsupported image mode {mode}") from None


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """High-bit-depth or float pixels -> uint8 by their finite value range (NaN -> paper)."""
    a = values.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.full(a.shape, 255, np.uint8)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    if hi <= lo:
        return np.full(a.shape, 255, np.uint8)
    out = np.where(finite, (a - lo) * (255.0 / (hi - lo)), 255.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# 2. preprocessing for the model

#: Percentile of the darkest pixels taken as the ink level, and of the pixels taken as paper.
INK_PERCENTILE = 1.0
PAPER_PERCENTILE = 90.0
#: The stretch never maps a grey-level difference smaller than this to the full ink range, so a
#: blank or nearly uniform image does not turn its noise into ink.
MIN_CONTRAST = 40


def to_model_input(img: np.ndarray, height: int) -> torch.Tensor:
    """A uint8 word image -> float32 tensor ``(1, height, W')``, ink = 1, paper = 0.

    The image is resized to ``height`` rows keeping its aspect ratio (bilinear, antialiased) and
    contrast-stretched: the 90th percentile grey level (paper) maps to 0, the 1st percentile (ink)
    to 1, everything beyond is clipped. A faint pencil scan and black synthetic ink thus both end
    with ink near 1. Images narrower than ``height // 2`` columns are right-padded with paper.
    """
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 2 or img.size == 0:
        raise ValueError(f"expected a non-empty uint8 (H, W) image, got {_describe(img)}")
    if height < 1:
        raise ValueError(f"height must be positive, got {height}")
    img = scaled_to_height(img, height)
    new_w = img.shape[1]
    x = ink_map(img)
    min_width = max(1, height // 2)
    if new_w < min_width:
        x = np.pad(x, ((0, 0), (0, min_width - new_w)))
    return torch.from_numpy(np.ascontiguousarray(x))[None]


def scaled_to_height(img: np.ndarray, rows: int) -> np.ndarray:
    """uint8 ``img`` resized to ``rows`` rows, its aspect ratio kept (bilinear, antialiased); as it is when it has them."""
    h, w = img.shape
    size = (max(1, round(w * rows / h)), rows)
    if (w, h) == size:
        return img
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0), dtype=np.uint8)


def _describe(img: object) -> str:
    if isinstance(img, np.ndarray):
        return f"array {img.dtype} of shape {img.shape}"
    return type(img).__name__


def ink_map(img: np.ndarray) -> np.ndarray:
    """uint8 ``img`` contrast-stretched as the model sees it: float32, paper 0, ink 1, same shape."""
    return _contrast_lut(img)[img]


def _contrast_lut(img: np.ndarray) -> np.ndarray:
    """The 256-entry float32 table mapping grey levels of ``img`` to ink intensity in [0, 1]."""
    cdf = np.cumsum(np.bincount(img.ravel(), minlength=256))
    n = cdf[-1]
    ink = int(np.searchsorted(cdf, INK_PERCENTILE / 100.0 * n))
    paper = int(np.searchsorted(cdf, PAPER_PERCENTILE / 100.0 * n))
    ink = min(ink, paper - MIN_CONTRAST)
    levels = np.arange(256, dtype=np.float32)
    return np.clip((paper - levels) / float(paper - ink), 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# 3. label files and image folders

_HEADER_NAMES = {"path", "image", "img", "file", "filename", "file_name", "image_path", "fname", "name"}
_IAM_LINE = re.compile(r"^\S+ (ok|err) -?\d+ -?\d+ -?\d+ -?\d+ -?\d+ \S+ \S")
LABEL_FORMATS = ("tsv", "csv", "iam")


def read_labels(path: str | Path, *, format: str | None = None, ok_only: bool = False) -> list[tuple[Path, str]]:
    """Read a label file into ``[(image path, text), ...]`` (texts NFC-normalized).

    Formats (auto-detected from the file name, then the content, unless ``format`` is given):

    - ``tsv``: ``path<TAB>text`` per line;
    - ``csv``: ``path,text`` per row, csv-module quoting (``"Smith, J.",``...);
    - ``iam``: IAM ``words.txt`` (``a01-000u-00-00 ok 154 408 768 27 51 AT A``), ``#`` comments;
      the image is ``words/a01/a01-000u/a01-000u-00-00.png`` next to the file (or next to its
      parent folder, the layout of the IAM download). ``ok_only`` drops ``err`` segmentations.

    TSV and CSV may start with a header row (``path``/``image``/``file``... in the first column).
    Relative image paths are resolved against the label file's directory; surrounding whitespace
    of paths and texts is removed; blank lines are skipped. Any other malformed line raises
    :class:`HwlearnError` naming the file and the line number. The images are not opened.
    """
    path = Path(path)
    lines = _read_lines(path)
    fmt = format or _detect_format(path, lines)
    if fmt == "iam":
        items = _parse_iam(path, lines, ok_only)
    elif fmt == "tsv":
        items = _parse_tsv(path, lines)
    elif fmt == "csv":
        items = _parse_csv(path, "\n".join(lines))
    else:
        raise HwlearnError(f"unknown label format {fmt!r} (choose from {', '.join(LABEL_FORMATS)})")
    if not items:
        raise HwlearnError(f"{path}: no labeled images in the file")
    return items


def _read_lines(path: Path) -> list[str]:
    from .corpus import read_text_file

    return [line.rstrip("\r") for line in read_text_file(path).split("\n")]


def _detect_format(path: Path, lines: list[str]) -> str:
    if path.name.lower() == "words.txt":
        return "iam"
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".tsv":
        return "tsv"
    first = next((ln for ln in lines if ln.strip() and not ln.startswith("#")), "")
    if _IAM_LINE.match(first):
        return "iam"
    if "\t" in first:
        return "tsv"
    if "," in first:
        return "csv"
    raise HwlearnError(
        f"{path}: cannot tell the label format (expected path<TAB>text, path,text or IAM words.txt lines)"
    )


def _labeled(path: Path, lineno: int, image: str, text: str) -> tuple[Path, str]:
    """One checked ``(resolved image path, NFC text)`` pair from the columns of line ``lineno``."""
    image, text = image.strip(), text.strip()
    if not image:
        raise HwlearnError(f"{path}: line {lineno}: empty image path")
    if not text:
        raise HwlearnError(f"{path}: line {lineno}: empty text for {image}")
    return path.parent / image, normalize(text)


def _is_header(first_column: str) -> bool:
    return first_column.strip().lower() in _HEADER_NAMES


def _parse_tsv(path: Path, lines: list[str]) -> list[tuple[Path, str]]:
    items: list[tuple[Path, str]] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) != 2:
            raise HwlearnError(
                f"{path}: line {lineno}: expected 2 tab-separated columns (path, text), found {len(columns)}"
            )
        if not items and _is_header(columns[0]):
            continue
        items.append(_labeled(path, lineno, *columns))
    return items


def _parse_csv(path: Path, text: str) -> list[tuple[Path, str]]:
    items: list[tuple[Path, str]] = []
    reader = csv.reader(io.StringIO(text))
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != 2:
                raise HwlearnError(
                    f"{path}: line {reader.line_num}: expected 2 comma-separated columns (path, text), found {len(row)}"
                )
            if not items and _is_header(row[0]):
                continue
            items.append(_labeled(path, reader.line_num, *row))
    except csv.Error as exc:
        raise HwlearnError(f"{path}: line {reader.line_num}: bad CSV ({exc})") from None
    return items


def _parse_iam(path: Path, lines: list[str], ok_only: bool) -> list[tuple[Path, str]]:
    base = path.parent
    if not (base / "words").is_dir() and (base.parent / "words").is_dir():
        base = base.parent  # the IAM download: ascii/words.txt next to words/
    items: list[tuple[Path, str]] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        parts = fields[0].split("-")
        if len(fields) < 9 or fields[1] not in ("ok", "err") or len(parts) < 3:
            raise HwlearnError(
                f"{path}: line {lineno}: not an IAM words.txt line "
                "(expected 'id ok|err graylevel x y w h tag transcription')"
            )
        if ok_only and fields[1] != "ok":
            continue
        word_id = fields[0]
        image = Path("words") / parts[0] / f"{parts[0]}-{parts[1]}" / f"{word_id}.png"
        items.append((base / image, normalize(" ".join(fields[8:]))))
    return items


@dataclass
class ImageScan:
    """Result of :func:`scan_images`: the readable images (sorted) and ``(path, reason)`` of the others."""

    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def scan_images(directory: str | Path, require_readable: bool = True) -> ImageScan:
    """All image files under ``directory`` (recursive; extensions in :data:`IMAGE_EXTENSIONS`, any
    case), sorted by path. Each file is decoded once; unreadable ones (empty, corrupt, truncated)
    are listed in ``skipped`` with the reason (:func:`image_problem`) instead of failing the scan.

    Raises :class:`HwlearnError` when the directory is missing, holds no image files, or (with
    ``require_readable``, the default) none of them can be read.
    """
    directory = Path(directory)
    if not directory.exists():
        raise HwlearnError(f"{directory}: no such directory")
    if not directory.is_dir():
        raise HwlearnError(f"{directory}: not a directory")
    candidates = sorted(
        p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )
    if not candidates:
        raise HwlearnError(f"{directory}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    scan = ImageScan(paths=[])
    for p in candidates:
        problem = image_problem(p)
        if problem is None:
            scan.paths.append(p)
        else:
            scan.skipped.append((p, problem))
    if require_readable and not scan.paths:
        raise none_readable(scan.skipped, directory)
    return scan


def none_readable(skipped: Sequence[tuple[Path, str]], where: str | Path | None = None) -> HwlearnError:
    """The error for image files none of which can be read, from their ``(path, reason)``: one named file's
    ``"<path>: cannot read image (<reason>)"``, else ``"[<where>: ]none of the N image files can be read (e.g.
    <path>: <reason>)"``."""
    first, reason = skipped[0]
    if where is None and len(skipped) == 1:
        return HwlearnError(f"{first}: cannot read image ({reason})")
    prefix = f"{where}: " if where is not None else ""
    return HwlearnError(f"{prefix}none of the {len(skipped)} image files can be read (e.g. {first}: {reason})")


def load_labeled(items: Sequence[tuple[Path, str]], labels: str | Path) -> list[np.ndarray]:
    """The images of :func:`read_labels`' ``items``, read once. Raises :func:`unreadable_labeled`'s error,
    counting every image that cannot be read, if any cannot."""
    images, problems = [], []
    for path, _ in items:
        try:
            img = load_image(path)
        except HwlearnError as exc:
            problems.append((path, image_problem(path) or str(exc)))
            continue
        images.append(img)
    if problems:
        raise unreadable_labeled(labels, problems, len(items))
    return images


def check_labeled(items: Sequence[tuple[Path, str]], labels: str | Path) -> None:
    """Decode every image of :func:`read_labels`' ``items`` (~1 ms each) and raise
    :func:`unreadable_labeled`'s error if any cannot be read: before training on them, not at the step
    that first draws a bad one."""
    problems = [(path, reason) for path, _ in items if (reason := image_problem(path)) is not None]
    if problems:
        raise unreadable_labeled(labels, problems, len(items))


def unreadable_labeled(labels: str | Path, problems: Sequence[tuple[Path, str]], total: int) -> HwlearnError:
    """The error for a label file some of whose images cannot be read, from their ``(path, reason)``:
    ``"<labels>: N of M labeled images cannot be read: <path> (<reason>), ... (fix them or remove their
    lines)"``, naming the first three. A CER over the readable ones alone would silently measure
    another set, so labeled sets are never skipped over as unlabeled folders are."""
    shown = ", ".join(f"{path} ({reason})" for path, reason in problems[:3])
    more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
    return HwlearnError(f"{labels}: {len(problems)} of {total} labeled images cannot be read: {shown}{more} "
                        "(fix them or remove their lines)")


def image_problem(path: str | Path) -> str | None:
    """None if ``path`` decodes as a non-empty image, else the reason it does not (``"empty file"``,
    ``"not a recognized image format"``, ...; without the path)."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as im:
            if 0 in im.size:
                return "empty image"
            im.load()
    except Exception as exc:
        return _reason(exc)
    return None


# --------------------------------------------------------------------------------------------
# 4. datasets and batching


class ImageTransform(Protocol):
    """An augmentation hook: ``transform(img uint8 (H, W), rng) -> uint8 (H', W')``, dark ink on
    light paper in and out, every random choice drawn from ``rng`` (see :func:`augment_real`)."""

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


ImageSource = str | Path | np.ndarray


class _ImageDataset(Dataset):
    """Shared part of the datasets: image sources (paths or uint8 arrays), height, augmentation.

    ``sample(i, salt)`` augments with ``numpy.random.default_rng([seed, i, salt])``, so a sample
    depends only on ``(seed, i, salt)``; ``dataset[i]`` uses ``salt = epoch`` (see ``set_epoch``).
    ``width_key(i)`` is the model-input width computed from the image header, for width bucketing.
    """

    def __init__(self, sources: Sequence[ImageSource], height: int, augment: ImageTransform | None, seed: int,
                 prepare: Callable[[np.ndarray], np.ndarray] | None = None):
        self.sources = [s if isinstance(s, np.ndarray) else Path(s) for s in sources]
        self.height = int(height)
        self.augment = augment
        self.prepare = prepare
        self.seed = int(seed)
        self.epoch = 0
        self._widths: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.sources)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation drawn by ``dataset[i]`` (a DataLoader with persistent workers
        keeps its own copy: call it before the loader starts an epoch's workers)."""
        self.epoch = int(epoch)

    def image(self, i: int) -> np.ndarray:
        """Item ``i`` as a uint8 image (after ``prepare``, e.g. a :class:`hwlearn.layout.Layout`), before
        augmentation."""
        source = self.sources[i]
        img = source if isinstance(source, np.ndarray) else load_image(source)
        return img if self.prepare is None else self.prepare(img)

    def tensor(self, i: int, salt: int) -> torch.Tensor:
        img = self.image(i)
        if self.augment is not None:
            img = self.augment(for_augmenting(img, self.height), np.random.default_rng([self.seed, i, salt]))
        return to_model_input(img, self.height)

    def width_key(self, i: int) -> int:
        """Approximate model-input width of item ``i`` (reads only the image header; cached)."""
        if i not in self._widths:
            source = self.sources[i]
            if isinstance(source, np.ndarray):
                h, w = source.shape
            else:
                try:
                    with Image.open(source) as im:
                        w, h = im.size
                except Exception as exc:
                    raise HwlearnError(f"{source}: cannot read image ({_reason(exc)})") from None
            self._widths[i] = max(1, round(w * self.height / max(h, 1)), self.height // 2)
        return self._widths[i]

    def widths(self) -> list[int]:
        """:meth:`width_key` of every item (for :class:`WidthBucketSampler`)."""
        return [self.width_key(i) for i in range(len(self))]

    def __getitem__(self, i: int):
        return self.sample(i, self.epoch)


class LabeledImages(_ImageDataset):
    """``[(image path or uint8 array, text), ...]`` -> items ``(tensor (1, height, W), text)``."""

    def __init__(self, items: Sequence[tuple[ImageSource, str]], height: int,
                 augment: ImageTransform | None = None, *, seed: int = 0,
                 prepare: Callable[[np.ndarray], np.ndarray] | None = None):
        super().__init__([source for source, _ in items], height, augment, seed, prepare)
        self.texts = [normalize(text) for _, text in items]

    def sample(self, i: int, salt: int = 0) -> tuple[torch.Tensor, str]:
        return self.tensor(i, salt), self.texts[i]


class UnlabeledImages(_ImageDataset):
    """``[image path or uint8 array, ...]`` -> items ``(tensor (1, height, W), index)``."""

    def __init__(self, paths: Sequence[ImageSource], height: int,
                 augment: ImageTransform | None = None, *, seed: int = 0):
        super().__init__(paths, height, augment, seed)

    def sample(self, i: int, salt: int = 0) -> tuple[torch.Tensor, int]:
        return self.tensor(i, salt), i


def collate(batch: Sequence[tuple[torch.Tensor, object]]) -> tuple[torch.Tensor, torch.Tensor, list]:
    """``[(tensor (1, H, W_i), x_i), ...]`` -> ``(images (B, 1, H, max W_i), widths long (B,), [x_i])``;
    images are right-padded with 0 (paper)."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    tensors = [t for t, _ in batch]
    heights = {t.shape[-2] for t in tensors}
    if len(heights) != 1:
        raise ValueError(f"all images of a batch need the same height, got {sorted(heights)}")
    widths = torch.tensor([t.shape[-1] for t in tensors], dtype=torch.long)
    images = torch.zeros(len(tensors), 1, heights.pop(), int(widths.max()), dtype=tensors[0].dtype)
    for b, t in enumerate(tensors):
        images[b, :, :, : t.shape[-1]] = t
    return images, widths, [x for _, x in batch]


class WidthBucketSampler(Sampler[list[int]]):
    """A batch sampler putting images of similar width together (less padding, faster batches).

    Each epoch the indices are sorted by width (ties in random order), shuffled within buckets of
    ``bucket_batches`` consecutive batches, cut into batches, and the batches are shuffled. With
    ``shuffle=False`` the batches are in increasing width order. Every index appears exactly once
    per epoch (the last, smaller batch is dropped with ``drop_last``). The order depends only on
    ``(seed, epoch)``; call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, widths: Sequence[float], batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, *, bucket_batches: int = 8):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if bucket_batches < 1:
            raise ValueError(f"bucket_batches must be positive, got {bucket_batches}")
        self.widths = np.asarray(widths, dtype=np.float64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.bucket_batches = int(bucket_batches)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n, bs = len(self.widths), self.batch_size
        return n // bs if self.drop_last else math.ceil(n / bs)

    def __iter__(self) -> Iterator[list[int]]:
        n, bs = len(self.widths), self.batch_size
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            order = rng.permutation(n)
            order = order[np.argsort(self.widths[order], kind="stable")]
            bucket = bs * self.bucket_batches
            for start in range(0, n, bucket):
                rng.shuffle(order[start : start + bucket])  # in place: a slice is a view
        else:
            order = np.argsort(self.widths, kind="stable")
        batches = [order[i : i + bs].tolist() for i in range(0, n, bs)]
        if self.drop_last and batches and len(batches[-1]) < bs:
            batches.pop()
        if self.shuffle:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        return iter(batches)


# --------------------------------------------------------------------------------------------
# 5. augmentation of real images


#: Real word images are augmented at no more than this many times the model's input height (:func:`for_augmenting`).
AUGMENT_HEIGHT_FACTOR = 2


def for_augmenting(img: np.ndarray, height: int) -> np.ndarray:
    """uint8 ``img`` scaled down (:func:`scaled_to_height`) to :data:`AUGMENT_HEIGHT_FACTOR` times ``height`` rows
    when it has more, else as it is: the augmentations' cost grows with the pixels, and the model reads ``height``
    rows (GW's ~93-row scans at 32: augmenting at 64 takes half the time)."""
    limit = AUGMENT_HEIGHT_FACTOR * height
    return img if img.shape[0] <= limit else scaled_to_height(img, limit)


def augment_real(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A mild random variant of a real word image (for training on pseudo-labeled scans).

    Small affine change (rotation +-3 degrees, shear +-0.25, horizontal scale 0.85-1.15, on a canvas
    grown to keep all ink), sometimes thicker or thinner ink (2x2 grey erosion / dilation), contrast
    and brightness jitter, sometimes a slight blur and sensor noise. uint8 ``(H, W)`` in and out;
    the result depends only on ``img`` and the state of ``rng``. Implements :class:`ImageTransform`.
    """
    paper = paper_level(img)
    out = _random_affine(img, rng, paper, rotation=3.0, shear=0.25, scale=(0.85, 1.15))
    return _ink_and_scan(out, rng, paper, stroke=0.2, contrast=(0.6, 1.2), brightness=(-25.0, 15.0), effects=0.3,
                         blur=(0.3, 1.0), noise=(2.0, 8.0))


def augment_real_strong(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A stronger random variant of a real word image, for training on pseudo-labels: the model
    must read its own confident labels through heavier changes than it labeled them under
    ("noisy student"), which keeps it from merely confirming them.

    A smooth elastic warp of the strokes (displacement up to 4 % of the height, on a grid of
    0.4-0.8 heights), then as :func:`augment_real` with wider ranges: rotation +-4 degrees, shear
    +-0.35, horizontal scale 0.8-1.2, erosion / dilation a quarter of the time each, contrast
    0.5-1.2, brightness -30..+20, blur and noise 40 % of the time. Measured on GW (benchmarks/EXPERIMENTS.md).
    uint8 ``(H, W)`` in and out; the result depends only on ``img`` and the state of ``rng``.
    """
    h, w = img.shape
    paper = paper_level(img)
    out = img.astype(np.float32)
    amplitude = rng.uniform(0.0, 0.04) * h
    if amplitude > 0.3:
        cell = max(4.0, rng.uniform(0.4, 0.8) * h)
        gh, gw = int(h / cell) + 2, int(w / cell) + 2

        def field() -> np.ndarray:
            coarse = rng.standard_normal((gh, gw)).astype(np.float32) * amplitude
            return np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR))

        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        out = ndimage.map_coordinates(out, (yy - field(), xx - field()), order=1, cval=float(paper), prefilter=False)
    warped = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    out = _random_affine(warped, rng, paper, rotation=4.0, shear=0.35, scale=(0.8, 1.2))
    return _ink_and_scan(out, rng, paper, stroke=0.25, contrast=(0.5, 1.2), brightness=(-30.0, 20.0), effects=0.4,
                         blur=(0.3, 1.2), noise=(2.0, 10.0))


def _ink_and_scan(img: np.ndarray, rng: np.random.Generator, paper: int, *, stroke: float,
                  contrast: tuple[float, float], brightness: tuple[float, float], effects: float,
                  blur: tuple[float, float], noise: tuple[float, float]) -> np.ndarray:
    """The photometric half of the augmentations: thicker or thinner ink (2x2 grey erosion /
    dilation, each with probability ``stroke``), contrast (a factor in ``contrast``) and brightness
    (an offset in ``brightness``) jitter around the paper level, then with probability ``effects``
    each a gaussian blur (sigma in ``blur``) and sensor noise (sigma in ``noise``). uint8 in and out."""
    out = img.astype(np.float32)
    r = rng.random()
    if r < stroke:
        out = ndimage.grey_erosion(out, size=(2, 2))  # dark ink grows
    elif r < 2 * stroke:
        out = ndimage.grey_dilation(out, size=(2, 2))  # dark ink shrinks
    factor, offset = rng.uniform(*contrast), rng.uniform(*brightness)
    out = (out - paper) * factor + paper + offset
    if rng.random() < effects:
        out = ndimage.gaussian_filter(out, sigma=rng.uniform(*blur))
    if rng.random() < effects:
        out = out + rng.normal(0.0, rng.uniform(*noise), size=out.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def paper_level(img: np.ndarray) -> int:
    """Grey level of the paper of uint8 ``img`` (its 90th percentile)."""
    cdf = np.cumsum(np.bincount(img.ravel(), minlength=256))
    return int(np.searchsorted(cdf, PAPER_PERCENTILE / 100.0 * cdf[-1]))


def _random_affine(img: np.ndarray, rng: np.random.Generator, paper: int, *, rotation: float, shear: float,
                   scale: tuple[float, float]) -> np.ndarray:
    """Rotate (up to +-``rotation`` degrees), shear (up to +-``shear``) and scale horizontally (by a
    factor in ``scale``) ``img`` about its corner; the output canvas holds the whole result."""
    h, w = img.shape
    angle = math.radians(rng.uniform(-rotation, rotation))
    shear, scale_x = rng.uniform(-shear, shear), rng.uniform(*scale)
    cos, sin = math.cos(angle), math.sin(angle)
    forward = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([scale_x, 1.0])
    corners = forward @ np.array([[0, w, 0, w], [0, 0, h, h]], dtype=np.float64)
    low = corners.min(axis=1)
    out_w, out_h = (max(1, math.ceil(v)) for v in corners.max(axis=1) - low)
    inverse = np.linalg.inv(forward)
    offset = inverse @ low  # output pixel p comes from input inverse @ (p + low)
    coeffs = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    warped = Image.fromarray(img).transform(
        (out_w, out_h), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR, fillcolor=paper
    )
    return np.asarray(warped, dtype=np.uint8)
