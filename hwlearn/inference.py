"""Batched recognition: run a model over many images and decode them.

Images are sorted by width before batching (less padding, faster) and the predictions are returned
in the input order. Used by validation, ``evaluate``, ``recognize`` and self-training.
"""

from __future__ import annotations


import torch

from .charset import Charset
from .data import collate
from .decode import Prediction, decode_batch


def materialize(dataset) -> list:
    """All items of a (small) dataset as a list, so they are read or rendered only once."""
    return [dataset[i] for i in range(len(dataset))]


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
    device = torch.device(device)
    was_training = model.training
    model.eval()
    items = dataset if isinstance(dataset, list) else materialize(dataset)
    order = sorted(range(len(items)), key=lambda i: items[i][0].shape[-1])
    results: list[Prediction | None] = [None] * len(items)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        images, widths, _ = collate([items[i] for i in idx])
        log_probs, lengths = model(images.to(device), widths.to(device))
        preds = decode_batch(log_probs.float().cpu(), lengths.cpu(), charset, method=method,
                             lexicon=lexicon, beam_width=beam_width, charlm=charlm)
        for i, p in zip(idx, preds):
            results[i] = p
    model.train(was_training)
    return results  # type: ignore[return-value]
