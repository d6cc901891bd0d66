"""Tests of hwlearn.corpus (statistics, word lists, sampler, save/load) and `hwlearn corpus`."""

from __future__ import annotations

import json
import pickle
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner

from hwlearn.charset import Charset
from hwlearn.cli import main
from hwlearn.corpus import (
    FORMAT,
    CorpusStats,
    WordSampler,
    case_class,
    floor_char_shares,
    load_default_corpus,
    read_wordlist,
    strip_gutenberg,
    tokenize,
)
from hwlearn.errors import HwlearnError

TEXT = """The cat sat on the mat. The CAT didn't see the well-known dog;
(the dog) said: "Sir, 3.50 is too much!" On 12/3/1790 the dog ate 3 bones.
"""

LOWER = "abcdefghijklmnopqrstuvwxyz"


def words_stats(counts: dict[str, int]) -> CorpusStats:
    stats = CorpusStats()
    stats.add_words(counts, source="test")
    return stats


# ---- tokenizing and counting ---------------------------------------------------------------


def test_tokenize_keeps_inner_apostrophes_hyphens_and_numbers():
    assert tokenize("don't stop, well-known o'clock -- 'Tis 3.50 12/3/1790 3rd _it_ U.S.") == [
        "don't", "stop", "well-known", "o'clock", "Tis", "3.50", "12/3/1790", "3rd", "it", "U", "S",
    ]


def test_counts_of_a_known_text():
    stats = CorpusStats.from_text(TEXT, source="t.txt")
    expected = Counter(
        "The cat sat on the mat The CAT didn't see the well-known dog the dog said Sir 3.50 is too much "
        "On 12/3/1790 the dog ate 3 bones".split()
    )
    assert stats.word_counts == expected
    assert stats.tokens == 28
    assert stats.types == len(expected) == 22
    assert stats.word_counts["the"] == 4 and stats.word_counts["The"] == 2  # case is kept
    assert stats.length_counts[3] == sum(c for w, c in expected.items() if len(w) == 3)
    assert stats.char_counts["t"] == sum(w.count("t") * c for w, c in expected.items())
    assert stats.char_counts["'"] == 1 and stats.char_counts["-"] == 1
    assert stats.sources == ["t.txt"]
    assert stats.coverage(1) == pytest.approx(4 / 28)
    assert stats.most_common(2) == [("the", 4), ("dog", 3)]


def test_case_statistics():
    assert [case_class(w) for w in ["day", "3rd", "Sir", "I", "UK", "McDonald", "1784", "Well-known"]] == [
        "lower", "lower", "capitalized", "capitalized", "upper", "mixed", "uncased", "capitalized",
    ]
    stats = CorpusStats.from_text(TEXT)
    # capitalized: The x2, Sir, On; upper: CAT; uncased: 3.50, 12/3/1790, 3
    assert stats.case_counts == Counter(lower=20, capitalized=4, upper=1, uncased=3)
    assert stats.case_shares()["lower"] == pytest.approx(20 / 28)


def test_attached_punctuation_is_counted():
    stats = CorpusStats.from_text(TEXT)
    assert stats.affix_counts == Counter(
        {("", "."): 2, ("", ";"): 1, ("(", ""): 1, ("", ")"): 1, ("", ":"): 1, ('"', ","): 1, ("", '!"'): 1}
    )
    assert stats.affixed_tokens == 8


def test_gutenberg_boilerplate_is_excluded():
    book = (
        "The Project Gutenberg eBook of Something\nLicense license license\n"
        "*** START OF THE PROJECT GUTENBERG EBOOK SOMETHING ***\n"
        "Call me Ishmael.\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK SOMETHING ***\nMore license text here.\n"
    )
    assert CorpusStats.from_text(book).word_counts == Counter(Call=1, me=1, Ishmael=1)
    old_style = "Call me Ishmael.\nEnd of Project Gutenberg's Moby Dick\nDonate today.\n"
    assert tokenize(strip_gutenberg(old_style)) == ["Call", "me", "Ishmael"]
    assert strip_gutenberg("no markers here") == "no markers here"


def test_paths_directories_recursively(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("one two two", encoding="utf-8")
    (tmp_path / "sub" / "b.md").write_text("three", encoding="utf-8")
    (tmp_path / "sub" / "img.png").write_bytes(b"\x89PNG\x00\x00data")
    (tmp_path / ".hidden.txt").write_text("secret", encoding="utf-8")
    stats = CorpusStats.from_paths([tmp_path])
    assert stats.word_counts == Counter(one=1, two=2, three=1)
    assert sorted(stats.sources) == ["a.txt", "b.md"]


# ---- word lists ----------------------------------------------------------------------------


def test_wordlist_with_and_without_counts(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("Apfel\nBirne\n\nApfel\n--\n", encoding="utf-8")
    assert read_wordlist(plain) == Counter(Apfel=2, Birne=1)
    counted = tmp_path / "counted.tsv"
    counted.write_text("the\t100\nStraße\t7\nwell-known\t3\n", encoding="utf-8")
    stats = CorpusStats.from_wordlist(counted)
    assert stats.word_counts == Counter({"the": 100, "Straße": 7, "well-known": 3})
    assert stats.tokens == 110
    assert stats.case_counts == Counter(lower=103, capitalized=7)
    assert "ß" in stats.charset


def test_wordlist_bad_count_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("the\t100\nof\tmany\n", encoding="utf-8")
    with pytest.raises(HwlearnError, match=r"bad\.tsv:2: count 'many'"):
        read_wordlist(bad)


def test_merge_and_prune():
    a = words_stats({"the": 5, "cat": 1})
    b = words_stats({"the": 2, "dog": 3})
    merged = a.merge(b)
    assert merged.word_counts == Counter(the=7, dog=3, cat=1)
    assert merged.tokens == 11
    pruned = merged.pruned(min_count=2)
    assert pruned.word_counts == Counter(the=7, dog=3)
    assert pruned.tokens == 11 and pruned.coverage(1) == pytest.approx(7 / 11)
    assert merged.pruned(max_types=1).word_counts == Counter(the=7)


# ---- save / load ---------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    stats = CorpusStats.from_text(TEXT + " Straße café", source="t.txt")
    path = tmp_path / "stats.json"
    stats.save(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["format"] == FORMAT and doc["version"] == 1
    assert list(doc["word_counts"])[:2] == ["the", "dog"]  # sorted by count
    loaded = CorpusStats.load(path)
    assert loaded == stats
    assert loaded.path == path and loaded.name == str(path)


def test_load_rejects_unknown_format(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else", "version": 1}), encoding="utf-8")
    with pytest.raises(HwlearnError, match="other.json: not a hwlearn corpus statistics file"):
        CorpusStats.load(other)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(HwlearnError, match="broken.json: not JSON"):
        CorpusStats.load(broken)


def test_load_default_corpus(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere.json"
    monkeypatch.setenv("HWLEARN_CORPUS", str(missing))
    with pytest.raises(HwlearnError, match="nowhere.json"):
        load_default_corpus()
    words_stats({"hello": 2}).save(missing)
    assert load_default_corpus().word_counts == Counter(hello=2)


def test_bundled_default_corpus_loads(monkeypatch):
    monkeypatch.delenv("HWLEARN_CORPUS", raising=False)
    stats = load_default_corpus()
    assert stats.tokens > 1_000_000 and stats.types > 20_000
    assert stats.most_common(1)[0][0] == "the"


# ---- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("empty.txt", b"", "empty file"),
        ("blank.txt", b"  \n\n", "empty file"),
        ("image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
        ("latin1.txt", "café olé".encode("latin-1"), "not UTF-8"),
        ("punct.txt", b"... -- !!! ???", "no words found"),
    ],
)
def test_bad_text_files_raise_with_path(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(HwlearnError, match=problem) as info:
        CorpusStats.from_paths([path])
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_and_empty_paths_raise(tmp_path):
    with pytest.raises(HwlearnError, match="nope.txt: no such file"):
        CorpusStats.from_paths([tmp_path / "nope.txt"])
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(HwlearnError, match="empty_dir: no text files"):
        CorpusStats.from_paths([tmp_path / "empty_dir"])
    with pytest.raises(HwlearnError, match="empty path"):
        CorpusStats.from_paths([""])
    with pytest.raises(HwlearnError, match="words.txt: no such file"):
        CorpusStats.from_wordlist(tmp_path / "words.txt")


def test_sampler_with_charset_covering_no_word_raises(tmp_path):
    path = tmp_path / "stats.json"
    words_stats({"hello": 3, "world": 1}).save(path)
    with pytest.raises(HwlearnError, match="stats.json: no word fits the charset"):
        WordSampler(CorpusStats.load(path), Charset("xyz"))


# ---- sampling ------------------------------------------------------------------------------


def plain_sampler(stats, **kw):
    """A sampler without numbers, dates, punctuation or re-casing."""
    shares = dict(number_share=0.0, date_share=0.0, punct_share=0.0, case_share=0.0)
    return WordSampler(stats, **{**shares, **kw})


def test_sampler_filters_to_charset_and_max_len():
    stats = words_stats({"hello": 50, "Hello": 20, "naïve": 10, "x-ray": 5, "abracadabra": 5, "day": 30})
    stats.affix_counts.update({("", ","): 10, ("(", ""): 5})
    charset = Charset(LOWER)
    sampler = WordSampler(stats, charset, max_len=8, punct_share=0.5, number_share=0.2, date_share=0.2)
    assert sampler.vocabulary == ["hello", "day"]  # most frequent first
    words = sampler.sample_many(2000, np.random.default_rng(0))
    assert set(words) <= {"hello", "day"}  # no digits, no punctuation: the charset has none


def test_sampling_follows_temperature():
    stats = words_stats({"alpha": 900, "beta": 100})
    for temperature, expected in [(1.0, 9.0), (2.0, 3.0), (1000.0, 1.0)]:
        sampler = plain_sampler(stats, temperature=temperature)
        counts = Counter(sampler.sample_many(20000, np.random.default_rng(1)))
        ratio = counts["alpha"] / counts["beta"]
        assert ratio == pytest.approx(expected, rel=0.1), (temperature, ratio)


def test_number_date_and_punctuation_shares():
    stats = CorpusStats.from_text("A day, the dog. Sir; well: (the the the" * 20)
    sampler = WordSampler(
        stats, Charset(LOWER + LOWER.upper() + "0123456789.,;:()/-"),
        number_share=0.2, date_share=0.1, punct_share=0.3, case_share=0.0,
    )
    n = 5000
    words = sampler.sample_many(n, np.random.default_rng(2))
    vocab = set(sampler.vocabulary)
    numeric = [w for w in words if any(ch.isdigit() for ch in w)]
    assert len(numeric) / n == pytest.approx(0.3, abs=0.03)
    punctuated = [w for w in words if w.strip(".,;:()") in vocab and w.strip(".,;:()") != w]
    assert len(punctuated) / (n - len(numeric)) == pytest.approx(0.3, abs=0.03)
    affixes = {(w[: len(w) - len(w.lstrip(".,;:()"))], w[len(w.rstrip(".,;:()")):]) for w in punctuated}
    assert affixes <= set(stats.affix_counts)  # only punctuation seen in the corpus
    assert any("/" in w for w in numeric) and any("." in w for w in numeric)


def test_case_variation_and_determinism():
    stats = words_stats({"london": 100, "Paris": 100, "ROME": 1})
    sampler = plain_sampler(stats, case_share=1.0)
    words = sampler.sample_many(3000, np.random.default_rng(3))
    assert {"London", "paris", "LONDON"} <= set(words)
    assert sampler.sample_many(50, np.random.default_rng([7, 1])) == sampler.sample_many(
        50, np.random.default_rng([7, 1])
    )


def test_phrases_join_words_with_space_or_hyphen_within_max_len():
    stats = words_stats({"an": 50, "der": 50, "kirche": 30, "weg": 30})
    charset = Charset(LOWER + " -")
    sampler = plain_sampler(stats, charset=charset, phrase_share=0.4, max_len=12)
    words = sampler.sample_many(4000, np.random.default_rng(4))
    phrases = [w for w in words if " " in w or "-" in w]
    assert len(phrases) / len(words) == pytest.approx(0.4, abs=0.04)
    assert any(" " in w for w in phrases) and any("-" in w for w in phrases)
    assert any(w.count(" ") + w.count("-") == 2 for w in phrases)  # sometimes three words
    assert all(len(w) <= 12 for w in words)
    assert all(part in sampler.vocabulary for w in phrases for part in w.replace("-", " ").split(" "))
    # without a joiner in the charset there are no phrases
    no_joiners = plain_sampler(stats, charset=Charset(LOWER), phrase_share=0.9)
    assert all(w in no_joiners.vocabulary for w in no_joiners.sample_many(500, np.random.default_rng(4)))


def test_line_break_parts_are_first_parts_of_words_with_a_hyphen():
    stats = words_stats({"immediately": 50, "particular": 50, "the": 80, "of": 60})
    charset = Charset(LOWER + "-")
    sampler = plain_sampler(stats, charset=charset, break_share=0.3)
    words = sampler.sample_many(4000, np.random.default_rng(5))
    parts = [w for w in words if w.endswith("-")]
    long_draws = sum(w.rstrip("-") in ("immediately", "particular") or w.endswith("-") for w in words)
    assert len(parts) / long_draws == pytest.approx(0.3, abs=0.04)  # words of 4+ letters only
    cuts = {(w, v) for w in parts for v in ("immediately", "particular") if v.startswith(w[:-1])}
    assert cuts and all(2 <= len(w) - 1 <= len(v) - 2 for w, v in cuts)  # two or more letters on each line
    assert len({w for w in parts}) > 10  # every place to break is drawn
    assert not any(w.rstrip("-") in ("the", "of") and w.endswith("-") for w in words)
    # without a hyphen in the charset, or by default, there are none
    assert not any(w.endswith("-") for w in plain_sampler(stats, charset=Charset(LOWER), break_share=0.9)
                   .sample_many(500, np.random.default_rng(5)))
    assert not any(w.endswith("-") for w in plain_sampler(stats, charset=charset).sample_many(500, np.random.default_rng(5)))


def test_capital_share_writes_that_share_of_lower_case_draws_with_a_capital():
    stats = words_stats({"thoroughly": 50, "the": 80, "of": 60, "Sir": 30, "42": 20})
    charset = Charset(LOWER + "ST42-")  # capitals of s and t only
    sampler = plain_sampler(stats, charset=charset, break_share=0.2)
    with_capitals = sampler.with_capital_share(0.5)
    plain = [sampler.sample(np.random.default_rng([6, i])) for i in range(4000)]  # (one generator per draw, as
    capped = [with_capitals.sample(np.random.default_rng([6, i])) for i in range(4000)]  # SyntheticWords draws)
    assert sampler.capital_share == 0.0  # (a copy)
    assert [w.lower() for w in capped] == [w.lower() for w in plain]  # the same draws, only the first letter changed
    changed = [(p, c) for p, c in zip(plain, capped) if p != c]
    assert all(c == c[0].upper() + p[1:] for p, c in changed)
    assert {c[0] for _, c in changed} == {"T"}  # the charset has no I or O
    assert any(c.endswith("-") for _, c in changed)  # line-break parts too
    startable = sum(w[0] == "t" for w in plain)
    assert len(changed) / startable == pytest.approx(0.5, abs=0.05)
    assert "Sir" in capped and "42" in capped  # what starts otherwise stays
    # 0 draws what the sampler drew without the option
    assert [sampler.with_capital_share(0.0).sample(np.random.default_rng([6, i])) for i in range(50)] == plain[:50]
    with pytest.raises(HwlearnError):
        sampler.with_capital_share(1.5)


def test_char_floor_draws_words_with_rare_characters_more_often():
    # 20 words with Ä share 20 of ~2020 draws at temperature 1; a floor of 5 % puts Ä in about 5 %
    # of them, keeps the common words' relative frequencies, and cannot invent a character no
    # word has
    rare = {f"Äpfel{chr(97 + i)}": 1 for i in range(20)}
    stats = words_stats({"apfel": 1000, "arger": 600, "auto": 400, **rare})
    charset = Charset(LOWER + "Ä")
    plain = plain_sampler(stats, charset=charset, temperature=1.0)
    floored = plain_sampler(stats, charset=charset, temperature=1.0, char_floor=0.05)
    rng = np.random.default_rng(7)
    before = Counter(plain.sample_many(20000, rng))
    after = Counter(floored.sample_many(20000, rng))
    assert sum(before[w] for w in rare) < 280
    assert sum(after[w] for w in rare) / 20000 == pytest.approx(0.05, abs=0.008)
    assert after["apfel"] / after["auto"] == pytest.approx(1000 / 400, rel=0.1)
    assert set(after) == set(stats.word_counts)


def test_floor_char_shares_meets_every_floor_it_can():
    words = ["ab", "ac", "ad", "bx", "yz"]
    weights = np.array([1000.0, 500.0, 200.0, 1.0, 1.0])
    p = floor_char_shares(words, weights, 0.1, min_words=1)
    assert p.sum() == pytest.approx(1.0)
    for ch in "abcdxyz":
        assert sum(pi for w, pi in zip(words, p) if ch in w) >= 0.1 - 1e-3
    assert p[0] > p[1] > p[2]  # the common characters' words keep their order
    with pytest.raises(HwlearnError):
        floor_char_shares(words, weights, 1.0)


def test_floor_char_shares_leaves_a_character_that_few_words_hold():
    # one word with æ is not drawn 10 % of the time: that would repeat the one word, not teach æ
    words = ["Cæsar"] + [f"x{'a' * i}" for i in range(30)] + [f"yb{'a' * i}" for i in range(30)]
    weights = np.array([1.0] + [1000.0] * 30 + [10.0] * 30)
    p = floor_char_shares(words, weights, 0.1, min_words=20)
    assert p[0] == pytest.approx(1.0 / weights.sum(), rel=0.2)
    assert p[31:].sum() >= 0.1 - 1e-3  # y and b, held by 30 words, are raised
    digits = [f"{i},500" for i in range(30)]  # numbers come from the sampler's formats
    p = floor_char_shares(words + digits, np.concatenate([weights, np.ones(30)]), 0.1, min_words=20)
    assert p[61:].sum() == pytest.approx(30 / (weights.sum() + 30), rel=0.2)


def test_sampler_is_picklable():
    stats = CorpusStats.from_text(TEXT * 3)
    sampler = WordSampler(stats)
    clone = pickle.loads(pickle.dumps(sampler))
    assert clone.vocabulary == sampler.vocabulary
    assert clone.sample_many(100, np.random.default_rng(5)) == sampler.sample_many(100, np.random.default_rng(5))


@pytest.mark.parametrize(
    "kwargs", [dict(temperature=0), dict(max_len=0), dict(punct_share=1.5), dict(number_share=0.7, date_share=0.5),
               dict(phrase_share=-0.1), dict(char_floor=1.0), dict(char_floor=-0.01), dict(break_share=1.2),
               dict(capital_share=-0.5)]
)
def test_sampler_rejects_bad_parameters(kwargs):
    with pytest.raises(HwlearnError):
        WordSampler(words_stats({"hello": 1}), **kwargs)


# ---- CLI -----------------------------------------------------------------------------------


def test_cli_end_to_end(tmp_path):
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "one.txt").write_text(TEXT, encoding="utf-8")
    wordlist = tmp_path / "extra.tsv"
    wordlist.write_text("zebra\t4\n", encoding="utf-8")
    out = tmp_path / "stats.json"
    result = CliRunner().invoke(
        main, ["corpus", str(tmp_path / "books"), "--wordlist", str(wordlist), "-o", str(out), "--min-count", "2"]
    )
    assert result.exit_code == 0, result.output
    stats = CorpusStats.load(out)
    assert stats.word_counts == Counter(the=4, zebra=4, dog=3, The=2)
    assert stats.tokens == 32
    assert "tokens" in result.stderr and "32" in result.stderr and "top 10 words cover" in result.stderr


def test_cli_bad_input_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00\x01\x02binary")
    result = CliRunner().invoke(main, ["corpus", str(bad), "-o", str(tmp_path / "o.json")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(bad) in lines[0]
    assert "Traceback" not in result.output and not (tmp_path / "o.json").exists()

    result = CliRunner().invoke(main, ["corpus", "-o", str(tmp_path / "o.json")])
    assert result.exit_code == 2 and "at least one INPUT" in result.stderr


def test_cli_help():
    result = CliRunner().invoke(main, ["corpus", "--help"])
    assert result.exit_code == 0
    for option in ("--output", "--wordlist", "--min-count", "--max-types", "--top"):
        assert option in result.output
