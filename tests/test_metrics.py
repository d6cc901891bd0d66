"""CER / WER against hand-computed values."""

from __future__ import annotations

import pytest

from hwlearn.metrics import cer, edit_distance, score, wer


def test_edit_distance_operations():
    assert edit_distance("kitten", "sitting") == 3  # 2 substitutions + 1 insertion
    assert edit_distance("abc", "abc") == 0
    assert edit_distance("abc", "") == 3
    assert edit_distance("", "ab") == 2
    assert edit_distance(["a", "big", "dog"], ["a", "dog"]) == 1


def test_cer_is_corpus_level():
    refs = ["house", "of", "cat"]
    hyps = ["horse", "off", "ca"]  # 1 substitution, 1 insertion, 1 deletion
    assert cer(refs, hyps) == pytest.approx(3 / 10)
    # not the mean of per-sample rates (which would be (1/5 + 1/2 + 1/3) / 3)
    assert cer(refs, hyps) != pytest.approx((1 / 5 + 1 / 2 + 1 / 3) / 3)


def test_wer_counts_word_tokens():
    refs = ["the old house", "street", "an apple"]
    hyps = ["the house", "Street", "an apple pie"]  # 1 deletion, 1 substitution, 1 insertion
    assert wer(refs, hyps) == pytest.approx(3 / 6)
    assert wer(["a b"], ["a  b "]) == 0.0  # any whitespace separates tokens


def test_empty_references_are_finite():
    assert cer([""], [""]) == 0.0
    assert cer([""], ["ab"]) == 2.0  # divides by 1, not 0
    assert wer(["", "word"], ["", "word"]) == 0.0
    assert wer([""], ["x y"]) == 2.0


def test_score_casing_and_normalization():
    refs = ["Straße", "Berlin", "über"]
    hyps = ["strasse", "BERLIN", "u\u0308ber"]  # decomposed ü equals precomposed after NFC
    s = score(refs, hyps)
    assert s["n"] == 3
    assert s["ref_chars"] == 6 + 6 + 4
    # Straße->strasse: S->s, ß->s, insert s = 3; Berlin->BERLIN: 5; über: 0
    assert s["cer"] == pytest.approx(8 / 16)
    assert s["wer"] == pytest.approx(2 / 3)
    # casefold: ß -> ss, so "strasse" == "strasse"; BERLIN == berlin
    assert s["cer_nocase"] == 0.0
    assert s["wer_nocase"] == 0.0


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        cer(["a"], [])
    with pytest.raises(ValueError):
        score(["a", "b"], ["a"])
