"""Batched recognition: run a model over many images and decode them.

Images are sorted by width before batching (less padding, faster) and the predictions are returned
in the input order. Reading the same images with several decodings runs the model once
(:func:`predictions_by_method`). Used by validation, ``evaluate``, ``recognize`` and self-training.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from .charset import Charset
from .data import augment_real, collate, to_model_input
from .decode import Prediction, consensus, decode_batch, distinct_readings, sequence_confidence


def materialize(dataset) -> list:
    """All items of a (small) dataset as a list, so they are read or rendered only once."""
    return [dataset[i] for i in range(len(dataset))]


def augmented_copies(images, count: int, height: int, seed: int = 0) -> list[list]:
    """``count`` augmented copies (:func:`hwlearn.data.augment_real`) of every uint8 image, as
    model inputs at ``height``: one list per copy, for :func:`predict_views`. Copy ``v`` of an image
    depends only on its pixels, ``v`` and ``seed``, so an image reads the same alone or among others."""
    def rng(img, v):
        return np.random.default_rng([seed, v, zlib.crc32(img.tobytes()), *img.shape])

    return [[(to_model_input(augment_real(img, rng(img, v)), height), None) for img in images] for v in range(count)]


def _model_outputs(model, views, device, batch_size):
    """Per batch of items: their indices and, for each of ``views`` (datasets of the same items, e.g.
    the images and augmented copies of them), ``(log_probs (T, B, C) on the CPU, lengths)``. Batched
    by the width of ``views[0]``, in eval mode (restored afterwards)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        views = [v if isinstance(v, list) else materialize(v) for v in views]
        order = sorted(range(len(views[0])), key=lambda i: views[0][i][0].shape[-1])
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            outputs = []
            for items in views:
                images, widths, _ = collate([items[i] for i in idx])
                log_probs, lengths = model(images.to(device), widths.to(device))
                outputs.append((log_probs.float().cpu(), lengths.cpu()))
            yield idx, outputs
    finally:
        model.train(was_training)


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
) -> list[Prediction]:
    """Recognize every item of ``dataset`` (items are ``(tensor (1, H, W), anything)``).

    ``method`` is ``greedy``, ``beam``, ``lexicon`` (needs ``lexicon``) or ``charlm`` (needs
    ``charlm``), see :mod:`hwlearn.decode`.
    """
    return predict_views(model, [dataset], charset, device=device, batch_size=batch_size, method=method,
                         lexicon=lexicon, beam_width=beam_width, charlm=charlm)


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
) -> list[Prediction]:
    """Like :func:`predict`, reading each item from several views of it: ``views[0]`` is the
    dataset, ``views[1:]`` hold other renderings of the same items in the same order (augmented
    copies). Every view is decoded with ``method``, every distinct reading is scored in every view,
    and the one the views agree on best is kept (:func:`hwlearn.decode.consensus`). With one view
    this is plain :func:`predict`."""
    return predictions_by_method(model, views, charset, (method,), device=device, batch_size=batch_size,
                                 lexicon=lexicon, beam_width=beam_width, charlm=charlm)[method]


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
) -> dict[str, list[Prediction]]:
    """:func:`predict_views` with each of ``methods``, ``{method: predictions}``: the model reads
    every batch once and each method decodes its outputs (reading the same items greedily and with a
    lexicon or character model costs one run of the model, not one per method)."""
    methods = list(dict.fromkeys(methods))
    results: dict[str, list] = {m: [None] * len(views[0]) for m in methods}
    for idx, outputs in _model_outputs(model, views, device, batch_size):
        for method in methods:
            readings = [decode_batch(log_probs, lengths, charset, method=method, lexicon=lexicon,
                                     beam_width=beam_width, charlm=charlm) for log_probs, lengths in outputs]
            for i, p in zip(idx, _agreed(readings, outputs)):
                results[method][i] = p
    return results  # type: ignore[return-value]


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
