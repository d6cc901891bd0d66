"""Turning CTC posteriors into text: greedy, beam search, lexicon-constrained, and a confidence.

All decoders take the model's output as is: ``log_probs`` ``(T, B, C)`` (log-softmax, class 0 the
CTC blank; a torch tensor on any device or a numpy array) and ``lengths`` ``(B,)`` valid frames per
sample, and return class ids per sample (use :meth:`hwlearn.charset.Charset.decode` for text).

- :func:`greedy_decode`: best path (argmax per frame), repeats collapsed, blanks dropped. Fast; the
  default for training-time validation.
- :func:`beam_search`: CTC prefix beam search, which sums over all alignments of a labeling, so it
  finds labelings whose probability is spread over many paths (greedy can miss them).
- :func:`lexicon_decode`: the same search restricted to a character trie of a word list
  (:class:`Lexicon`); the complete words it meets are rescored by their exact CTC probability and
  the most probable one is returned with its log probability. Useful for pseudo-labels in
  self-training and whenever the vocabulary is known.
- :func:`charlm_decode`: open-vocabulary prefix beam search weighted by a character n-gram model
  of the language (:class:`hwlearn.charlm.CharLM`): any text can come out, but the spellings the
  language uses win over close ones it does not. For names and compounds no lexicon lists. Given
  a lexicon's words too (:attr:`Lexicon.word_keys`), the readings made of them get a bonus: open
  vocabulary that still favours the words of the language.
- :func:`sequence_confidence`: ``exp(-CTC loss / (len(label) + 1))``, the per-symbol geometric mean
  probability the model gives a label (summed over all its alignments), in ``[0, 1]``; a lexicon
  word's confidence is this times its share among the words found (:class:`LexiconMatch`).
- :func:`decode_batch`: one call for evaluate / recognize / self-training, returning
  :class:`Prediction` (text, confidence, ids) per sample; :func:`search` and :func:`scored` are its
  two halves (the search needs no torch, so it can run in worker processes).
- :func:`consensus`: the reading several views of one image (the image and augmented copies of it)
  agree on best, for self-training's pseudo-labels.

Both beam searches prune, per frame, the classes whose probability is below ``min_prob`` (they can
still be used by a hypothesis that already ends in them), and keep the ``beam_width`` best prefixes.
"""

from __future__ import annotations

import heapq
import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Hashable, Iterable, Mapping, NamedTuple, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .charset import BLANK, BREAK_MARK, Charset, normalize
from .errors import HwlearnError

NEG_INF = float("-inf")


def _as_numpy(log_probs, lengths) -> tuple[np.ndarray, list[int]]:
    """``(B, T, C)`` float32 numpy array and plain-int lengths from the ``(T, B, C)`` model output."""
    if isinstance(log_probs, torch.Tensor):
        log_probs = log_probs.detach().float().cpu().numpy()
    lp = np.ascontiguousarray(np.asarray(log_probs, dtype=np.float32).transpose(1, 0, 2))
    lens = [int(n) for n in (lengths.tolist() if hasattr(lengths, "tolist") else lengths)]
    if len(lens) != lp.shape[0]:
        raise ValueError(f"{lp.shape[0]} samples in log_probs but {len(lens)} lengths")
    if any(n < 0 or n > lp.shape[1] for n in lens):
        raise ValueError(f"lengths must be in [0, {lp.shape[1]}] (the number of frames)")
    return lp, lens


# --- greedy -------------------------------------------------------------------------------------


def greedy_decode(log_probs, lengths) -> list[list[int]]:
    """Best-path decoding: the argmax class of each frame, repeats collapsed, blanks dropped."""
    if isinstance(log_probs, torch.Tensor):  # argmax where the tensor lives, move only (B, T)
        best = log_probs.detach().argmax(-1).T.cpu().numpy()
        lens = [int(n) for n in torch.as_tensor(lengths).tolist()]
        if len(lens) != best.shape[0]:
            raise ValueError(f"{best.shape[0]} samples in log_probs but {len(lens)} lengths")
    else:
        lp, lens = _as_numpy(log_probs, lengths)
        best = lp.argmax(-1)
    out = []
    for path, n in zip(best, lens):
        path = path[:n]
        prev = np.concatenate(([BLANK], path[:-1]))
        out.append(path[(path != BLANK) & (path != prev)].tolist())
    return out


# --- prefix beam search (shared by free and lexicon decoding) -----------------------------------


def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


class _PrefixSpace(Protocol):
    """The prefixes a beam search may build: free (any sequence) or a lexicon trie."""

    root: Hashable

    def last(self, prefix) -> int:
        """The prefix's last class (the blank for the root)."""

    def parent(self, prefix) -> Hashable | None:
        """The prefix without its last class (``None`` for the root)."""

    def extend(self, prefix, cands: list[int], row: list[float], floor: float) -> Iterable[tuple[int, Hashable]]:
        """``(c, prefix + c)`` for the allowed classes ``c`` with ``row[c] >= floor``; ``cands``
        are the frame's unpruned classes, most probable first."""


class _FreePrefixes:
    root: tuple[int, ...] = ()

    def last(self, prefix: tuple[int, ...]) -> int:
        return prefix[-1] if prefix else BLANK

    def parent(self, prefix: tuple[int, ...]) -> tuple[int, ...] | None:
        return prefix[:-1] if prefix else None

    def extend(self, prefix, cands, row, floor):
        for c in cands:
            if row[c] < floor:
                break
            yield c, prefix + (c,)


def _prefix_beam_search(
    lp: np.ndarray,
    beam_width: int,
    min_prob: float,
    space: _PrefixSpace,
    visit: Callable[[int, dict], None] | None = None,
) -> list[tuple[Hashable, float]]:
    """CTC prefix beam search over frames ``lp`` ``(T, C)``; returns the final prefixes with their
    total log probabilities, best first.

    Each prefix carries two log probabilities: of all alignments so far that produce it and end in
    a blank (``pb``) or in its last symbol (``pnb``). Per frame a prefix stays (a blank, or a repeat
    of its last symbol) or grows by a symbol ``c``, from ``pb`` only when ``c`` repeats the last
    symbol (CTC merges repeats not separated by a blank). A prefix already in the beam also
    collects the growth of its parent. A new prefix is only created when it beats the
    ``beam_width``-th best score so far, which keeps the search cheap without changing its result.
    ``visit(t, beams)`` (optional) sees the beam ``{prefix: (pb, pnb, total)}`` after frame ``t``.
    """
    if beam_width < 1:
        raise ValueError("beam_width must be >= 1")
    log_min = math.log(min_prob) if min_prob > 0 else NEG_INF
    beams: dict[Hashable, tuple[float, float, float]] = {space.root: (0.0, NEG_INF, 0.0)}
    for t, frame in enumerate(lp):
        row = frame.tolist()
        cands = np.flatnonzero(frame[1:] >= log_min) + 1
        cands = cands[np.argsort(-frame[cands], kind="stable")].tolist()  # most probable first
        blank = row[BLANK]

        # every prefix stays: one more blank, or one more frame of its last symbol
        lasts = {p: space.last(p) for p in beams}
        nxt: dict[Hashable, list[float]] = {}
        for p, (pb, pnb, total) in beams.items():
            last = lasts[p]
            nxt[p] = [total + blank, pnb + row[last] if last != BLANK else NEG_INF]

        # a prefix whose parent is in the beam is also reached by growing the parent
        for p, entry in nxt.items():
            q = space.parent(p)
            if q in beams:
                qpb, _, qtotal = beams[q]
                c = lasts[p]
                entry[1] = _logaddexp(entry[1], (qpb if c == lasts[q] else qtotal) + row[c])
        scores = {p: _logaddexp(pb, pnb) for p, (pb, pnb) in nxt.items()}

        # new prefixes, only those that enter the current best beam_width (a min-heap of scores)
        best = heapq.nlargest(beam_width, scores.values())
        heapq.heapify(best)
        cutoff = best[0] if len(best) == beam_width else NEG_INF
        for p, (pb, _, total) in beams.items():
            if total == NEG_INF:
                continue
            last = lasts[p]
            for c, child in space.extend(p, cands, row, max(log_min, cutoff - total)):
                score = (pb if c == last else total) + row[c]
                if score > cutoff and child not in nxt:
                    nxt[child] = [NEG_INF, score]
                    scores[child] = score
                    if len(best) < beam_width:
                        heapq.heappush(best, score)
                    else:
                        heapq.heapreplace(best, score)
                    if len(best) == beam_width:
                        cutoff = best[0]

        keep = heapq.nlargest(beam_width, scores, key=scores.__getitem__)
        beams = {p: (nxt[p][0], nxt[p][1], scores[p]) for p in keep}
        if visit is not None:
            visit(t, beams)
    return [(p, total) for p, (_, _, total) in beams.items()]


def beam_search(log_probs, lengths, beam_width: int = 10, min_prob: float = 1e-5) -> list[list[int]]:
    """CTC prefix beam search: the most probable labeling found with ``beam_width`` prefixes.

    Per frame only classes with probability >= ``min_prob`` start a new symbol."""
    lp, lens = _as_numpy(log_probs, lengths)
    space = _FreePrefixes()
    return [list(_prefix_beam_search(f[:n], beam_width, min_prob, space)[0][0]) for f, n in zip(lp, lens)]


# --- lexicon ------------------------------------------------------------------------------------


#: Weight of a lexicon's word prior in :func:`lexicon_decode` (1: the Bayes rule, P(image | word) P(word)).
PRIOR_WEIGHT = 1.0
#: Score per character (of a word without its trailing marks) when :func:`lexicon_decode` chooses among the words
#: it found, as :data:`LM_BONUS` in the character model's search: a CTC model's probability of a word falls with
#: each letter it must spike for, so without it a faint last letter loses to the shorter word (GW's `your` read
#: `you`, `If` read `I`). Chosen on GW's *train* labels (benchmarks/EXPERIMENTS.md, session 72).
LENGTH_BONUS = 2.0


class Lexicon:
    """A word list as a character trie over a charset's class ids, for :func:`lexicon_decode`.

    ``words`` is an iterable of words, or a mapping word -> count: then ``log(count / total)`` is
    each word's prior, weighted by ``prior_weight`` when :func:`lexicon_decode` chooses among the
    words it found (a plain iterable gives every word the same prior, i.e. none), which also adds
    ``length_bonus`` per character of each word without its trailing marks. Words are
    NFC-normalized; empty words, duplicates (the first is kept) and words with characters outside
    ``charset`` are dropped (``dropped`` counts the latter). Node 0 is the root; every node is one prefix.

    ``breaks`` (with counted ``words`` only; :func:`hwlearn.recipes.break_parts`) maps first parts
    of words that a hyphenated line break leaves (``immedi`` of ``immedi-``) to counts, on the
    scale of the words' (the total is the words'): :func:`lexicon_decode` also proposes these parts
    followed by :data:`BREAK_MARK`, from a candidate set of their own. Parts that are no prefix of a
    word in the trie are ignored; ``breaks`` is empty when ``charset`` has no :data:`BREAK_MARK`.
    """

    def __init__(self, words: Iterable[str] | Mapping[str, float], charset: Charset,
                 prior_weight: float = PRIOR_WEIGHT, breaks: Mapping[str, float] | None = None,
                 length_bonus: float = LENGTH_BONUS):
        self.charset = charset
        self.prior_weight = float(prior_weight)
        self.length_bonus = float(length_bonus)
        counts = words if isinstance(words, Mapping) else None
        kept_counts: list[float] = []
        self._children: list[dict[int, int]] = [{}]
        self._label: list[int] = [BLANK]  # class of the edge into each node
        self._parent: list[int] = [-1]
        self._word: list[int] = [-1]  # index into self.words of the word ending at each node
        kept: list[str] = []
        self.dropped = 0
        for raw in words:
            word = normalize(raw.strip())
            if not word:
                continue
            if not charset.covers(word):
                self.dropped += 1
                continue
            node = 0
            for c in charset.encode(word):
                child = self._children[node].get(c)
                if child is None:
                    child = len(self._children)
                    self._children[node][c] = child
                    self._children.append({})
                    self._label.append(c)
                    self._parent.append(node)
                    self._word.append(-1)
                node = child
            if self._word[node] < 0:
                self._word[node] = len(kept)
                kept.append(word)
                if counts is not None:
                    kept_counts.append(float(counts[raw]))
        if not kept:
            raise HwlearnError("lexicon: no word is covered by the model's charset")
        self.words: tuple[str, ...] = tuple(kept)
        if counts is not None and min(kept_counts) <= 0:
            raise HwlearnError("lexicon: word counts must be positive")
        #: log prior of each word (index as in ``words``): log(count / total), 0 for a plain list
        self.log_prior = (np.log(np.asarray(kept_counts) / sum(kept_counts)) if counts is not None
                          else np.zeros(len(kept)))
        #: prefix node -> log prior of that prefix followed by BREAK_MARK (see ``breaks``)
        self.breaks: dict[int, float] = {}
        if breaks and BREAK_MARK in charset:
            if counts is None:
                raise HwlearnError("lexicon: line-break parts need counted words")
            total = sum(kept_counts)
            for part, count in breaks.items():
                if count <= 0:
                    raise HwlearnError("lexicon: line-break part counts must be positive")
                node = self._node(normalize(part))
                if node > 0:
                    self.breaks[node] = math.log(count / total)
        self._break_id = charset.encode(BREAK_MARK)[0] if self.breaks else BLANK

    @classmethod
    def from_file(cls, path: str | Path, charset: Charset, prior_weight: float = PRIOR_WEIGHT,
                  length_bonus: float = LENGTH_BONUS) -> "Lexicon":
        """One ``word`` or ``word<TAB>count`` per line (UTF-8, :func:`hwlearn.corpus.read_wordlist`);
        the counts, if any, are the words' prior."""
        from .corpus import read_wordlist

        try:
            return cls(read_wordlist(path), charset, prior_weight, length_bonus=length_bonus)
        except HwlearnError as exc:
            raise HwlearnError(f"{path}: {exc}") from None

    def __len__(self) -> int:
        return len(self.words)

    def _node(self, text: str) -> int:
        """The trie node of the prefix ``text`` (normalized), -1 if the trie has none."""
        node = 0
        for ch in text:
            if ch not in self.charset:
                return -1
            node = self._children[node].get(self.charset.encode(ch)[0], -1)
            if node < 0:
                return -1
        return node

    def __contains__(self, word: str) -> bool:
        node = self._node(normalize(word))
        return node >= 0 and self._word[node] >= 0

    @cached_property
    def word_keys(self) -> frozenset[str]:
        """The lexicon's words as :func:`word_keys` finds them in a text (lowercase, without the
        punctuation around them), for :func:`charlm_decode`'s word bonus."""
        return frozenset(k for w in self.words for k in word_keys(w))

    @property
    def num_nodes(self) -> int:
        return len(self._children)

    def _ids(self, node: int) -> list[int]:
        ids = []
        while node > 0:
            ids.append(self._label[node])
            node = self._parent[node]
        return ids[::-1]

    # the trie as a prefix space for _prefix_beam_search: a prefix is a node index
    root = 0

    def last(self, node: int) -> int:
        return self._label[node]

    def parent(self, node: int) -> int | None:
        return self._parent[node] if node > 0 else None

    def extend(self, node: int, cands: list[int], row: list[float], floor: float):
        children = self._children[node]
        if len(children) <= len(cands):
            return [(c, n) for c, n in children.items() if row[c] >= floor]
        out = []
        for c in cands:
            if row[c] < floor:
                break
            n = children.get(c)
            if n is not None:
                out.append((c, n))
        return out


_TRAILING_MARKS = re.compile(r"[^\w]+$")
#: Line-break parts rescored per sample by :func:`lexicon_decode`, beside the words.
BREAK_CANDIDATES = 8


def _word_body(word: str) -> str:
    """``word`` without its trailing punctuation: ``"day,"`` -> ``"day"``."""
    return _TRAILING_MARKS.sub("", word)


class LexiconMatch(NamedTuple):
    """The best lexicon word for one sample: its class ids, ``log_prob`` = log P(word | image)
    (the exact CTC probability, summed over all alignments) and its text; ``share``: its share of
    the (prior-weighted) probability of all the words the search found, near 1 when no other word
    is a likely reading, 1/2 for a tie with another. The word's forms that differ from it only in
    trailing punctuation count as the word (``day`` with ``day,`` and ``day.``): a mark is a frame
    or two of ink, and an image whose mark is unclear would otherwise score low whichever form
    wins, so self-training would select the marked words less often and unlearn the marks (GW:
    benchmarks/EXPERIMENTS.md, session 46). ``word`` is ``None`` (``ids`` empty, ``log_prob`` -inf,
    ``share`` 0) when no word fits the frames."""

    ids: list[int]
    log_prob: float
    word: str | None
    share: float = 0.0


def lexicon_decode(
    log_probs, lengths, lexicon: Lexicon, beam_width: int = 16, min_prob: float = 1e-6
) -> list[LexiconMatch]:
    """The most probable word of ``lexicon`` for each sample.

    A CTC prefix beam search in which prefixes only grow along the lexicon's trie proposes words:
    every complete word that was in the beam at some frame (the latest and best, at most
    ``max(2 * beam_width, 32)``); these are rescored by their exact CTC probability plus the
    lexicon's ``prior_weight`` times the word's log prior and its ``length_bonus`` times the
    word's length without trailing marks (:class:`Lexicon`), and the best wins.
    When no word was proposed (e.g. every word needs a letter the model gives almost no
    probability), the search is repeated once with a 4x wider beam and no class pruning.

    With line-break parts (:attr:`Lexicon.breaks`) the prefixes of the beam that are such parts
    (the latest and best, at most :data:`BREAK_CANDIDATES`) are rescored too, followed by
    :data:`BREAK_MARK` and with their own prior (``immedi-``). They are a candidate set of their
    own: they take no place from a word in the beam or among the words rescored (as parts in the
    trie did: they crowded whole words out, benchmarks/EXPERIMENTS.md, session 47).
    """
    lp, lens = _as_numpy(log_probs, lengths)
    breaks = lexicon.breaks
    out = []
    for frames, n in zip(lp, lens):
        match = LexiconMatch([], NEG_INF, None)
        for width, floor in ((beam_width, min_prob), (4 * beam_width, 0.0)):
            seen: dict[int, tuple[int, float]] = {}  # word node -> (last frame in beam, score there)
            parts: dict[int, tuple[int, float]] = {}  # the same for line-break parts

            def visit(t: int, beams: dict) -> None:
                for node, (_, _, total) in beams.items():
                    if lexicon._word[node] >= 0:
                        seen[node] = (t, total)
                    if node in breaks:
                        parts[node] = (t, total)

            _prefix_beam_search(frames[:n], width, floor, lexicon, visit)
            nodes = sorted(seen, key=seen.__getitem__, reverse=True)[: max(2 * width, 32)]
            part_nodes = sorted(parts, key=parts.__getitem__, reverse=True)[:BREAK_CANDIDATES]
            if not nodes and not part_nodes:
                continue
            labels = [lexicon._ids(node) for node in nodes] + [lexicon._ids(node) + [lexicon._break_id]
                                                                for node in part_nodes]
            frames_t = torch.from_numpy(frames[:n]).unsqueeze(1).expand(n, len(labels), -1)
            scores = ctc_log_likelihood(frames_t, torch.full((len(labels),), n), labels).tolist()
            word_ids = [lexicon._word[node] for node in nodes]
            priors = np.concatenate([lexicon.log_prior[word_ids], [breaks[node] for node in part_nodes]])
            words = ([lexicon.words[i] for i in word_ids]
                     + [lexicon.charset.decode(ids) for ids in labels[len(nodes):]])
            bodies = [_word_body(w) for w in words]
            # (a line-break part's hyphen counts: it is what the part is read by)
            letters = np.asarray([len(b) for b in bodies[: len(nodes)]]
                                 + [len(ids) for ids in labels[len(nodes):]], dtype=np.float64)
            totals = np.asarray(scores) + lexicon.prior_weight * priors + lexicon.length_bonus * letters
            best = int(np.argmax(totals))
            if scores[best] > NEG_INF:
                rel = np.exp(totals - totals[best])
                share = float(sum(r for r, b in zip(rel, bodies) if b == bodies[best]) / rel.sum())
                match = LexiconMatch(labels[best], scores[best], words[best], share)
                break
        out.append(match)
    return out


# --- character language model -------------------------------------------------------------------

#: Weight of the character model's log probability in :func:`charlm_decode`, and the score bonus per
#: character that offsets its cost (both chosen on DHSD *train* labels: benchmarks/EXPERIMENTS.md).
LM_WEIGHT = 0.3
LM_BONUS = 1.0
#: The weight when reading with a character model that knows the archive's words: a lexicon's words are
#: favoured, or an adapted model's own readings are mixed in (:func:`hwlearn.recipes.reading_lm_weight`).
#: It read the train labels of adapted GW and DHSD models better than :data:`LM_WEIGHT`; a model that
#: knows only the language's spelling (DHSD's fine-tuned one) reads street names worse with it
#: (benchmarks/EXPERIMENTS.md, session 58).
ARCHIVE_LM_WEIGHT = 0.6
#: Score bonus of :func:`charlm_decode` for each word of a reading that the lexicon lists (chosen on GW
#: *train* labels: benchmarks/EXPERIMENTS.md).
WORD_BONUS = 5.0

_WORD_EDGES = "\"'()[],.;:!?-*`"


def word_keys(text: str) -> list[str]:
    """The words of ``text`` as a lexicon is searched for them: split at spaces and hyphens,
    stripped of the punctuation around them, lowercased (``"Fort, Cumber-"`` -> ``["fort",
    "cumber"]``)."""
    keys = (part.strip(_WORD_EDGES).lower() for part in normalize(text).replace("-", " ").split())
    return [k for k in keys if k]


def charlm_decode(
    log_probs, lengths, lm, charset: Charset, weight: float = LM_WEIGHT, bonus: float = LM_BONUS,
    beam_width: int = 10, min_prob: float = 1e-3, words: frozenset[str] | None = None,
    word_bonus: float = WORD_BONUS,
) -> list[list[int]]:
    """Open-vocabulary decoding guided by a character model (:class:`hwlearn.charlm.CharLM`).

    A CTC prefix beam search whose prefixes are texts: a prefix's score is its CTC probability
    times ``P_lm(prefix) ** weight`` times ``exp(bonus * len(prefix))`` (the bonus keeps the model
    from preferring short readings, since every character costs language-model probability); the
    end of the text is scored too. Per frame only classes with probability >= ``min_prob`` start a
    new character. Any text can come out, but spellings the language does not use lose to close
    ones it does ("Staße" -> "Straße").

    With ``words`` (e.g. :attr:`Lexicon.word_keys`) each text left in the beam at the end gains
    ``word_bonus`` for every word of it (:func:`word_keys`) that ``words`` holds: a reading that is
    a known word beats a close one that is not ("tho" -> "the"), yet a clearly written unknown word
    still comes out as written."""
    lp, lens = _as_numpy(log_probs, lengths)
    chars = [""] + [charset.decode([c]) for c in range(1, charset.num_classes)]
    log_min = math.log(min_prob) if min_prob > 0 else NEG_INF
    # Children that cannot reach the beam are skipped, which changes no reading: see below.
    can_skip = weight >= 0 and all(len(ch) == 1 for ch in chars[1:])
    out = []
    for frames, n in zip(lp, lens):
        frames = frames[:n]
        # per frame the classes that may start a new character, most probable first (stable: ties by class)
        symbols = frames[:, 1:]
        at, cls = np.nonzero(symbols >= log_min)
        order = np.lexsort((cls, -symbols[at, cls], at))  # by frame, then probability, then class
        cands_by_frame: list[list[int]] = [[] for _ in range(len(frames))]
        for t, c in zip(at[order].tolist(), (cls[order] + 1).tolist()):
            cands_by_frame[t].append(c)
        # text -> (pb, pnb, last class, LM state, total); a text's LM state is carried, not recomputed
        beams: dict[str, tuple] = {"": (0.0, NEG_INF, BLANK, lm.state(""), 0.0)}
        for row, cands in zip(frames.tolist(), cands_by_frame):
            blank = row[BLANK]
            floor, extends = NEG_INF, {}
            if can_skip and cands and len(beams) >= beam_width:
                # Every text staying in the beam scores at least this much at this frame (merging only
                # adds probability), so ``beam_width`` texts score at least ``floor``: a new text
                # scoring less cannot be kept. Unless it is another beam's text (then it adds to
                # that one's score): ``extends[text]``, the characters that lead to one. (The beam
                # holds ``beam_width`` texts: the floor is the lowest of their scores.)
                floor = min(_logaddexp(total + blank, pnb + row[last] if last != BLANK else NEG_INF)
                            for _, pnb, last, _, total in beams.values())
                for text in beams:
                    if text and text[:-1] in beams:
                        extends.setdefault(text[:-1], set()).add(text[-1])
            grown: dict[str, list] = {}  # text -> [pb, pnb, last class, LM state]
            for text, (pb, pnb, last, state, total) in beams.items():
                stay_pnb = pnb + row[last] if last != BLANK else NEG_INF  # one more frame of the last character
                entry = grown.get(text)
                if entry is None:
                    grown[text] = [total + blank, stay_pnb, last, state]
                else:  # already reached as a child of a shorter text
                    entry[0] = _logaddexp(entry[0], total + blank)
                    entry[1] = _logaddexp(entry[1], stay_pnb)
                kept = extends.get(text, ())
                for c in cands:  # a new character: after a blank only when it repeats the last one
                    if not kept and total + row[c] + bonus < floor:
                        break  # (the candidates come most probable first: no later one reaches the beam)
                    base = (pb if c == last else total) + row[c]
                    if base + bonus < floor and chars[c] not in kept:  # (the character model only lowers it)
                        continue
                    lm_log_prob, child_state = lm.step(state, chars[c])  # cached by the model
                    score = base + (weight * lm_log_prob + bonus)
                    if score < floor and chars[c] not in kept:
                        continue
                    child = text + chars[c]
                    e = grown.get(child)
                    if e is None:
                        grown[child] = [NEG_INF, score, c, child_state]
                    else:
                        e[1] = _logaddexp(e[1], score)
            texts = list(grown)
            scores = [e[1] if e[0] == NEG_INF else _logaddexp(e[0], e[1]) for e in grown.values()]
            # (heapq.nlargest's order, ties kept in order; sorting is faster for a few dozen texts)
            beams = {texts[i]: (*grown[texts[i]], scores[i])
                     for i in sorted(range(len(texts)), key=scores.__getitem__, reverse=True)[:beam_width]}
        def final(t: str) -> float:
            known = sum(k in words for k in word_keys(t)) if words else 0
            return beams[t][4] + weight * lm.end_step_log_prob(beams[t][3]) + word_bonus * known

        text = max(beams, key=final)
        out.append(charset.encode(text))
    return out


# --- confidence ---------------------------------------------------------------------------------


def ctc_log_likelihood(log_probs: torch.Tensor, lengths, labels: Sequence[Sequence[int]]) -> torch.Tensor:
    """log P(labels[b] | frames of sample b), summed over all alignments (-inf if impossible),
    as a float CPU tensor ``(B,)``; ``log_probs`` ``(T, B, C)`` on any device."""
    lp = log_probs.detach().float()
    if len(labels) != lp.shape[1]:
        raise ValueError(f"{lp.shape[1]} samples in log_probs but {len(labels)} labels")
    input_lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
    target_lengths = torch.tensor([len(lab) for lab in labels], dtype=torch.long)
    targets = torch.tensor([int(c) for lab in labels for c in lab], dtype=torch.long)
    with torch.autocast(lp.device.type, enabled=False):
        loss = F.ctc_loss(
            lp,
            targets.to(lp.device),
            input_lengths.to(lp.device),
            target_lengths.to(lp.device),
            blank=BLANK,
            reduction="none",
            zero_infinity=False,
        )
    return -loss.cpu()


def sequence_confidence(log_probs: torch.Tensor, lengths, labels: Sequence[Sequence[int]]) -> torch.Tensor:
    """``exp(-CTC loss / (len(label) + 1))`` per sample: the length-normalized probability the
    model gives ``labels[b]`` (class ids, summed over all alignments), a float tensor in ``[0, 1]``
    on CPU. A label that cannot be aligned to the frames (too long) gets 0."""
    if not isinstance(log_probs, torch.Tensor):
        log_probs = torch.as_tensor(np.asarray(log_probs))
    log_likelihood = ctc_log_likelihood(log_probs, lengths, labels)
    target_lengths = torch.tensor([len(lab) for lab in labels], dtype=torch.float32)
    conf = torch.exp(log_likelihood / (target_lengths + 1))
    return torch.nan_to_num(conf, nan=0.0).clamp(0.0, 1.0)


# --- batch API ----------------------------------------------------------------------------------


@dataclass
class Prediction:
    """One decoded sample: ``text``, ``confidence`` (:func:`sequence_confidence` of ``ids``, times
    the word's :attr:`LexiconMatch.share` for lexicon decoding) and the class ``ids``."""

    text: str
    confidence: float
    ids: list[int]


METHODS = ("greedy", "beam", "lexicon", "charlm")


def reading_method(lexicon=None, charlm=None, default: str = "greedy") -> str:
    """The decoding to read with: the character model's when there is one (favouring the lexicon's
    words when there is a lexicon too), else the lexicon's when there is one, else ``default`` (the
    rule of self-training, ``evaluate``'s CSV and ``recognize``; self-training with a lexicon passes
    no character model, so its pseudo-labels are lexicon words)."""
    return "charlm" if charlm is not None else "lexicon" if lexicon is not None else default


def decode_batch(
    log_probs,
    lengths,
    charset: Charset,
    method: str = "greedy",
    lexicon: Lexicon | None = None,
    beam_width: int = 10,
    charlm=None,
) -> list[Prediction]:
    """Decode a model output batch with ``method`` (``"greedy"``, ``"beam"``, ``"lexicon"``, which
    needs ``lexicon``, or ``"charlm"``, which needs ``charlm``, a :class:`hwlearn.charlm.CharLM`,
    and favours ``lexicon``'s words when one is given) into one :class:`Prediction` per sample. A
    sample for which lexicon decoding finds no word gets empty text and confidence 0.

    The two halves, :func:`search` and :func:`scored`, may run apart (the searches in other
    processes: :mod:`hwlearn.inference`)."""
    ids, factors = search(log_probs, lengths, charset, method, lexicon=lexicon, beam_width=beam_width, charlm=charlm)
    return scored(log_probs, lengths, charset, ids, factors)


def search(log_probs, lengths, charset: Charset, method: str = "greedy", lexicon: Lexicon | None = None,
           beam_width: int = 10, charlm=None,
           lm_weight: float = LM_WEIGHT) -> tuple[list[list[int]], list[float] | None]:
    """The decoding half of :func:`decode_batch`: ``(class ids per sample, factors)``, ``factors``
    the lexicon decoder's per-sample confidence factor (a word's share among the words found, 0
    where none fits) and ``None`` for the other methods. ``lm_weight``: the character model's weight
    (:func:`charlm_decode`). Runs on the CPU, in this process."""
    if method == "greedy":
        return greedy_decode(log_probs, lengths), None
    if method == "beam":
        return beam_search(log_probs, lengths, beam_width=beam_width), None
    if method == "lexicon":
        if lexicon is None:
            raise HwlearnError("lexicon decoding needs a lexicon (word list)")
        if lexicon.charset != charset:
            raise HwlearnError("the lexicon was built for another charset than the model's")
        matches = lexicon_decode(log_probs, lengths, lexicon, beam_width=beam_width)
        return [m.ids for m in matches], [m.share if m.word is not None else 0.0 for m in matches]
    if method == "charlm":
        if charlm is None:
            raise HwlearnError("charlm decoding needs a character model (CharLM)")
        return charlm_decode(log_probs, lengths, charlm, charset, weight=lm_weight, beam_width=beam_width,
                             words=lexicon.word_keys if lexicon is not None else None), None
    raise HwlearnError(f"unknown decoding method {method!r} (choose from {', '.join(METHODS)})")


def scored(log_probs, lengths, charset: Charset, ids: Sequence[Sequence[int]],
           factors: Sequence[float] | None = None) -> list[Prediction]:
    """The :class:`Prediction` per sample for the readings ``ids`` that :func:`search` found: text
    and confidence (:func:`sequence_confidence`, times the ``factors`` when given)."""
    conf = sequence_confidence(log_probs, lengths, ids).tolist()
    if factors is not None:  # a lexicon word's confidence also says how clearly it beat the other words
        conf = [c * f for c, f in zip(conf, factors)]
    return [Prediction(charset.decode(i), c, list(i)) for i, c in zip(ids, conf)]


def distinct_readings(readings: Sequence[Prediction]) -> list[Prediction]:
    """The non-empty readings with distinct ``ids``, each the first one met (the order
    :func:`consensus` uses); the first reading alone when all are empty (an empty reading is no
    candidate: a view that reads nothing should lower the others' probability, not win)."""
    seen: dict[tuple[int, ...], Prediction] = {}
    for r in readings:
        if r.ids:
            seen.setdefault(tuple(r.ids), r)
    return list(seen.values()) or [readings[0]]


def consensus(readings: Sequence[Prediction], probs) -> Prediction:
    """The reading several views of one image agree on best.

    ``readings[j]`` is view ``j``'s reading (view 0 the image itself, the others augmented copies);
    ``probs[j][k]`` is the :func:`sequence_confidence` of the ``k``-th of
    :func:`distinct_readings` in view ``j``. Each distinct reading scores its probability averaged
    over all views, times the decoder's own factor for it: its confidence over its probability in
    the views that read it (a lexicon word's share among the words found, 1 for the other
    decoders). The best score wins (ties: the earlier view's reading) and becomes the confidence.
    A reading that only one rendering of the image supports is less likely right (see
    benchmarks/EXPERIMENTS.md)."""
    probs = np.asarray(probs, dtype=np.float64)
    candidates = distinct_readings(readings)
    if probs.shape != (len(readings), len(candidates)):
        raise ValueError(f"probs has shape {probs.shape}, expected {(len(readings), len(candidates))}")
    best, best_score = candidates[0], -1.0
    for k, cand in enumerate(candidates):
        factors = [r.confidence / probs[j, k] for j, r in enumerate(readings)
                   if r.ids == cand.ids and probs[j, k] > 0]
        score = float(probs[:, k].mean() * min(1.0, float(np.mean(factors)))) if factors else 0.0
        if score > best_score:
            best, best_score = cand, score
    return Prediction(best.text, best_score, list(best.ids))
