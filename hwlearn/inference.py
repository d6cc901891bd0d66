"""Batched recognition: run a model over many images and decode them.

Images are sorted by width before batching (less padding, faster) and the predictions are returned
in the input order. Reading the same images with several decodings runs the model once
(:func:`predictions_by_method`). Used by validation, ``evaluate``, ``recognize`` and self-training.

The beam searches (beam, lexicon, character model) are Python loops that cost several times the
model's run; over many images they run in worker processes, one per core, while the model reads
the next batches (:func:`search_workers`). The same workers make the augmented copies of the
images (:class:`AugmentedCopy`) a few batches ahead of the model and, on the CPU, read them with a
snapshot of the model (:meth:`SearchPool.share_model`). The results are the same as in one process.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
import tempfile
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from .charset import Charset
from .data import augment_real, collate, for_augmenting, to_model_input
from .decode import LM_WEIGHT, Prediction, consensus, distinct_readings, scored, search, sequence_confidence
from .synth import available_cores

#: Fewest searches (items x views x methods other than greedy) worth starting worker processes for:
#: below it they take about as long as starting the workers and warming their copies of the character model.
PARALLEL_MIN_SEARCHES = 256


def materialize(dataset) -> list:
    """All items of a (small) dataset as a list, so they are read or rendered only once."""
    return [dataset[i] for i in range(len(dataset))]


class AugmentedCopy(Sequence):
    """An augmented copy (:func:`hwlearn.data.augment_real`) of every uint8 image, as model inputs
    ``(tensor (1, height, W), None)`` at ``height``, made when an item is read: the readings take them
    a batch at a time, so the copies of a large folder are never all in memory (as float32 inputs,
    100,000 DHSD-sized names in 4 copies would take ~8 GB). Item ``i`` is drawn with
    ``numpy.random.default_rng(seeds(i, images[i]))``: the same every time it is read, and the same
    whether this process makes it or a search worker does (:meth:`SearchPool.read`)."""

    def __init__(self, images, height: int, seeds: Callable[[int, np.ndarray], list[int]]):
        self.images, self.height, self.seeds = images, height, seeds

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.items([i])[0]

    def items(self, indices: Sequence[int]) -> list:
        """Items ``indices``, as ``[self[i] for i in indices]``."""
        return _as_inputs(_augmented_inputs(*self.job(indices)))

    def job(self, indices: Sequence[int]) -> tuple:
        """The arguments of :func:`_augmented_inputs` that make items ``indices`` (what a worker is sent)."""
        images = [self.images[i] for i in indices]
        return images, [self.seeds(i, img) for i, img in zip(indices, images)], self.height


def _augmented_inputs(images: list[np.ndarray], seeds: list[list[int]], height: int) -> list[np.ndarray]:
    """Model inputs of augmented copies of ``images``, as arrays (they travel between processes
    as numpy arrays, not as tensors)."""
    return [to_model_input(augment_real(for_augmenting(img, height), np.random.default_rng(s)), height).numpy()
            for img, s in zip(images, seeds)]


def _as_inputs(arrays: list[np.ndarray]) -> list:
    return [(torch.from_numpy(a), None) for a in arrays]


def augmented_copies(images, count: int, height: int, seed: int = 0) -> list[AugmentedCopy]:
    """``count`` augmented copies of every uint8 image (one :class:`AugmentedCopy` each), for
    :func:`predict_views`. Copy ``v`` of an image depends only on its pixels, ``v`` and ``seed``, so
    an image reads the same alone or among others."""
    return [AugmentedCopy(images, height, partial(_seeds_by_pixels, seed, v)) for v in range(count)]


def _seeds_by_pixels(seed: int, view: int, _index: int, img: np.ndarray) -> list[int]:
    return [seed, view, zlib.crc32(img.tobytes()), *img.shape]


def model_outputs(model, views, device, batch_size, pool: SearchPool | None = None):
    """Per batch of items: their indices and, for each of ``views`` (datasets of the same items, e.g.
    the images and augmented copies of them), ``(log_probs (T, B, C) on the CPU, lengths)``. Batched
    by the width of ``views[0]`` (read once, whole), in eval mode (restored afterwards); the other
    views are read a batch at a time, when the model gets to it — or, with a ``pool`` of worker
    processes, a few batches ahead by the workers (augmented copies take about as long to make as
    the model takes to read them), who on the CPU also read them with a snapshot of the model
    (else, reading three views on 2 cores, this process runs the model about twice as long as each
    worker takes to make the copies and search all three: self-training's labeling ~10 % slower)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        views = [views[0] if isinstance(views[0], list) else materialize(views[0]), *views[1:]]
        order = sorted(range(len(views[0])), key=lambda i: views[0][i][0].shape[-1])
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        ahead = pool.workers if pool is not None and pool.workers > 1 else 0
        # on the CPU the workers read the copies they make with (a snapshot of) the model too
        copies_in_workers = ahead and any(hasattr(v, "job") for v in views[1:])  # (see SearchPool.read)
        model_file = pool.share_model(model) if copies_in_workers and device.type == "cpu" else None
        reading: deque = deque()  # per batch ahead: the items (or model outputs) of each view, to come
        for k, idx in enumerate(batches):
            while len(reading) <= min(ahead, len(batches) - 1 - k):
                later = batches[k + len(reading)]
                reading.append([_read_here(views[0], later)]
                               + [(pool.read(v, later, model_file) if ahead else _read_here(v, later))
                                  for v in views[1:]])
            outputs = []
            for items in reading.popleft():
                outputs.append(items.result() if isinstance(items, _Outputs)
                               else _run_model(model, items.result(), device))
            yield idx, outputs
    finally:
        model.train(was_training)


def _run_model(model, items, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's ``(log_probs (T, B, C), lengths)`` for a batch of items, on the CPU."""
    images, widths, _ = collate(items)
    log_probs, lengths = model(images.to(device), widths.to(device))
    return log_probs.float().cpu(), lengths.cpu()


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    dataset,
    charset: Charset,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    method: str = "greedy",
    lexicon=None,
    beam_width: int = 10,
    charlm=None,
    pool: SearchPool | None = None,
) -> list[Prediction]:
    """Recognize every item of ``dataset`` (items are ``(tensor (1, H, W), anything)``).

    ``method`` is ``greedy``, ``beam``, ``lexicon`` (needs ``lexicon``) or ``charlm`` (needs
    ``charlm``), see :mod:`hwlearn.decode`; ``pool`` as in :func:`predictions_by_method`.
    """
    return predict_views(model, [dataset], charset, device=device, batch_size=batch_size, method=method,
                         lexicon=lexicon, beam_width=beam_width, charlm=charlm, pool=pool)


@torch.no_grad()
def predict_views(
    model: torch.nn.Module,
    views,
    charset: Charset,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    method: str = "greedy",
    lexicon=None,
    beam_width: int = 10,
    charlm=None,
    pool: SearchPool | None = None,
    lm_weight: float = LM_WEIGHT,
) -> list[Prediction]:
    """Like :func:`predict`, reading each item from several views of it: ``views[0]`` is the
    dataset, ``views[1:]`` hold other renderings of the same items in the same order (augmented
    copies). Every view is decoded with ``method``, every distinct reading is scored in every view,
    and the one the views agree on best is kept (:func:`hwlearn.decode.consensus`). With one view
    this is plain :func:`predict`."""
    return predictions_by_method(model, views, charset, (method,), device=device, batch_size=batch_size,
                                 lexicon=lexicon, beam_width=beam_width, charlm=charlm, pool=pool,
                                 lm_weight=lm_weight)[method]


@torch.no_grad()
def predictions_by_method(
    model: torch.nn.Module,
    views,
    charset: Charset,
    methods,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    lexicon=None,
    beam_width: int = 10,
    charlm=None,
    workers: int | None = None,
    pool: SearchPool | None = None,
    lm_weight: float = LM_WEIGHT,
) -> dict[str, list[Prediction]]:
    """:func:`predict_views` with each of ``methods``, ``{method: predictions}``: the model reads
    every batch once and each method decodes its outputs (reading the same items greedily and with a
    lexicon or character model costs one run of the model, not one per method).

    The searches run in ``pool`` (a :class:`SearchPool` made for the same charset, lexicon,
    character model, beam width and ``lm_weight``, the character model's weight) when given: one
    that outlives several calls keeps its workers and their warm character-model caches. Else in a
    pool of ``workers`` processes (default :func:`search_workers`) made for this call."""
    methods = list(dict.fromkeys(methods))
    n = len(views[0])
    if pool is not None and not pool.serves(charset, lexicon, charlm, beam_width, lm_weight):
        raise ValueError("the search pool was made for another charset, lexicon, character model, beam width or "
                         "character model weight")
    if pool is None and workers is None:
        workers = search_workers(n * len(views) * sum(m != "greedy" for m in methods))
    results: dict[str, list] = {m: [None] * n for m in methods}

    def finish(idx, outputs, searched) -> None:
        for method in methods:
            readings = [scored(log_probs, lengths, charset, *job.result())
                        for (log_probs, lengths), job in zip(outputs, searched[method])]
            for i, p in zip(idx, _agreed(readings, outputs)):
                results[method][i] = p

    with nullcontext(pool) if pool is not None else SearchPool(charset, lexicon, charlm, beam_width, workers,
                                                               lm_weight=lm_weight) as searches:
        # the cores are the workers': torch threads would wait on each other (2 cores: the model's run 2-3x slower)
        with torch_threads(1 if searches.workers > 1 else None):
            pending: deque = deque()  # batches read by the model, their searches under way
            for idx, outputs in model_outputs(model, views, device, batch_size, searches):
                pending.append((idx, outputs, {m: [searches.submit(m, lp, lengths) for lp, lengths in outputs]
                                               for m in methods}))
                while len(pending) > 2 * searches.workers:  # the model stays a few batches ahead (memory)
                    finish(*pending.popleft())
            while pending:
                finish(*pending.popleft())
    return results  # type: ignore[return-value]


@contextmanager
def torch_threads(count: int | None):
    """Inside the block torch computes on ``count`` threads (None: as many as before); after it, on as
    many as before, however the block ends."""
    before = torch.get_num_threads()
    try:
        if count is not None:
            torch.set_num_threads(count)
        yield
    finally:
        torch.set_num_threads(before)


def search_workers(searches: int) -> int:
    """Processes for ``searches`` beam searches (items x views x methods other than greedy): one
    per core from :data:`PARALLEL_MIN_SEARCHES` on, else 1 (this process)."""
    return available_cores() if searches >= PARALLEL_MIN_SEARCHES else 1


class _Done:
    """A result already there, with a future's :meth:`result`."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def _read_here(view, indices: Sequence[int]) -> _Done:
    """Items ``indices`` of ``view``, read in this process now."""
    return _Done([view[i] for i in indices])


class _Inputs:
    """Model inputs a worker makes (:func:`_augmented_inputs`), with a future's :meth:`result`."""

    def __init__(self, future):
        self.future = future

    def result(self) -> list:
        return _as_inputs(self.future.result())


class _Outputs:
    """The model's ``(log_probs, lengths)`` for a batch a worker made and read
    (:func:`_outputs_in_worker`), with a future's :meth:`result`."""

    def __init__(self, future):
        self.future = future

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs, lengths = self.future.result()
        return torch.from_numpy(log_probs), torch.from_numpy(lengths)


_SEARCH_ARGS: tuple = ()  # a worker's (charset, lexicon, charlm, beam_width)
_WORKER_MODEL: tuple = (None, None)  # a worker's (model file, model read from it)


def _outputs_in_worker(model_file: str, images: list[np.ndarray], seeds: list[list[int]], height: int):
    """Makes the augmented copies of ``images`` (:func:`_augmented_inputs`) and reads them with the
    model saved in ``model_file`` (:meth:`SearchPool.share_model`; loaded once per file):
    ``(log_probs, lengths)`` as numpy arrays."""
    global _WORKER_MODEL
    if _WORKER_MODEL[0] != model_file:
        _WORKER_MODEL = (model_file, torch.load(model_file, weights_only=False).eval())
    with torch.no_grad():
        log_probs, lengths = _run_model(_WORKER_MODEL[1], _as_inputs(_augmented_inputs(images, seeds, height)), "cpu")
    return log_probs.numpy(), lengths.numpy()


def _init_search_worker(*args) -> None:
    global _SEARCH_ARGS
    _SEARCH_ARGS = args
    torch.set_num_threads(1)  # the lexicon search's CTC rescoring: one core per worker


def _search_in_worker(method: str, log_probs: np.ndarray, lengths: list[int]):
    charset, lexicon, charlm, beam_width, lm_weight = _SEARCH_ARGS
    return search(log_probs, lengths, charset, method, lexicon=lexicon, beam_width=beam_width, charlm=charlm,
                  lm_weight=lm_weight)


#: :meth:`SearchPool.share_model`'s folders, in the temporary directory: ``hwlearn-model-<pid>-<random>``,
#: named for the process that made them, so a later one can tell those whose process is gone
MODEL_DIR_PREFIX = "hwlearn-model-"


def remove_orphaned_model_dirs(tmp: str | Path | None = None) -> list[Path]:
    """Removes (and returns) this user's model snapshot folders (:data:`MODEL_DIR_PREFIX`) in ``tmp``
    (default: the temporary directory) whose process no longer runs: one killed outright could not
    remove its own (~4 MB). POSIX only (elsewhere nothing is removed); a folder of a process that
    runs, of another user, or not named by a pid is left alone."""
    if os.name != "posix":
        return []
    removed = []
    for entry in Path(tmp or tempfile.gettempdir()).glob(f"{MODEL_DIR_PREFIX}*-*"):
        pid = entry.name[len(MODEL_DIR_PREFIX):].partition("-")[0]
        try:
            if not pid.isdigit() or not entry.is_dir() or entry.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        except OSError:  # another user's process (PermissionError), or the folder went meanwhile
            continue
    return removed


class SearchPool:
    """Runs :func:`hwlearn.decode.search` on model output batches, in ``workers`` processes (greedy,
    and everything when ``workers`` is 1, in this process at once); a context manager. On Linux the
    workers are forks of this process, as torch's DataLoader workers are (one torch thread each;
    they start at once and share the lexicon and character model, nor do they import the caller's
    script again); elsewhere the platform's default start method (spawn: a script that reads many
    images needs the usual ``if __name__ == "__main__":`` guard). Workers start at the first search
    and stop at :meth:`close`. ``lm_weight``: the character model's weight in its searches."""

    def __init__(self, charset: Charset, lexicon=None, charlm=None, beam_width: int = 10, workers: int | None = None,
                 start_method: str | None = None, lm_weight: float = LM_WEIGHT):
        self.args = (charset, lexicon, charlm, beam_width, lm_weight)
        self.workers = available_cores() if workers is None else max(1, int(workers))
        self.pool = None
        self.model_dir: str | None = None  # where share_model saves the model for the workers
        self.models_shared = 0
        if self.workers > 1:
            context = get_context(start_method or ("fork" if sys.platform.startswith("linux") else None))
            self.pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_search_worker,
                                            initargs=self.args)

    def serves(self, charset: Charset, lexicon, charlm, beam_width: int, lm_weight: float) -> bool:
        """Whether its searches are the ones a call with these would make."""
        mine = self.args
        return (mine[0] == charset and mine[1] is lexicon and mine[2] is charlm and mine[3] == beam_width
                and mine[4] == lm_weight)

    def submit(self, method: str, log_probs: torch.Tensor, lengths: torch.Tensor):
        """The search's ``(ids, factors)``, to come: an object whose ``result()`` gives it."""
        if self.pool is None or method == "greedy":
            charset, lexicon, charlm, beam_width, lm_weight = self.args
            return _Done(search(log_probs, lengths, charset, method, lexicon=lexicon, beam_width=beam_width,
                                charlm=charlm, lm_weight=lm_weight))
        return self.pool.submit(_search_in_worker, method, log_probs.numpy(), lengths.tolist())

    def read(self, view, indices: Sequence[int], model_file: str | None = None):
        """Items ``indices`` of ``view``, to come (an object whose ``result()`` gives them): made
        by a worker when the view says how (:meth:`AugmentedCopy.job`) and there are workers, else
        read here at once. With ``model_file`` (:meth:`share_model`) the worker reads the items it
        made with that model too, and ``result()`` gives the model's ``(log_probs, lengths)``
        (an :class:`_Outputs`)."""
        if self.pool is None or not hasattr(view, "job"):
            return _read_here(view, indices)
        if model_file is not None:
            return _Outputs(self.pool.submit(_outputs_in_worker, model_file, *view.job(indices)))
        return _Inputs(self.pool.submit(_augmented_inputs, *view.job(indices)))

    def share_model(self, model: torch.nn.Module) -> str | None:
        """Saves ``model`` as it is now (in eval mode) for the workers to read with (:meth:`read`):
        the file's path (None for a model that cannot be pickled: this process reads with it).
        Each call writes a new file and removes the one before, whose readings must be done by then;
        the first also removes the folders killed processes left (:func:`remove_orphaned_model_dirs`)."""
        if self.model_dir is None:
            remove_orphaned_model_dirs()
            self.model_dir = tempfile.mkdtemp(prefix=f"{MODEL_DIR_PREFIX}{os.getpid()}-")
        for old in Path(self.model_dir).iterdir():
            old.unlink()
        self.models_shared += 1
        path = Path(self.model_dir) / f"model-{self.models_shared}.pt"
        try:
            torch.save(model, path)
        except (pickle.PicklingError, AttributeError, TypeError):  # e.g. a caller's module holding a lambda
            path.unlink(missing_ok=True)
            return None
        return str(path)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.model_dir is not None:
            shutil.rmtree(self.model_dir, ignore_errors=True)
            self.model_dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _agreed(readings: list[list[Prediction]], outputs) -> list[Prediction]:
    """Per item of a batch, the reading its views agree on best (:func:`hwlearn.decode.consensus`):
    ``readings[j][b]`` is view ``j``'s reading of item ``b``, ``outputs[j]`` view ``j``'s
    ``(log_probs, lengths)``. With one view, that view's readings."""
    if len(outputs) == 1:
        return readings[0]
    per_item = [[r[b] for r in readings] for b in range(len(readings[0]))]
    candidates = [distinct_readings(rs) for rs in per_item]
    probs = np.zeros((len(per_item), len(outputs), max(map(len, candidates))))
    for k in range(probs.shape[2]):  # the k-th distinct reading of each item (its first where it has fewer)
        labels = [c[k].ids if k < len(c) else c[0].ids for c in candidates]
        for j, (log_probs, lengths) in enumerate(outputs):
            probs[:, j, k] = sequence_confidence(log_probs, lengths, labels).numpy()
    return [consensus(per_item[b], probs[b, :, : len(candidates[b])]) for b in range(len(per_item))]
