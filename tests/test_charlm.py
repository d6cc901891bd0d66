"""The character n-gram model and the decoding it guides (hand-made posteriors)."""

from __future__ import annotations

import itertools
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hwlearn.charlm import (END_AFTER_SEPARATOR, SEPARATOR_SHARE, SEPARATORS, UNSEEN, CharLM, MixedCharLM,
                            suffix_shares)
from hwlearn.charset import Charset
from hwlearn.decode import (ARCHIVE_LM_WEIGHT, LM_WEIGHT, Lexicon, beam_search, charlm_decode, decode_batch,
                            greedy_decode, reading_method, word_keys)
from hwlearn.errors import HwlearnError
from hwlearn.recipes import load_charlm
from test_decode import CHARSET, _log_probs, _spell

WORDS = ["house", "mouse", "horse", "hose", "use", "rose", "mouser", "houses", "louse"]


def _rows(path: str, p: float = 0.9, alt: dict | None = None) -> list[list[float]]:
    """:func:`test_decode._spell` rows whose ``alt`` mass is moved from the path symbol."""
    rows = _spell(path, CHARSET, p, alt)
    for i, moved in (alt or {}).items():
        rows[i][CHARSET.encode(path[i])[0]] -= sum(moved.values())
    return rows


def test_probabilities_are_a_distribution():
    lm = CharLM(WORDS, order=3)
    seen = sorted({ch for w in WORDS for ch in w})
    def total(text):
        return (sum(math.exp(lm.log_prob(text, ch)) for ch in seen) + math.exp(lm.end_log_prob(text))
                + sum(math.exp(lm.log_prob(text, s)) for s in SEPARATORS))

    for text in ("", "ho", "mous", "zz"):
        # all but the mass kept back for characters never seen (UNSEEN at the unigram level)
        assert 1.0 - UNSEEN - 1e-9 <= total(text) <= 1.0
    # after a separator: END_AFTER_SEPARATOR for the end, the rest for the next word (less the
    # little the word model gives an empty word)
    assert 0.97 <= total("house ") <= 1.0 and 0.97 <= total("house-") <= 1.0


def test_spellings_of_the_language_are_likelier():
    lm = CharLM(WORDS)
    assert lm.score("house") > lm.score("hluse") > lm.score("hzuse")  # "z" never seen
    # a word it never saw, spelled like the others, beats a letter salad of the same length
    assert lm.score("mose") > lm.score("msoe")
    # a character the corpus never shows is possible but costly
    unseen = lm.log_prob("ho", "7")
    assert math.isfinite(unseen) and unseen <= math.log(UNSEEN) < lm.log_prob("ho", "u")


def test_words_are_separated_by_space_or_hyphen():
    lm = CharLM(WORDS)
    ends = lm.end_log_prob("house") - math.log(1 - SEPARATOR_SHARE)  # log P(end symbol | house)
    sep = math.log(SEPARATOR_SHARE / len(SEPARATORS))
    two = lm.score("house") - lm.end_log_prob("house") + ends + sep + math.log(1 - END_AFTER_SEPARATOR) + lm.score("rose")
    assert lm.score("house rose") == pytest.approx(two)
    assert lm.score("house-rose") == pytest.approx(two)
    # a listed multi-word entry is learned as its words
    assert CharLM(["New York"]).num_words == 2


def test_punctuation_at_word_ends_and_line_end_hyphens():
    plain = CharLM(WORDS)
    marked = CharLM(WORDS, suffixes={".": 0.1, ",": 0.2, "--": 0.05})
    assert marked.suffixes == {",": 0.2, ".": 0.1}  # a run of hyphens is a separator's business
    # a word with a frequent mark is about as likely as without; without suffixes it is costly
    assert marked.score("house,") > marked.score("house") - 1.5 > plain.score("house,")
    assert marked.score("house.") > marked.score("ho.use")
    # a text may end in a hyphen (a word broken at the line end)
    assert plain.end_log_prob("hou-") == pytest.approx(math.log(END_AFTER_SEPARATOR))
    assert suffix_shares({("", ","): 30, ('"', ","): 10, ("(", ""): 5, ("", "."): 20}, 200) == {",": 0.2, ".": 0.1}
    with pytest.raises(ValueError, match="less than 1"):
        CharLM(WORDS, suffixes={".": 0.6, ",": 0.5})


def test_from_source_reads_corpus_statistics_and_word_lists(tmp_path):
    from hwlearn.corpus import CorpusStats

    stats = CorpusStats.from_text("the house and the mouse and the horse")
    stats.save(tmp_path / "c.json")
    assert CharLM.from_source(tmp_path / "c.json").num_words == len(stats.word_counts)
    (tmp_path / "w.txt").write_text("house\t3\nmouse\n\nhorse\n", encoding="utf-8")
    assert CharLM.from_source(tmp_path / "w.txt").num_words == 3
    (tmp_path / "empty.txt").write_text("\n--\n", encoding="utf-8")
    with pytest.raises(HwlearnError, match="empty.txt"):
        CharLM.from_source(tmp_path / "empty.txt")
    with pytest.raises(HwlearnError, match="missing.json"):
        CharLM.from_source(tmp_path / "missing.json")


def test_from_source_builds_a_file_once_until_it_changes(tmp_path):
    path = tmp_path / "w.txt"
    path.write_text("house\nmouse\n", encoding="utf-8")
    first = CharLM.from_source(path)
    assert CharLM.from_source(str(path)) is first  # the same file, however named
    assert CharLM.from_source(path, order=3) is not first
    path.write_text("house\nmouse\nhorse\n", encoding="utf-8")
    os.utime(path, ns=(1, 1))  # a new version, even within the file system's time resolution
    changed = CharLM.from_source(path)
    assert changed is not first and changed.num_words == 3


def test_load_charlm_auto_uses_the_pretraining_corpus(tmp_path):
    (tmp_path / "w.txt").write_text("house\nmouse\n", encoding="utf-8")
    ckpt = SimpleNamespace(meta={"synthetic": {"corpus": str(tmp_path / "w.txt")}})
    assert load_charlm("auto", ckpt).num_words == 2
    assert load_charlm("none", ckpt) is None and load_charlm(None, ckpt) is None
    assert load_charlm(tmp_path / "w.txt").num_words == 2
    gone = SimpleNamespace(meta={"synthetic": {"corpus": str(tmp_path / "gone.json")}})
    assert load_charlm("auto", gone) is None  # a checkpoint copied without its corpus: no character model
    with pytest.raises(HwlearnError, match="gone.json"):  # but a file asked for must be there
        load_charlm(tmp_path / "gone.json")
    # a checkpoint from another machine whose corpus was the bundled one: found in this checkout's corpora/
    moved = SimpleNamespace(meta={"synthetic": {"corpus": "/elsewhere/corpora/en_default.json"}})
    assert load_charlm("auto", moved).num_words > 10_000
    # no corpus recorded: the bundled English statistics
    assert load_charlm("auto", SimpleNamespace(meta={})).num_words > 10_000


def test_load_charlm_mixes_in_an_adapted_models_readings(tmp_path):
    from hwlearn.recipes import DOMAIN_WEIGHT

    (tmp_path / "w.txt").write_text("Strafe\nStraße\nHaus\n", encoding="utf-8")
    corpus = {"synthetic": {"corpus": str(tmp_path / "w.txt")}}
    plain = load_charlm("auto", SimpleNamespace(meta=corpus))
    adapted = load_charlm("auto", SimpleNamespace(meta={**corpus, "domain_words": {"Straße": 40, "Am Haus": 2}}))
    assert isinstance(adapted, MixedCharLM) and adapted.weight == DOMAIN_WEIGHT
    # the archive writes Straße, not Strafe: the adapted model's reading prefers it more
    assert adapted.score("Straße") - adapted.score("Strafe") > plain.score("Straße") - plain.score("Strafe")
    assert not isinstance(load_charlm("auto", SimpleNamespace(meta={**corpus, "domain_words": {}})), MixedCharLM)
    assert load_charlm("none", SimpleNamespace(meta={**corpus, "domain_words": {"Straße": 1}})) is None
    # with a lexicon the callers leave them out
    assert not isinstance(load_charlm("auto", SimpleNamespace(meta={**corpus, "domain_words": {"Straße": 1}}),
                                      domain=False), MixedCharLM)


def test_charlm_decode_corrects_a_misspelling_but_keeps_unknown_words():
    lm = CharLM(WORDS)
    # the writer's "o" looks like an "a": P(a) = 0.55, P(o) = 0.35 at that frame
    lp, lengths = _log_probs(_rows("hh_a_u_ss_e", p=0.9, alt={3: {"o": 0.35}}))
    assert CHARSET.decode(greedy_decode(lp, lengths)[0]) == "hause"
    assert CHARSET.decode(charlm_decode(lp, lengths, lm, CHARSET)[0]) == "house"
    # open vocabulary: a clearly written word the corpus never saw comes out as written
    lp, lengths = _log_probs(_rows("m_a_r_s_h", p=0.95))
    assert CHARSET.decode(charlm_decode(lp, lengths, lm, CHARSET)[0]) == "marsh"
    # weight 0 is the image alone
    lp, lengths = _log_probs(_rows("hh_a_u_ss_e", p=0.9, alt={3: {"o": 0.35}}))
    assert CHARSET.decode(charlm_decode(lp, lengths, lm, CHARSET, weight=0.0, bonus=0.0)[0]) == "hause"


@pytest.mark.parametrize("workers", [1, 2])
def test_search_pool_decodes_with_its_own_character_model_weight(workers):
    from hwlearn.inference import SearchPool

    lm = CharLM(WORDS)
    lp, lengths = _log_probs(_rows("hh_a_u_ss_e", p=0.9, alt={3: {"o": 0.35}}))
    read = {}
    for weight in (0.0, LM_WEIGHT):
        with SearchPool(CHARSET, None, lm, 10, workers=workers, lm_weight=weight) as pool:
            read[weight] = CHARSET.decode(pool.submit("charlm", lp, lengths).result()[0][0])
    assert read == {0.0: "hause", LM_WEIGHT: "house"}  # weight 0: the image alone


def test_reading_weighs_the_character_model_more_when_it_knows_the_archive():
    from hwlearn.inference import SearchPool, predictions_by_method
    from hwlearn.recipes import reading_lm_weight

    lm = CharLM(WORDS)
    adapted = MixedCharLM(lm, CharLM({"house": 3}, lm.order, counted=True), 0.2)
    lexicon = Lexicon(WORDS, CHARSET)
    assert reading_lm_weight(None, None) == reading_lm_weight(None, lm) == LM_WEIGHT
    assert reading_lm_weight(lexicon, lm) == reading_lm_weight(None, adapted) == ARCHIVE_LM_WEIGHT > LM_WEIGHT
    # a pool made for another weight is refused rather than silently used
    with SearchPool(CHARSET, None, lm, 10, workers=1, lm_weight=ARCHIVE_LM_WEIGHT) as pool:
        with pytest.raises(ValueError, match="weight"):
            predictions_by_method(torch.nn.Identity(), [[]], CHARSET, ["charlm"], charlm=lm, pool=pool)


def _label_probs(probs: np.ndarray) -> dict[tuple[int, ...], float]:
    """``{labeling: its CTC probability}`` for frames ``probs`` ``(T, C)``, by brute force over all paths."""
    frames, classes = probs.shape
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(classes), repeat=frames):
        label = tuple(k for i, k in enumerate(path) if k != 0 and (i == 0 or path[i - 1] != k))
        out[label] = out.get(label, 0.0) + float(np.prod(probs[np.arange(frames), path]))
    return out


def test_charlm_decode_without_the_model_is_the_most_probable_labeling():
    # weight 0 and no bonus: a plain CTC prefix beam search; wide enough, it finds the labeling
    # with the highest probability summed over its alignments (brute force over all paths)
    lm = CharLM(["ab"])
    charset = Charset("ab")
    rng = np.random.default_rng(1)
    for _ in range(5):
        probs = rng.dirichlet(np.ones(3) * 0.7, size=5)
        truth = _label_probs(probs)
        lp = torch.tensor(np.log(probs), dtype=torch.float32)[:, None, :]
        got = charlm_decode(lp, [5], lm, charset, weight=0.0, bonus=0.0, beam_width=64, min_prob=0.0)
        assert got == [list(max(truth, key=truth.get))]
        assert got == beam_search(lp, [5], beam_width=64, min_prob=0.0)


def test_states_carry_what_the_model_needs_of_a_text():
    lm = CharLM(WORDS, suffixes={".": 0.1})
    for text in ("", "house rose", "hou-", "mouser.", "a-b c", "zz"):
        state = lm.state("")
        for ch in text:
            state = lm.advance(state, ch)
        assert state == lm.state(text)
        assert lm.end_step_log_prob(state) == lm.end_log_prob(text)
        assert lm.step_log_prob(state, "s") == lm.log_prob(text, "s")


def test_charlm_decode_is_the_best_text_under_its_score():
    # a beam wide enough to keep every prefix finds the text with the best
    # log P_ctc(text) + weight * log P_lm(text) + bonus * len(text) (brute force over all paths)
    lm = CharLM(["ab", "ba", "abba", "b"], order=3)
    charset = Charset("ab-")
    rng = np.random.default_rng(2)
    for _ in range(5):
        probs = rng.dirichlet(np.ones(4) * 0.7, size=4)
        ctc = _label_probs(probs)
        def total(label):
            return math.log(ctc[label]) + 0.3 * lm.score(charset.decode(label)) + 1.0 * len(label)
        lp = torch.tensor(np.log(probs), dtype=torch.float32)[:, None, :]
        got = charlm_decode(lp, [4], lm, charset, weight=0.3, bonus=1.0, beam_width=128, min_prob=0.0)
        assert got == [list(max(ctc, key=total))]


def _every_child_search(frames, lm, chars, weight, bonus, beam_width):
    """The prefix beam search of ``charlm_decode``, written plainly: every child of every text of
    the beam is scored and merged, the ``beam_width`` best texts go on, and the best at the end
    (end-of-text probability included) is returned."""
    def add(a, b):
        return float(np.logaddexp(a, b))

    beams = {"": (0.0, -math.inf, 0)}  # text -> (P ending in blank, P ending in its last class, that class)
    for row in frames:
        grown = {}
        for text, (pb, pnb, last) in beams.items():
            total = add(pb, pnb)
            entry = grown.setdefault(text, [-math.inf, -math.inf, last])
            entry[0] = add(entry[0], total + row[0])
            if last:
                entry[1] = add(entry[1], pnb + row[last])
            for c in range(1, len(row)):
                score = (pb if c == last else total) + row[c] + weight * lm.log_prob(text, chars[c]) + bonus
                child = grown.setdefault(text + chars[c], [-math.inf, -math.inf, c])
                child[1] = add(child[1], score)
        best = sorted(grown, key=lambda t: -add(grown[t][0], grown[t][1]))[:beam_width]
        beams = {t: tuple(grown[t]) for t in best}
    return max(beams, key=lambda t: add(beams[t][0], beams[t][1]) + weight * lm.end_log_prob(t))


def test_charlm_decode_with_a_narrow_beam_keeps_what_scoring_every_child_keeps():
    # the decoder skips the children that cannot reach the beam; with a beam narrower than the
    # children of one frame (where it skips most) it still reads what the plain search reads
    lm = CharLM(["abba", "baab", "ab-ba", "b"], order=3)
    charset = Charset("ab-")
    chars = [""] + [charset.decode([c]) for c in range(1, charset.num_classes)]
    rng = np.random.default_rng(3)
    for trial in range(30):
        probs = rng.dirichlet(np.ones(4) * 0.4, size=10)
        lp = np.log(probs)
        width = 2 + trial % 3
        got = charlm_decode(torch.tensor(lp, dtype=torch.float32)[:, None, :], [10], lm, charset, weight=0.3,
                            bonus=1.0, beam_width=width, min_prob=0.0)
        expected = _every_child_search(lp.astype(np.float32).astype(np.float64), lm, chars, 0.3, 1.0, width)
        assert charset.decode(got[0]) == expected


def test_decode_batch_charlm():
    lm = CharLM(WORDS)
    lp1, _ = _log_probs(_rows("hh_a_u_ss_e", p=0.9, alt={3: {"o": 0.35}}))
    lp2, _ = _log_probs(_rows("mm_o_u_s_ee", p=0.95))
    lp = torch.cat([lp1, lp2], dim=1)
    preds = decode_batch(lp, torch.tensor([11, 11]), CHARSET, "charlm", charlm=lm)
    assert [p.text for p in preds] == ["house", "mouse"]
    # the confidence is the image's (CTC) probability of the chosen text: lower than greedy's "hause"
    greedy = decode_batch(lp, torch.tensor([11, 11]), CHARSET)
    assert 0.0 < preds[0].confidence < greedy[0].confidence
    with pytest.raises(HwlearnError, match="needs a character model"):
        decode_batch(lp, torch.tensor([11, 11]), CHARSET, "charlm")


def test_word_keys_are_lowercase_words_without_their_punctuation():
    assert word_keys("Fort, Cumber-") == ["fort", "cumber"]
    assert word_keys('"Sir." (the') == ["sir", "the"]
    assert word_keys("Groß-Köris") == ["groß", "köris"] and word_keys(" , ") == []
    lexicon = Lexicon(["Sir.", "the", "Fort"], CHARSET_WITH_MARKS)
    assert lexicon.word_keys == {"sir", "the", "fort"}


CHARSET_WITH_MARKS = Charset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,-")


def test_charlm_decode_favours_the_lexicon_words_but_keeps_open_vocabulary():
    lm = CharLM(WORDS)
    # "a" (0.55) over "o" (0.35), and the character model left out (weight 0): the image alone reads "hause"
    lp, lengths = _log_probs(_rows("hh_a_u_ss_e", p=0.9, alt={3: {"o": 0.35}}))
    alone = charlm_decode(lp, lengths, lm, CHARSET, weight=0.0, bonus=0.0)
    assert CHARSET.decode(alone[0]) == "hause"
    # a listed word close to what the image shows wins ...
    got = charlm_decode(lp, lengths, lm, CHARSET, weight=0.0, bonus=0.0, words=frozenset({"house"}))
    assert CHARSET.decode(got[0]) == "house"
    assert charlm_decode(lp, lengths, lm, CHARSET, weight=0.0, bonus=0.0, words=frozenset({"house"}),
                         word_bonus=0.0) == alone
    # ... but not against a clearly written word the list lacks
    lp, lengths = _log_probs(_rows("m_a_r_s_h", p=0.95))
    got = charlm_decode(lp, lengths, lm, CHARSET, words=frozenset({"march", "mars"}))
    assert CHARSET.decode(got[0]) == "marsh"


def test_decode_batch_charlm_favours_the_lexicon_given():
    lm = CharLM(["hause", "house"])  # spells both: the image decides, and it prefers "hause"
    lp, lengths = _log_probs(_rows("hh_a_u_ss_e", p=0.9, alt={3: {"o": 0.35}}))
    assert decode_batch(lp, lengths, CHARSET, "charlm", charlm=lm)[0].text == "hause"
    lexicon = Lexicon(["house", "mouse"], CHARSET)
    assert decode_batch(lp, lengths, CHARSET, "charlm", charlm=lm, lexicon=lexicon)[0].text == "house"


def test_reading_rule_character_model_first_then_lexicon():
    lm, lexicon = CharLM(WORDS), Lexicon(["house"], CHARSET)
    assert reading_method(lexicon, lm) == "charlm"  # favouring the lexicon's words (decode_batch)
    assert reading_method(lexicon, None) == "lexicon"  # --char-lm none: constrained to the words
    assert reading_method(None, lm) == "charlm" and reading_method(None, None, default="beam") == "beam"


def test_counted_model_counts_words_as_often_as_they_occur():
    types = CharLM({"rose": 1, "ruse": 1})
    assert types.score("rose") == pytest.approx(types.score("ruse"))
    # counted=False (a corpus's word counts): every word counts once, whatever its count
    assert CharLM({"rose": 9, "ruse": 1}).score("rose") == pytest.approx(types.score("rose"))
    counted = CharLM({"rose": 9, "ruse": 1, "New York": 2}, counted=True)
    assert counted.score("rose") > counted.score("ruse")
    assert counted.num_words == 4
    with pytest.raises(ValueError):
        CharLM(["rose"], counted=True)


def test_mixed_model_is_a_distribution_between_its_two_models():
    base = CharLM(WORDS, order=3)
    domain = CharLM({"mouse": 20, "house": 1}, order=3, counted=True)
    mixed = MixedCharLM(base, domain, 0.3)
    seen = sorted({ch for w in WORDS for ch in w})
    for text in ("", "mo", "hous", "mouse "):
        state = mixed.state(text)
        total = (sum(math.exp(mixed.step_log_prob(state, ch)) for ch in [*seen, *SEPARATORS])
                 + math.exp(mixed.end_step_log_prob(state)))
        assert 0.97 <= total <= 1.0
        for ch in seen:
            a, b, m = base.log_prob(text, ch), domain.log_prob(text, ch), mixed.log_prob(text, ch)
            assert min(a, b) - 1e-9 <= m <= max(a, b) + 1e-9
    # what the archive says often becomes likelier than the language alone makes it
    assert mixed.score("mouse") - mixed.score("louse") > base.score("mouse") - base.score("louse")
    assert MixedCharLM(base, domain, 0.0).score("mouse") == pytest.approx(base.score("mouse"))
    with pytest.raises(ValueError):
        MixedCharLM(base, CharLM(WORDS), 0.3)  # orders differ
