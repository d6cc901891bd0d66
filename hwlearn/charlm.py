"""A character n-gram model of how a language spells its words, for open-vocabulary decoding.

A lexicon can only return words it lists; street names, places, people and compounds are mostly
missing from any list. A character model still knows which letter sequences a language writes
("Straße" is likely German, "Staße" and "Stsaße" are not), so it can correct a reading letter by
letter without confining it to known words (:func:`hwlearn.decode.charlm_decode`).

:class:`CharLM` is an interpolated Witten-Bell n-gram model over the *word types* of a corpus
statistics JSON or a word list: every distinct word counts once (the model describes spelling,
not which words are frequent, and a plain word list has no frequencies anyway). Each word is
framed by a start and an end symbol; from a corpus JSON each word is also counted with the
punctuation marks running text attaches to its end (``day,`` ``Sir.``), weighted by how often
they occur. In a text, a space or a hyphen ends a word (probability of the end symbol there,
times :data:`SEPARATOR_SHARE` split evenly between the two separators) and the next word starts
afresh, or the text ends there (:data:`END_AFTER_SEPARATOR`, a line-end hyphenation); the end of
the text after a word is the end symbol times ``1 - SEPARATOR_SHARE``. A character the corpus
never shows (a digit in a word list, a rare mark) gets the small probability :data:`UNSEEN` at
the unigram level, so it is possible but costly. Building from the bundled English corpus takes
~2.5 s, from 356,000 German words ~6 s and ~100 MB.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping

from .charset import normalize
from .errors import HwlearnError

#: n of the n-gram model: a character's probability depends on the 4 before it in its word
ORDER = 5
#: probability that a word ending inside a text is followed by another (then " " or "-" equally)
SEPARATOR_SHARE = 0.5
SEPARATORS = (" ", "-")
#: probability of a character the corpus never shows, at the unigram level
UNSEEN = 1e-4
#: at most this many punctuation marks are modelled at word ends (the most frequent)
MAX_SUFFIXES = 12
#: probability that a text ends right after a separator (a line-end hyphenation: "Alexandri-")
END_AFTER_SEPARATOR = 0.1

_START, _END = "\x02", "\x03"


class _TextScores:
    """What a character model says of whole texts, from its steps: a subclass gives ``state(text)``,
    ``step(state, ch)`` -> ``(log prob, next state)`` and ``end_step_log_prob(state)``."""

    def step_log_prob(self, state: tuple[str, bool], ch: str) -> float:
        """log P(``ch`` follows a text in ``state``)."""
        return self.step(state, ch)[0]

    def log_prob(self, text: str, ch: str) -> float:
        """log P(``ch`` follows ``text``); ``ch`` one character."""
        return self.step_log_prob(self.state(text), ch)

    def end_log_prob(self, text: str) -> float:
        """log P(the text ends after ``text``)."""
        return self.end_step_log_prob(self.state(text))

    def score(self, text: str) -> float:
        """log P(``text``): every character given those before it, then the end."""
        text = normalize(text)
        return sum(self.log_prob(text[:i], ch) for i, ch in enumerate(text)) + self.end_log_prob(text)


#: Character models :meth:`CharLM.from_source` built in this process, by (file, size, modification
#: time, order); the :data:`BUILT_KEPT` latest are kept.
_BUILT: dict[tuple, "CharLM"] = {}
BUILT_KEPT = 4


class CharLM(_TextScores):
    """Character n-gram model of the words in ``words`` (any iterable of strings; duplicates count
    once). ``log_prob(text, ch)`` is log P(ch | text), ``end_log_prob(text)`` log P(text ends).

    ``suffixes`` (``{mark: probability}``, e.g. ``{",": 0.08, ".": 0.04}``) is the punctuation
    attached to a word in running text: each word is counted with each mark at its end, weighted by
    its probability (the rest without), so ``Governor.`` and ``pounds;`` are likely spellings; the
    ``MAX_SUFFIXES`` most probable marks are used. Without it a mark is just a rare character.

    ``counted=True`` (``words`` a mapping text -> count, e.g. the readings of an archive) counts every
    word as often as it occurs instead of once: a model of what *these* texts say most often
    (:class:`MixedCharLM`), not of how a language spells."""

    def __init__(self, words: Iterable[str] | Mapping[str, float], order: int = ORDER,
                 suffixes: Mapping[str, float] | None = None, counted: bool = False):
        if order < 1:
            raise ValueError("order must be >= 1")
        self.order = order
        marks = [(normalize(m), float(p)) for m, p in (suffixes or {}).items()
                 if m and p > 0 and not any(sep in m for sep in SEPARATORS)]  # "--" is a separator's business
        marks = sorted(marks, key=lambda mp: -mp[1])[:MAX_SUFFIXES]
        bare = 1.0 - sum(p for _, p in marks)
        if bare <= 0:
            raise ValueError("suffix probabilities must sum to less than 1")
        pad = _START * (order - 1)
        grams: Counter[str] = Counter()  # n-grams and their (weighted) counts
        endings: Counter[str] = Counter()  # the last order - 1 characters of the words (padded)
        if counted and not isinstance(words, Mapping):
            raise ValueError("counted=True needs a mapping of texts to counts")
        parts: Counter[str] = Counter()  # each word and its weight: 1 per type, or its count
        for raw in words:
            weight = float(words[raw]) if counted else 1.0
            word = normalize(raw.strip())
            for sep in SEPARATORS:  # a listed "Neu-Ulm" or "New York" is spelled as two words
                word = word.replace(sep, " ")
            for part in word.split():
                if counted:
                    parts[part] += weight
                else:
                    parts[part] = 1.0
        for part, weight in parts.items():
            if weight <= 0:
                continue
            body = pad + part
            body_grams = (body[i - k:i + 1] for i in range(order - 1, len(body)) for k in range(order))
            if weight == 1.0:
                grams.update(body_grams)
            else:
                for gram in body_grams:
                    grams[gram] += weight
            endings[body[len(body) - (order - 1):]] += weight
        types = [p for p, w in parts.items() if w > 0]
        if not types:
            raise HwlearnError("character model: no words")
        # n-grams that reach past a word's last letter (into a mark or the end), weighted by the mark
        for ending, n in endings.items():
            for mark, p in [("", bare), *marks]:
                tail = ending + mark + _END
                for i in range(len(ending), len(tail)):
                    for k in range(order):
                        grams[tail[i - k:i + 1]] += n * p
        self.num_words = len(types)
        self.suffixes = dict(marks)
        # per context (the k < order characters before): {next char: weighted count}, total and distinct
        self._next: dict[str, dict[str, float]] = {}
        for gram, n in grams.items():
            self._next.setdefault(gram[:-1], {})[gram[-1]] = n
        self._stats = {ctx: (sum(nxt.values()), len(nxt)) for ctx, nxt in self._next.items()}
        self._cache: dict[tuple[str, str], float] = {}
        self._steps: dict[tuple[tuple[str, bool], str], tuple[float, tuple[str, bool]]] = {}

    @classmethod
    def from_source(cls, source: str | Path, order: int = ORDER) -> "CharLM":
        """From a corpus statistics JSON (its words, and as ``suffixes`` the share of its tokens
        that end in each punctuation mark) or a word list (one word per line, optional
        ``<TAB>count``, which is ignored; no punctuation).

        Built once per file in a process: while the file is unchanged (same size and modification
        time) a second call returns the same model, caches warm (German's 356,000 words take ~7 s
        to count; a benchmark reads with the model six times)."""
        path = Path(source)
        try:
            stat = path.stat()
        except OSError:
            return cls._build(path, order)  # (its error names the file and the problem)
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, order)
        lm = _BUILT.get(key)
        if lm is None:
            lm = cls._build(path, order)
            if len(_BUILT) >= BUILT_KEPT:
                _BUILT.pop(next(iter(_BUILT)))  # the oldest
            _BUILT[key] = lm
        return lm

    @classmethod
    def _build(cls, path: Path, order: int) -> "CharLM":
        from .corpus import CorpusStats, read_wordlist

        try:
            if path.suffix == ".json":
                stats = CorpusStats.load(path)
                return cls(stats.word_counts, order, suffix_shares(stats.affix_counts, stats.tokens))
            return cls(read_wordlist(path), order)
        except HwlearnError as exc:
            raise HwlearnError(f"{path}: {exc}") from None

    def _prob(self, ctx: str, ch: str) -> float:
        """Witten-Bell: P(ch | ctx) = (n(ctx ch) + t(ctx) P(ch | shorter ctx)) / (n(ctx) + t(ctx)),
        n counts and t the number of distinct characters seen after ``ctx``; at the empty
        context the relative frequency of ``ch`` (:data:`UNSEEN` when it was never seen)."""
        key = (ctx, ch)
        p = self._cache.get(key)
        if p is None:
            stats = self._stats.get(ctx)
            if not ctx:  # the unigram level: relative frequency, UNSEEN for a character never seen
                n = self._next[ctx].get(ch, 0)
                p = (1.0 - UNSEEN) * n / stats[0] if n else UNSEEN
            elif stats is None:
                p = self._prob(ctx[1:], ch)
            else:
                total, distinct = stats
                p = (self._next[ctx].get(ch, 0) + distinct * self._prob(ctx[1:], ch)) / (total + distinct)
            self._cache[key] = p
        return p

    def state(self, text: str) -> tuple[str, bool]:
        """What the model remembers of ``text``: the last ``order - 1`` characters of the word it
        ends in (start-padded) and whether it ends in a separator. Texts with the same state get
        the same probabilities for what follows; decoders carry it along (:meth:`advance`)."""
        start = max(text.rfind(sep) for sep in SEPARATORS) + 1
        k = self.order - 1
        ctx = (_START * k + text[start:])[-k:] if k else ""
        return ctx, bool(text) and text[-1] in SEPARATORS

    def advance(self, state: tuple[str, bool], ch: str) -> tuple[str, bool]:
        """The state of a text with state ``state`` followed by the character ``ch``."""
        k = self.order - 1
        if ch in SEPARATORS:
            return _START * k, True
        return ((state[0] + ch)[-k:] if k else ""), False

    def step(self, state: tuple[str, bool], ch: str) -> tuple[float, tuple[str, bool]]:
        """``(log P(ch follows a text in state), the state after ch)`` (cached): one step of a decoder."""
        key = (state, ch)
        v = self._steps.get(key)
        if v is None:
            ctx, after_separator = state
            p = self._prob(ctx, _END) * SEPARATOR_SHARE / len(SEPARATORS) if ch in SEPARATORS else self._prob(ctx, ch)
            if after_separator:  # the text might have ended there instead
                p *= 1.0 - END_AFTER_SEPARATOR
            v = self._steps[key] = (math.log(p), self.advance(state, ch))
        return v

    def end_step_log_prob(self, state: tuple[str, bool]) -> float:
        """log P(a text in ``state`` ends)."""
        ctx, after_separator = state
        if after_separator:
            return math.log(END_AFTER_SEPARATOR)
        return math.log(self._prob(ctx, _END) * (1.0 - SEPARATOR_SHARE))


class MixedCharLM(_TextScores):
    """``(1 - weight) * base + weight * domain``: a language's character model (:class:`CharLM`) with
    a model of what one archive says (a ``counted`` :class:`CharLM` of its readings) mixed in, per
    character; same interface and states as a :class:`CharLM` (both need the same ``order``)."""

    def __init__(self, base: CharLM, domain: CharLM, weight: float):
        if base.order != domain.order:
            raise ValueError("the two character models need the same order")
        if not 0.0 <= weight <= 1.0:
            raise ValueError("weight must be in [0, 1]")
        self.base, self.domain, self.weight = base, domain, float(weight)
        self.order, self.num_words, self.suffixes = base.order, base.num_words, base.suffixes
        self._steps: dict = {}

    def _mix(self, a: float, b: float) -> float:
        return math.log((1.0 - self.weight) * math.exp(a) + self.weight * math.exp(b))

    def state(self, text: str) -> tuple[str, bool]:
        return self.base.state(text)

    def advance(self, state: tuple[str, bool], ch: str) -> tuple[str, bool]:
        return self.base.advance(state, ch)

    def step(self, state: tuple[str, bool], ch: str) -> tuple[float, tuple[str, bool]]:
        key = (state, ch)
        v = self._steps.get(key)
        if v is None:
            a, after = self.base.step(state, ch)
            v = self._steps[key] = (self._mix(a, self.domain.step(state, ch)[0]), after)
        return v

    def end_step_log_prob(self, state: tuple[str, bool]) -> float:
        return self._mix(self.base.end_step_log_prob(state), self.domain.end_step_log_prob(state))


def suffix_shares(affix_counts: Mapping[tuple[str, str], int], tokens: int) -> dict[str, float]:
    """``{suffix: share of the tokens that end in it}`` from a corpus's ``(prefix, suffix) -> count``."""
    shares: dict[str, float] = {}
    for (_, suffix), count in affix_counts.items():
        if suffix and tokens > 0:
            shares[suffix] = shares.get(suffix, 0.0) + count / tokens
    return shares
