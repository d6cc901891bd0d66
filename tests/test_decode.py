"""Decoders on hand-made posteriors: greedy, beam, lexicon, confidence, and the batch API."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from hwlearn.charset import Charset
from hwlearn.decode import (
    LENGTH_BONUS,
    Lexicon,
    Prediction,
    beam_search,
    consensus,
    decode_batch,
    distinct_readings,
    greedy_decode,
    lexicon_decode,
    sequence_confidence,
)
from hwlearn.errors import HwlearnError

CHARSET = Charset("aehlmorsu")  # classes: 0 blank, a=1, e=2, h=3, l=4, m=5, o=6, r=7, s=8, u=9


def _log_probs(*samples: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T, B, C)`` log probabilities from per-sample lists of probability rows (each row is
    normalized; shorter samples are padded with blank frames) and their lengths."""
    t = max(len(s) for s in samples)
    c = len(samples[0][0])
    out = torch.zeros(t, len(samples), c)
    out[:, :, 0] = 1.0
    for b, rows in enumerate(samples):
        out[: len(rows), b] = torch.tensor(rows, dtype=torch.float32)
    out = out / out.sum(-1, keepdim=True)
    return out.clamp_min(1e-12).log(), torch.tensor([len(s) for s in samples])


def _spell(path: str, charset: Charset = CHARSET, p: float = 0.9, alt: dict | None = None) -> list[list[float]]:
    """Rows for an alignment like ``"hh_a_u"`` (``_`` blank): probability ``p`` on the path symbol,
    ``alt[i] = {char: prob}`` extra mass at frame ``i``, the rest spread over all classes."""
    rows = []
    for i, ch in enumerate(path):
        row = [(1.0 - p) / charset.num_classes] * charset.num_classes
        row[0 if ch == "_" else charset.encode(ch)[0]] += p
        for other, q in (alt or {}).get(i, {}).items():
            row[charset.encode(other)[0]] += q
        rows.append(row)
    return rows


def _labeling_probs(probs: np.ndarray) -> dict[tuple[int, ...], float]:
    """Brute force: P(labeling) for every labeling of a tiny ``(T, C)`` posterior."""
    out: dict[tuple[int, ...], float] = {}
    t, c = probs.shape
    for path in itertools.product(range(c), repeat=t):
        label = tuple(k for i, k in enumerate(path) if k != 0 and (i == 0 or path[i - 1] != k))
        out[label] = out.get(label, 0.0) + float(np.prod(probs[np.arange(t), path]))
    return out


def test_greedy_collapses_repeats_and_drops_blanks():
    lp, lengths = _log_probs(_spell("hh_ee_ll_l_oo"), _spell("s_u"))
    assert greedy_decode(lp, lengths) == [CHARSET.encode("hello"), CHARSET.encode("su")]
    # frames past a sample's length are ignored
    assert greedy_decode(lp, torch.tensor([4, 1])) == [CHARSET.encode("he"), CHARSET.encode("s")]
    # numpy input works too
    assert greedy_decode(lp.numpy(), lengths.numpy())[0] == CHARSET.encode("hello")


def test_beam_beats_greedy_when_mass_is_spread_over_paths():
    # Two frames, P(blank) = 0.6, P(a) = 0.4 each: the best path is "__" (0.36) but the labeling
    # "a" has 0.4*0.4 + 0.4*0.6 + 0.6*0.4 = 0.64.
    lp, lengths = _log_probs([[0.6, 0.4], [0.6, 0.4]])
    assert greedy_decode(lp, lengths) == [[]]
    assert beam_search(lp, lengths, beam_width=4) == [[1]]


def test_beam_search_agrees_with_greedy_on_sharp_posteriors():
    lp, lengths = _log_probs(_spell("m_oo_u_s_e"), _spell("__r_o_s_ee"))
    assert beam_search(lp, lengths) == greedy_decode(lp, lengths)


def test_beam_search_finds_the_most_probable_labeling():
    rng = np.random.default_rng(0)
    for _ in range(5):
        probs = rng.dirichlet(np.ones(3) * 0.7, size=5)  # 5 frames, 3 classes
        truth = _labeling_probs(probs)
        best = max(truth, key=truth.get)
        lp = torch.tensor(np.log(probs), dtype=torch.float32)[:, None, :]
        assert beam_search(lp, [5], beam_width=64, min_prob=0.0) == [list(best)]


def test_lexicon_corrects_a_misspelling():
    # the writer's "o" looks like an "a": P(a) = 0.55, P(o) = 0.35 at that frame
    rows = _spell("hh_a_u_ss_e", p=0.85, alt={3: {"o": 0.35}})
    rows[3][CHARSET.encode("a")[0]] -= 0.30
    lp, lengths = _log_probs(rows)
    assert CHARSET.decode(greedy_decode(lp, lengths)[0]) == "hause"
    lexicon = Lexicon(["house", "horse", "mouse", "hose", "use"], CHARSET)
    (match,) = lexicon_decode(lp, lengths, lexicon)
    assert match.word == "house"
    assert match.ids == CHARSET.encode("house")
    # its log probability is the CTC probability of the word
    ctc = torch.nn.functional.ctc_loss(
        lp, torch.tensor([match.ids]), lengths, torch.tensor([5]), reduction="none"
    )
    assert match.log_prob == pytest.approx(-ctc.item(), abs=1e-3)


def test_lexicon_share_counts_the_words_trailing_mark_forms_as_the_word():
    # "house" and then a faint mark: "house" and "house," are both likely readings
    marks = Charset("aehlmorsu,.")
    rows = _spell("hh_o_u_ss_e__", charset=marks, p=0.9, alt={11: {",": 0.6}})
    lp, lengths = _log_probs(rows)
    (alone,) = lexicon_decode(lp, lengths, Lexicon(["house"], marks))
    (forms,) = lexicon_decode(lp, lengths, Lexicon(["house", "house,", "house."], marks))
    assert forms.word in ("house", "house,")
    # the forms do not split the share: the word is as clear as if the lexicon had only "house"
    assert forms.share == pytest.approx(1.0, abs=1e-3) and alone.share == pytest.approx(1.0)
    # another word still does: "horse" where the "u" could be an "r"
    rows = _spell("hh_o_u_ss_e__", charset=marks, p=0.6, alt={5: {"r": 0.5}, 11: {",": 0.6}})
    lp, lengths = _log_probs(rows)
    (rival,) = lexicon_decode(lp, lengths, Lexicon(["house", "house,", "horse", "horse,"], marks))
    assert 0.5 < rival.share < 0.8


def test_lexicon_reads_a_line_break_part_from_its_own_candidates():
    hyphen = Charset("aehlmorsu,-")
    words = {"house": 50, "house,": 50, "horse": 40, "hose": 30}
    breaks = {"hou": 0.5, "hous": 0.5, "hor": 0.4}
    # "hous" and a hyphen: no word fits, the part does
    rows = _spell("hh_o_u_ss__-", charset=hyphen, p=0.9)
    lp, lengths = _log_probs(rows)
    (plain,) = lexicon_decode(lp, lengths, Lexicon(words, hyphen))
    (broken,) = lexicon_decode(lp, lengths, Lexicon(words, hyphen, breaks=breaks))
    assert plain.word in words and broken.word == "hous-"
    assert broken.ids == hyphen.encode("hous-") and 0.5 < broken.share < 1.0  # ("house" is 100x as frequent)
    # a whole word with a faint mark stays the word: a part's prior is far below its word's
    rows = _spell("hh_o_u_ss_e__", charset=hyphen, p=0.9, alt={11: {"-": 0.3, ",": 0.3}})
    lp, lengths = _log_probs(rows)
    with_house = Lexicon(words, hyphen, breaks={**breaks, "house": 0.5})
    assert lexicon_decode(lp, lengths, with_house)[0].word in ("house", "house,")
    # parts take no place from the words: no trie node is added, the words' search is unchanged
    assert with_house.num_nodes == Lexicon(words, hyphen).num_nodes
    rows = _spell("hh_o_u_ss_e", charset=hyphen, p=0.6, alt={3: {"r": 0.35}})
    lp, lengths = _log_probs(rows)
    for width in (1, 2, 16):
        (a,) = lexicon_decode(lp, lengths, with_house, beam_width=width)
        (b,) = lexicon_decode(lp, lengths, Lexicon(words, hyphen), beam_width=width)
        assert a[:3] == b[:3] and a.share == pytest.approx(b.share, abs=0.01)  # (parts share the rest)
    # parts need counted words (their prior is on the words' scale) and a hyphen in the charset;
    # a part that begins no word is left out
    with pytest.raises(HwlearnError, match="counted"):
        Lexicon(list(words), hyphen, breaks=breaks)
    lexicon = Lexicon(words, hyphen, breaks={"xyz": 1.0, "hou": 1.0})
    assert set(lexicon.breaks) == {lexicon._node("hou")}
    assert Lexicon({"house": 5}, CHARSET, breaks=breaks).breaks == {}


def test_lexicon_word_prior_decides_between_look_alikes():
    # the writer's "u" could be an "r": P(house) and P(horse) are close
    rows = _spell("hh_o_u_ss_e", p=0.6, alt={3: {"r": 0.35}, 5: {"r": 0.3}})
    lp, lengths = _log_probs(rows)
    plain = Lexicon(["house", "horse"], CHARSET)
    (match,) = lexicon_decode(lp, lengths, plain)
    assert match.word == "house"
    # a much more frequent "horse" wins with the prior (Bayes rule), the log_prob stays the CTC one
    counted = Lexicon({"house": 1, "horse": 1000}, CHARSET)
    (with_prior,) = lexicon_decode(lp, lengths, counted)
    assert with_prior.word == "horse"
    assert with_prior.log_prob < match.log_prob
    # the share: how clearly the word beat the others it was found with
    assert 0.5 < match.share < 1 and 0.5 < with_prior.share < 1
    (clear,) = lexicon_decode(lp, lengths, Lexicon({"house": 1000, "horse": 1}, CHARSET))
    assert clear.word == "house" and clear.share > match.share
    # equal counts are no prior; weight 0 switches the prior off
    assert lexicon_decode(lp, lengths, Lexicon({"house": 7, "horse": 7}, CHARSET))[0].word == "house"
    assert lexicon_decode(lp, lengths, Lexicon({"house": 1, "horse": 1000}, CHARSET, prior_weight=0))[0].word == "house"
    np.testing.assert_allclose(np.exp(counted.log_prior), [1 / 1001, 1000 / 1001], rtol=1e-6)
    with pytest.raises(HwlearnError, match="positive"):
        Lexicon({"house": 0, "horse": 3}, CHARSET)


def test_lexicon_handles_double_letters():
    lp, lengths = _log_probs(_spell("h_e_l_l_oo"))
    (match,) = lexicon_decode(lp, lengths, Lexicon(["helo", "hello", "hell"], CHARSET))
    assert match.word == "hello"


def test_lexicon_matches_brute_force():
    charset = Charset("ab")
    rng = np.random.default_rng(1)
    words = ["a", "b", "ab", "ba", "aa", "bab"]
    for bonus in (0.0, 1.5):  # the most probable word, then the best of log P + bonus x its length
        lexicon = Lexicon(words, charset, length_bonus=bonus)
        for _ in range(5):
            probs = rng.dirichlet(np.ones(3), size=5)
            truth = _labeling_probs(probs)
            best = max(words, key=lambda w: math.log(truth.get(tuple(charset.encode(w)), 1e-300)) + bonus * len(w))
            lp = torch.tensor(np.log(probs), dtype=torch.float32)[:, None, :]
            (match,) = lexicon_decode(lp, [5], lexicon, beam_width=64, min_prob=0.0)
            assert match.word == best
            assert match.log_prob == pytest.approx(math.log(truth[tuple(charset.encode(best))]), abs=1e-4)


def test_lexicon_without_a_fitting_word():
    lp, lengths = _log_probs(_spell("s_u"))  # 3 frames cannot hold a 5-letter word
    (match,) = lexicon_decode(lp, lengths, Lexicon(["house", "mouse"], CHARSET))
    assert match.word is None and match.ids == [] and match.log_prob == -math.inf
    (pred,) = decode_batch(lp, lengths, CHARSET, "lexicon", lexicon=Lexicon(["house"], CHARSET))
    assert pred.text == "" and pred.confidence == 0.0


def test_lexicon_building():
    lexicon = Lexicon(["house", "Haus", "house", "", "mouse", "\u00fcber"], CHARSET)
    assert lexicon.words == ("house", "mouse")
    assert lexicon.dropped == 2  # "Haus" (capital H) and "über" are not in the charset
    assert "house" in lexicon and "hous" not in lexicon and "Haus" not in lexicon
    assert len(lexicon) == 2
    with pytest.raises(HwlearnError, match="no word"):
        Lexicon(["XYZ"], CHARSET)


def test_lexicon_from_file(tmp_path):
    path = tmp_path / "words.tsv"
    path.write_text("house\t12\nmouse\t3\nHaus\t1\n", encoding="utf-8")
    lexicon = Lexicon.from_file(path, CHARSET)
    assert lexicon.words == ("house", "mouse")
    np.testing.assert_allclose(np.exp(lexicon.log_prior), [12 / 15, 3 / 15], rtol=1e-6)  # counts are the prior
    with pytest.raises(HwlearnError, match="missing.txt: no such file"):
        Lexicon.from_file(tmp_path / "missing.txt", CHARSET)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00h")
    with pytest.raises(HwlearnError, match="bad.txt: binary file, not UTF-8"):
        Lexicon.from_file(bad, CHARSET)


def test_confidence_sharp_vs_flat():
    sharp, lengths = _log_probs(_spell("h_o_u_s_e", p=0.98))
    flat, _ = _log_probs(_spell("h_o_u_s_e", p=0.3))
    label = [CHARSET.encode("house")]
    c_sharp = sequence_confidence(sharp, lengths, label)
    c_flat = sequence_confidence(flat, lengths, label)
    assert c_sharp.shape == (1,)
    assert 0.9 < c_sharp.item() <= 1.0
    assert 0.0 <= c_flat.item() < c_sharp.item() - 0.3
    # a wrong label is less likely than the right one; an impossible one gets 0
    assert sequence_confidence(sharp, lengths, [CHARSET.encode("mouse")]) < c_sharp
    assert sequence_confidence(sharp, lengths, [CHARSET.encode("hhoouussee")]).item() == 0.0


def test_decode_batch_methods():
    rows = _spell("hh_a_u_ss_e", p=0.85, alt={3: {"o": 0.35}})
    rows[3][CHARSET.encode("a")[0]] -= 0.30
    lp, lengths = _log_probs(rows, _spell("m_o_u_s_e", p=0.95))
    greedy = decode_batch(lp, lengths, CHARSET)
    assert [p.text for p in greedy] == ["hause", "mouse"]
    assert all(isinstance(p, Prediction) and 0.0 <= p.confidence <= 1.0 for p in greedy)
    assert greedy[1].ids == CHARSET.encode("mouse")
    assert greedy[1].confidence > greedy[0].confidence
    beam = decode_batch(lp, lengths, CHARSET, "beam", beam_width=5)
    assert [p.text for p in beam] == ["hause", "mouse"]
    lexicon = Lexicon(["house", "mouse", "horse"], CHARSET)
    lex = decode_batch(lp, lengths, CHARSET, "lexicon", lexicon=lexicon)
    assert [p.text for p in lex] == ["house", "mouse"]
    # confidence of the chosen output: "house" is less probable under the model than "hause"
    assert lex[0].confidence < greedy[0].confidence
    with pytest.raises(HwlearnError, match="needs a lexicon"):
        decode_batch(lp, lengths, CHARSET, "lexicon")
    with pytest.raises(HwlearnError, match="another charset"):
        decode_batch(lp, lengths, CHARSET, "lexicon", lexicon=Lexicon(["ab"], Charset("ab")))
    with pytest.raises(HwlearnError, match="unknown decoding method"):
        decode_batch(lp, lengths, CHARSET, "viterbi")


def test_lexicon_words_add_the_written_forms_of_frequent_words(tmp_path):
    from collections import Counter

    from hwlearn.recipes import lexicon_words, load_lexicon, number_forms

    charset = Charset("abcdehlmorstuwHMT,.;")
    counts = Counter({"the": 50, "house": 20, "mouse": 5, "Mr": 4, "xyz": 30})
    affixes = {("", ","): 10, ("", "."): 8, ('"', ""): 7, ("", "!"): 6, ("", ";"): 1}
    entries = lexicon_words(counts, charset, affixes, variant_words=2, suffixes=2)
    words = list(entries)
    assert words[:4] == ["the", "house", "mouse", "Mr"]  # by frequency; "xyz" is not in the charset
    # the counts: the corpus' own; a variant has the count of the form it was made from
    assert entries["the"] == 50 and entries["Mr"] == 4
    assert entries["The"] == entries["the,"] == entries["The."] == 50 and entries["house,"] == 20
    # a Capitalized form is as likely as its word: the image, not the corpus, says whether it is capitalized
    capitalized = lexicon_words(Counter({"the": 50, "The": 7, "Mr": 60, "a": 1}), charset, affixes)
    assert capitalized["The"] == capitalized["The."] == 50 and capitalized["Mr"] == 60
    extra = set(words[4:])
    assert {"The", "The,", "The.", "the,", "the.", "house,", "house."} <= extra
    assert "House" in extra and "mouse," not in extra and "Mouse" not in extra  # variants: top 2 words only
    assert not any(w.endswith(("!", ";")) or w.startswith('"') for w in extra)  # 2 most frequent suffixes
    assert len(words) == len(set(words))

    # numbers: an open class no corpus lists; they share the corpus's number tokens' count
    digits = Charset("0123456789abcdehlmorstuwHMT,.;")
    numbered = lexicon_words(Counter({"the": 50, "house": 20, "3": 4, "12th": 2}), digits, affixes)
    share = 6 / len([f for f in number_forms() if digits.covers(f)])  # ("2nd": no "n" in this charset)
    assert numbered["the"] == 50 and numbered["3"] == 4 and numbered["12th"] == 2  # listed numbers keep their count
    assert numbered["1755"] == numbered["1755."] == numbered["28th"] == numbered["28th,"] == pytest.approx(share)
    assert "9999" in numbered and "10000" not in numbered and "101st" not in numbered
    assert "1755" not in lexicon_words(Counter({"the": 50, "house": 20}), digits, affixes)  # a corpus without numbers
    assert not any(ch.isdigit() for w in entries for ch in w)  # nor where the charset has no digits

    # a plain word list (every count 1): all of it, in order, nothing added
    plain = tmp_path / "words.txt"
    plain.write_text("mouse\nthe\nhouse\nxyz\n", encoding="utf-8")
    assert load_lexicon(plain, charset).words == ("house", "mouse", "the")
    # a word list with counts gets variants with the fallback punctuation
    counted = tmp_path / "counted.txt"
    counted.write_text("the\t9\nhouse\t3\n", encoding="utf-8")
    lexicon = load_lexicon(counted, charset)
    assert {"the", "The", "the,", "house."} <= set(lexicon.words)


def test_break_parts_share_a_words_count_over_its_places_to_break(tmp_path):
    from collections import Counter

    from hwlearn.recipes import break_parts, load_lexicon

    charset = Charset("acdehimnorstuwIT-")
    counts = Counter({"the": 100, "immediate": 12, "time": 8, "tide": 4, "Twain": 3, "co-ed": 50, "its": 40})
    parts = break_parts(counts, charset, share=0.5)
    # "immediate": 6 places (im- .. immedia-), each 0.5 * 12 / 6; its Capitalized form likewise
    assert parts["im"] == parts["immedia"] == parts["Im"] == pytest.approx(1.0)
    # a part two words share sums their shares: "ti" of "time" and of "tide" (one place each)
    assert parts["ti"] == parts["Ti"] == pytest.approx(0.5 * 8 + 0.5 * 4)
    assert parts["Tw"] == parts["Twa"] == pytest.approx(0.75)  # (a Capitalized word is its own form)
    # words under four letters have no place to break; words with a hyphen or not all letters give none
    assert not any(p.startswith(("th", "it", "co")) for p in parts)
    assert "immediat" not in parts and "i" not in parts  # two or more letters on each line
    assert break_parts(counts, charset, max_words=1) == {}  # the most frequent word only: "the"
    assert break_parts(counts, Charset("acdehimnorstuwIT")) == {}  # no hyphen to write
    assert break_parts(Counter({"immediate": 1, "time": 1}), charset) == {}  # a plain word list
    # load_lexicon gives a counted corpus's lexicon its parts
    counted = tmp_path / "counted.txt"
    counted.write_text("the\t9\nimmediate\t3\n", encoding="utf-8")
    lexicon = load_lexicon(counted, charset)
    assert lexicon.breaks and lexicon._node("immedi") in lexicon.breaks


def test_consensus_averages_over_views_and_keeps_the_decoders_factor():
    # lexicon readings: "cat" read in views 0 and 2 with share 0.5, "cot" in view 1 with share 1
    readings = [Prediction("cat", 0.4, [1, 2, 3]), Prediction("cot", 0.6, [1, 4, 3]), Prediction("cat", 0.3, [1, 2, 3])]
    assert [r.text for r in distinct_readings(readings)] == ["cat", "cot"]
    probs = [[0.8, 0.5], [0.5, 0.6], [0.6, 0.2]]  # view j, distinct reading k
    best = consensus(readings, probs)
    assert best.text == "cot" and best.ids == [1, 4, 3]
    assert best.confidence == pytest.approx((0.5 + 0.6 + 0.2) / 3)  # beats "cat": 0.5 * (0.8 + 0.5 + 0.6) / 3
    # greedy readings (confidence == probability): the best mean probability wins, not view 0's reading
    greedy = [Prediction("cat", 0.8, [1, 2, 3]), Prediction("cot", 0.6, [1, 4, 3]), Prediction("cot", 0.7, [1, 4, 3])]
    best = consensus(greedy, [[0.8, 0.7], [0.3, 0.6], [0.4, 0.7]])
    assert best.text == "cot" and best.confidence == pytest.approx(2.0 / 3)
    # one view is plain decoding; ties go to the earlier view; an empty reading is no candidate
    assert consensus(greedy[:1], [[0.8]]) == greedy[0]
    assert consensus(greedy[:2], [[0.5, 0.5], [0.5, 0.5]]).text == "cat"
    empty = [Prediction("cat", 0.8, [1, 2, 3]), Prediction("", 0.9, [])]
    best = consensus(empty, [[0.8], [0.1]])
    assert best.text == "cat" and best.confidence == pytest.approx(0.45)
    # a lexicon view that found no word (confidence 0) gives its reading nothing
    assert consensus([Prediction("", 0.0, [])], [[0.9]]).confidence == 0.0
    with pytest.raises(ValueError, match="shape"):
        consensus(readings, [[0.8], [0.5], [0.6]])


def test_lexicon_length_bonus_keeps_a_faint_last_letter():
    # "hous" then a faint "e" (P 0.3 against blank 0.6): the CTC probability favours "hous" over "house"
    rows = _spell("hh_o_u_ss__", p=0.9) + [[0.6, 0.0, 0.3, 0, 0, 0, 0, 0, 0, 0.1]]
    lp, lengths = _log_probs(rows)
    no_bonus = Lexicon(["hous", "house"], CHARSET, length_bonus=0.0)
    (short,) = lexicon_decode(lp, lengths, no_bonus)
    assert short.word == "hous"
    # a bonus per letter makes up for the spike the longer word needs; log_prob stays the CTC one
    (long,) = lexicon_decode(lp, lengths, Lexicon(["hous", "house"], CHARSET, length_bonus=2.0))
    assert long.word == "house" and long.log_prob < short.log_prob
    # a trailing mark earns nothing: a faint comma is left to the image, bonus or not
    marks = Charset("aehlmorsu,.")
    rows = _spell("hh_o_u_ss_e_", charset=marks, p=0.9) + [[0.6] + [0.0] * 9 + [0.3, 0.1]]
    lp, lengths = _log_probs(rows)
    for bonus in (0.0, 2.0, 20.0):
        assert lexicon_decode(lp, lengths, Lexicon(["house", "house,"], marks, length_bonus=bonus))[0].word == "house"
    # the default is the module's LENGTH_BONUS
    assert Lexicon(["hous"], CHARSET).length_bonus == LENGTH_BONUS
