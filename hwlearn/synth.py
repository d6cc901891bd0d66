"""Synthetic labeled word images: a seeded dataset, and a parallel writer to disk.

:class:`SyntheticWords` turns a word sampler and a renderer into a map-style dataset (it has
``__len__`` and ``__getitem__``, which is all a ``torch.utils.data.DataLoader`` asks of one):
item ``i`` of seed ``s`` draws its word and every rendering choice from
``numpy.random.default_rng([s, i])``, so its pixels depend only on ``(s, i)`` — never on the
worker process that rendered it or on the order items are asked for. It does not import torch,
so rendering worker processes start fast.

:func:`write_dataset` renders items ``0 .. n-1`` in worker processes and writes them as a
labeled image folder (``docs/synth.md``)::

    out_dir/images/00000000.png ...   grayscale PNG, dark ink on light paper
    out_dir/labels.tsv                images/00000000.png<TAB>word   (written last, atomically)
    out_dir/meta.json                 seed, count, height, style, fonts, corpus, charset, speed

:func:`build_synthetic` builds the default pipeline (fonts dir + corpus statistics -> sampler
+ renderer -> dataset) in one call.
"""

from __future__ import annotations

import copy
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .charset import DEFAULT_CHARSET, Charset
from .errors import HwlearnError
from .paths import write_text_atomic

#: How many words are drawn for one item before giving up when the renderer can draw none.
MAX_WORD_TRIES = 100

IMAGES_DIR = "images"
LABELS_NAME = "labels.tsv"
META_NAME = "meta.json"


class SyntheticWords:
    """Map-style dataset of ``length`` synthetic word images; item ``i`` is ``(image, word)``.

    ``image`` is ``renderer.render(word, rng)`` (``numpy.uint8 (height, W)``), or
    ``transform(image)`` when a ``transform`` is given (e.g. ``lambda im:
    data.to_model_input(im, 64)``). The word is ``sampler.sample(rng)``, drawn again (from the
    same ``rng``, so still deterministic) while ``renderer.can_render(word)`` is false.

    ``info`` is free-form, JSON-able provenance (fonts dir, corpus, style, charset) that
    :func:`write_dataset` copies into ``meta.json``. The dataset pickles with its sampler and
    renderer, so it works in DataLoader workers and in :func:`write_dataset` processes.
    """

    def __init__(
        self,
        sampler,
        renderer,
        seed: int = 0,
        length: int = 100_000,
        transform: Callable[[np.ndarray], Any] | None = None,
        info: dict | None = None,
    ):
        if length < 0:
            raise HwlearnError(f"dataset length must be >= 0, got {length}")
        if seed < 0:
            raise HwlearnError(f"seed must be >= 0, got {seed}")
        self.sampler = sampler
        self.renderer = renderer
        self.seed = int(seed)
        self.length = int(length)
        self.transform = transform
        self.info = dict(info or {})

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        image, word = self.sample(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, word

    def __repr__(self) -> str:
        return f"SyntheticWords(seed={self.seed}, length={self.length})"

    def sample(self, index: int) -> tuple[np.ndarray, str]:
        """Item ``index`` before any ``transform``: ``(uint8 image (H, W), word)``."""
        index = int(index)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self!r}")
        rng = np.random.default_rng([self.seed, index])
        word = self._word(rng)
        return self.renderer.render(word, rng), word

    def word(self, index: int) -> str:
        """Only the word of item ``index`` (no rendering): the same word ``self[index]`` has."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self!r}")
        return self._word(np.random.default_rng([self.seed, index]))

    def with_transform(self, transform: Callable[[np.ndarray], Any] | None) -> "SyntheticWords":
        """A copy that applies ``transform`` to each image (same seed, same words and pixels)."""
        other = copy.copy(self)
        other.transform = transform
        return other

    def with_fonts(self, names) -> "SyntheticWords":
        """A copy drawing with only the fonts named in ``names`` (names or file stems), same sampler,
        style, height and seed; ``info["fonts_used"]`` lists them."""
        from .render import Renderer

        other = copy.copy(self)
        fonts = self.renderer.fonts.subset(names)
        other.renderer = Renderer(fonts, height=self.renderer.height, style=self.renderer.style)
        other.info = {**self.info, "fonts_used": fonts.names, "num_fonts": len(fonts)}
        return other

    def with_capitals(self, share: float) -> "SyntheticWords":
        """A copy whose sampler writes ``share`` of the words that start in lower case with a capital first
        letter (:meth:`hwlearn.corpus.WordSampler.with_capital_share`); same fonts, style, height and seed."""
        other = copy.copy(self)
        other.sampler = self.sampler.with_capital_share(share)
        other.info = {**self.info, "capital_share": float(share)}
        return other

    def _word(self, rng: np.random.Generator) -> str:
        for _ in range(MAX_WORD_TRIES):
            word = self.sampler.sample(rng)
            if self.renderer.can_render(word):
                return word
        raise HwlearnError(
            f"no word the renderer can draw in {MAX_WORD_TRIES} draws from the sampler; "
            "do the fonts cover the sampler's charset?"
        )


# -- the default pipeline -----------------------------------------------------------------------


def build_synthetic(
    fonts_dir: str | Path | None = None,
    corpus=None,
    height: int = 64,
    style="default",
    charset: Charset | str | None = None,
    seed: int = 0,
    length: int = 100_000,
    transform: Callable[[np.ndarray], Any] | None = None,
    **sampler_options,
) -> SyntheticWords:
    """The default synthetic dataset: fonts from ``fonts_dir``, words from ``corpus``.

    ``fonts_dir`` defaults to the bundled fonts, ``corpus`` (a statistics file path or a
    ``CorpusStats``) to the bundled English statistics. ``style`` is a ``RenderStyle`` or the
    name of a preset. ``charset`` defaults to :func:`default_charset`; words with other
    characters are never sampled. Extra keyword arguments go to ``WordSampler`` (``max_len``,
    ``temperature``, ...). The result's ``info`` records all of this for ``meta.json``.
    """
    from .corpus import CorpusStats, WordSampler, load_default_corpus
    from .fonts import FontLibrary
    from .paths import default_corpus_path, default_fonts_dir
    from .render import Renderer, RenderStyle

    fonts_dir = Path(fonts_dir) if fonts_dir is not None else default_fonts_dir()
    fonts = FontLibrary.scan(fonts_dir)
    if corpus is None:
        stats, corpus_name = load_default_corpus(), str(default_corpus_path())
    elif isinstance(corpus, (str, Path)):
        stats, corpus_name = CorpusStats.load(corpus), str(Path(corpus).resolve())
    else:
        stats, corpus_name = corpus, corpus.name

    if charset is None:
        charset = default_charset(fonts)
    elif isinstance(charset, str):
        charset = Charset.from_string(charset)
    sampler = WordSampler(stats, charset=charset, **sampler_options)
    render_style = RenderStyle.preset(style) if isinstance(style, str) else style
    renderer = Renderer(fonts, height=height, style=render_style)
    info = {
        "height": height,
        "style": style if isinstance(style, str) else "custom",
        "fonts": str(fonts_dir.resolve()),
        "num_fonts": len(fonts),
        "corpus": corpus_name,
        "charset": charset.to_string(),
        "vocabulary": len(sampler.vocabulary),
        "sampler_options": sampler_options,
    }
    return SyntheticWords(sampler, renderer, seed=seed, length=length, transform=transform, info=info)


def default_charset(fonts) -> Charset:
    """The symbols of :data:`~hwlearn.charset.DEFAULT_CHARSET` (what the word sampler keeps of a
    corpus by default) that at least one font of ``fonts`` draws, in ``DEFAULT_CHARSET`` order.

    It does not depend on the corpus, so models pretrained on different corpora share a charset.
    """
    drawn = fonts.charset(min_fonts=1)
    symbols = [c for c in DEFAULT_CHARSET.symbols if c in drawn]
    if not symbols:
        raise HwlearnError("none of the fonts draws a character of the default charset")
    return Charset(symbols)


# -- writing a dataset to disk ------------------------------------------------------------------


@dataclass
class WriteReport:
    """What :func:`write_dataset` wrote and how fast."""

    out_dir: Path
    count: int
    seconds: float
    images_per_second: float
    workers: int
    labels_path: Path
    meta_path: Path


def write_dataset(
    out_dir: str | Path,
    dataset: SyntheticWords,
    n: int | None = None,
    workers: int | None = None,
    chunk: int | None = None,
    overwrite: bool = False,
    compress_level: int = 1,
    progress: bool = True,
) -> WriteReport:
    """Render items ``0 .. n-1`` of ``dataset`` into ``out_dir`` (images, ``labels.tsv``, ``meta.json``).

    ``workers`` processes (default: all cores; 0 or 1 renders in this process) each render
    index ranges of ``chunk`` items and write their PNGs; the files are the same whatever
    ``workers`` and ``chunk`` are. ``labels.tsv`` is written last (temp file + rename), so it
    never lists an image that is not on disk. A non-empty ``out_dir`` is refused unless
    ``overwrite``; then the previous ``labels.tsv``, ``meta.json`` and ``images/*.png`` are
    removed first (other files are left alone).
    """
    out_dir = Path(out_dir)
    n = len(dataset) if n is None else int(n)
    if not 0 <= n <= len(dataset):
        raise HwlearnError(f"cannot write {n} images from a dataset of {len(dataset)}")
    _prepare_out_dir(out_dir, overwrite)
    images_dir = out_dir / IMAGES_DIR
    images_dir.mkdir(parents=True, exist_ok=True)

    workers = available_cores() if workers is None else max(1, int(workers))
    workers = min(workers, max(1, n))
    chunk = chunk or max(1, min(256, n // (workers * 8) or 1))
    digits = max(8, len(str(max(n - 1, 0))))
    ranges = [(start, min(start + chunk, n)) for start in range(0, n, chunk)]

    words: list[str] = [""] * n
    render_args = (dataset.with_transform(None), images_dir, digits, compress_level)
    start_time = time.perf_counter()
    with _progress(progress, n) as advance:
        if workers == 1:
            _init_worker(*render_args)
            for lo, hi in ranges:
                words[lo:hi] = _render_range(lo, hi)
                advance(hi - lo)
        else:
            pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=get_context("spawn"),  # same behaviour on every OS; no fork of a threaded parent
                initializer=_init_worker,
                initargs=render_args,
            )
            try:
                futures = {pool.submit(_render_range, lo, hi): lo for lo, hi in ranges}
                for future in as_completed(futures):
                    done = future.result()
                    lo = futures[future]
                    words[lo : lo + len(done)] = done
                    advance(len(done))
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    seconds = time.perf_counter() - start_time

    labels_path = out_dir / LABELS_NAME
    write_text_atomic(labels_path, "".join(f"{IMAGES_DIR}/{_name(i, digits)}\t{w}\n" for i, w in enumerate(words)))
    rate = n / seconds if seconds > 0 else float("inf")
    meta = _meta(dataset, n, seconds, rate, workers)
    meta_path = out_dir / META_NAME
    write_text_atomic(meta_path, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return WriteReport(out_dir, n, seconds, rate, workers, labels_path, meta_path)


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def read_meta(out_dir: str | Path) -> dict:
    """The ``meta.json`` of a dataset written by :func:`write_dataset`."""
    path = Path(out_dir) / META_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HwlearnError(f"{path}: not found (not a dataset written by hwlearn synth?)") from None
    except ValueError as exc:
        raise HwlearnError(f"{path}: not valid JSON ({exc})") from None


# The state of one rendering worker: set once by ``_init_worker`` (the dataset is pickled to
# each worker once, not once per chunk).
_WORKER: dict[str, Any] = {}


def _init_worker(dataset: SyntheticWords, images_dir: Path, digits: int, compress_level: int) -> None:
    _WORKER.update(dataset=dataset, images_dir=images_dir, digits=digits, compress_level=compress_level)


def _render_range(lo: int, hi: int) -> list[str]:
    """Render and save items ``lo .. hi-1`` of the worker's dataset; returns their words."""
    from PIL import Image

    dataset, images_dir = _WORKER["dataset"], _WORKER["images_dir"]
    words = []
    for i in range(lo, hi):
        image, word = dataset.sample(i)
        if "\t" in word or "\n" in word:
            raise HwlearnError(f"sampled word {word!r} has a tab or newline; it cannot be a TSV label")
        path = images_dir / _name(i, _WORKER["digits"])
        Image.fromarray(image, mode="L").save(path, format="PNG", compress_level=_WORKER["compress_level"])
        words.append(word)
    return words


def _name(index: int, digits: int) -> str:
    return f"{index:0{digits}d}.png"


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise HwlearnError(f"{out_dir}: exists and is not a directory")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise HwlearnError(f"{out_dir}: directory is not empty (use overwrite / --overwrite to replace a dataset)")
    (out_dir / LABELS_NAME).unlink(missing_ok=True)  # first, so no labels list vanished images
    (out_dir / META_NAME).unlink(missing_ok=True)
    images_dir = out_dir / IMAGES_DIR
    if images_dir.is_dir():
        for png in images_dir.glob("*.png"):
            png.unlink()


def _meta(dataset: SyntheticWords, n: int, seconds: float, rate: float, workers: int) -> dict:
    from . import __version__

    renderer_height = getattr(dataset.renderer, "height", None)
    meta = {
        "format": "hwlearn-synth/1",
        "seed": dataset.seed,
        "count": n,
        "height": renderer_height,
        "images": IMAGES_DIR,
        "labels": LABELS_NAME,
    }
    meta.update(dataset.info)
    meta.update(
        hwlearn_version=__version__,
        workers=workers,
        seconds=round(seconds, 3),
        images_per_second=round(rate, 1),
    )
    return meta


@contextmanager
def _progress(show: bool, total: int) -> Iterator[Callable[[int], None]]:
    """``with _progress(show, total) as advance: advance(k)``: a rich bar with images/s, or nothing."""
    if not show:
        yield lambda k: None
        return
    from rich.progress import TextColumn

    from .console import progress_bar

    with progress_bar(TextColumn("{task.fields[rate]}")) as bar:
        task = bar.add_task("rendering", total=total, rate="")
        t0 = time.perf_counter()
        done = 0

        def advance(k: int) -> None:
            nonlocal done
            done += k
            elapsed = time.perf_counter() - t0
            bar.update(task, advance=k, rate=f"{done / elapsed:,.0f} img/s" if elapsed > 0 else "")

        yield advance
