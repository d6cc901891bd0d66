"""Corpus-level error rates of a recognizer: CER and WER.

Both are *corpus-level*: the total edit distance over all samples divided by the total length of
the references (characters for CER, whitespace-separated tokens for WER), so long words weigh more
than short ones, as in the usual HTR reporting. Texts are NFC-normalized before comparison; the
case-insensitive variants casefold both sides. A corpus whose references are all empty divides by
1 instead of 0 (the rate is then the number of inserted symbols), so the result is always finite.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import editdistance

from .charset import normalize


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Levenshtein distance between two strings or two sequences of tokens."""
    return int(editdistance.eval(a, b))


def _check(refs: Sequence[str], hyps: Sequence[str]) -> None:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")


def _rate(pairs) -> tuple[float, int]:
    errors = total = 0
    for ref, hyp in pairs:
        errors += edit_distance(ref, hyp)
        total += len(ref)
    return errors / max(total, 1), total


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Character error rate: total character edit distance / total reference characters."""
    _check(refs, hyps)
    return _rate((normalize(r), normalize(h)) for r, h in zip(refs, hyps))[0]


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Word error rate: total token edit distance / total reference tokens (split on whitespace).

    For a word recognizer each sample is usually one token, so WER is the fraction of wrong words."""
    _check(refs, hyps)
    return _rate((normalize(r).split(), normalize(h).split()) for r, h in zip(refs, hyps))[0]


def score(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float | int]:
    """All metrics at once: ``cer``, ``wer``, ``cer_nocase``, ``wer_nocase`` (casefolded both sides),
    ``n`` (samples) and ``ref_chars`` (total reference characters)."""
    _check(refs, hyps)
    refs = [normalize(r) for r in refs]
    hyps = [normalize(h) for h in hyps]
    folded_refs = [r.casefold() for r in refs]
    folded_hyps = [h.casefold() for h in hyps]
    return {
        "cer": cer(refs, hyps),
        "wer": wer(refs, hyps),
        "cer_nocase": cer(folded_refs, folded_hyps),
        "wer_nocase": wer(folded_refs, folded_hyps),
        "n": len(refs),
        "ref_chars": sum(len(r) for r in refs),
    }
