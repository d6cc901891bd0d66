"""Word statistics of a text corpus, and the word sampler that feeds the renderer.

``CorpusStats`` counts the word tokens of plain-text files (books, letters) and word lists: how
often each word occurs (case kept), which characters occur, how long words are, how they are
cased, and which punctuation is attached to them (``day,`` ``Sir.`` ``(the``). It is saved as a
small JSON file that holds statistics only, no running text (format: docs/corpus.md).

``WordSampler`` turns the statistics into training words: a word is drawn with probability
``count ** (1 / temperature)`` among the words the recognizer's charset can write, and a share of
the draws becomes a number, a date-like token, a re-cased word, or a word with attached
punctuation, because real word crops look like that.

Tokens are found by an nltk ``RegexpTokenizer`` (it needs no downloaded data): a token is a run
of letters and digits, joined by inner apostrophes and hyphens (``don't``, ``well-known``,
``o'clock``), or a number with inner separators (``3.50``, ``1,250``, ``12/3/1790``). Project
Gutenberg license headers and footers are dropped before counting.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from nltk.tokenize import RegexpTokenizer

from .charset import BREAK_MARK, DEFAULT_CHARSET, Charset, normalize
from .errors import HwlearnError
from .paths import default_corpus_path, write_text_atomic

FORMAT = "hwlearn-corpus-stats"
VERSION = 1

# --------------------------------------------------------------------------------------------
# Tokenizing
# --------------------------------------------------------------------------------------------

_ALNUM = r"[^\W_]"  # a letter or digit (\w without the underscore)
TOKEN_PATTERN = (
    r"\d+(?:[.,:/-]\d+)+"  # numbers and dates with inner separators: 3.50 1,250 12/3/1790
    rf"|{_ALNUM}+(?:['’\-‐]{_ALNUM}+)*"  # words, inner apostrophes/hyphens kept: don't well-known
)
_TOKENIZER = RegexpTokenizer(TOKEN_PATTERN)

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # e.g. a stray ^Z (\x1a)
# Underscores at word edges are Project Gutenberg's _italics_ markup, not text.
_ITALICS = re.compile(r"(?<![^\W_])_+|_+(?![^\W_])")
_GUTENBERG_START = re.compile(r"^[ \t]*\*\*\*[ \t]*START OF\b.*$", re.MULTILINE | re.IGNORECASE)
_GUTENBERG_END = re.compile(
    r"^[ \t]*(?:\*\*\*[ \t]*END OF\b|End of (?:the )?Project Gutenberg)", re.MULTILINE | re.IGNORECASE
)


def tokenize(text: str) -> list[str]:
    """The word tokens of ``text`` (NFC), in order; punctuation and whitespace are dropped."""
    return _TOKENIZER.tokenize(normalize(text))


def strip_gutenberg(text: str) -> str:
    """``text`` without a Project Gutenberg header (up to a ``*** START OF ...`` line) and footer
    (from a ``*** END OF ...`` or ``End of [the] Project Gutenberg ...`` line on); text without
    these markers is returned unchanged."""
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text


def _tokens_and_affixes(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Word tokens of ``text`` and, for each token written with punctuation attached (no space
    between), the ``(prefix, suffix)`` pair: ``"(the"`` -> ``("(", "")``, ``"day,"`` -> ``("", ",")``.
    In ``"sister,--Mrs."`` only the outer punctuation counts (``sister`` and ``Mrs`` are glued)."""
    spans = list(_TOKENIZER.span_tokenize(text))
    tokens = [text[s:e] for s, e in spans]
    affixes: list[tuple[str, str]] = []
    before = text[: spans[0][0]] if spans else ""
    prefix = before.split()[-1] if before and not before[-1].isspace() else ""
    for k, (_, end) in enumerate(spans):
        gap = text[end : spans[k + 1][0]] if k + 1 < len(spans) else text[end:] + " "
        parts = gap.split()
        if not gap or parts == [gap]:  # glued to the next token: no affix either side
            suffix, next_prefix = "", ""
        else:
            suffix = parts[0] if not gap[0].isspace() else ""
            next_prefix = parts[-1] if parts and not gap[-1].isspace() else ""
        if prefix or suffix:
            affixes.append((prefix, suffix))
        prefix = next_prefix
    return tokens, affixes


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------

_BINARY_PROBE = 8192


def read_text_file(path: str | Path) -> str:
    """The NFC text of a UTF-8 file; :class:`HwlearnError` for a missing, empty, binary or
    non-UTF-8 file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise HwlearnError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise HwlearnError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise HwlearnError(f"{path}: cannot read ({exc.strerror})") from None
    if not data.strip():
        raise HwlearnError(f"{path}: empty file")
    if b"\x00" in data:
        raise HwlearnError(f"{path}: binary file, not UTF-8 text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HwlearnError(f"{path}: not UTF-8 text (invalid byte at offset {exc.start})") from None
    return normalize(text)


def find_text_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """Expand ``paths`` into text files: files as given, directories recursively (hidden entries
    skipped). Returns ``(files, skipped)``: ``skipped`` are empty or binary files found inside
    directories (a binary file named directly is kept, so that reading it reports the error)."""
    files: list[Path] = []
    skipped: list[Path] = []
    for raw in paths:
        if not str(raw).strip():
            raise HwlearnError(f"{str(raw)!r}: empty path")
        path = Path(raw)
        if not path.exists():
            raise HwlearnError(f"{path}: no such file or directory")
        if not path.is_dir():
            files.append(path)
            continue
        found = 0
        for child in sorted(path.rglob("*")):
            if not child.is_file() or any(p.startswith(".") for p in child.relative_to(path).parts):
                continue
            try:
                with child.open("rb") as f:
                    head = f.read(_BINARY_PROBE)
            except OSError as exc:
                raise HwlearnError(f"{child}: cannot read ({exc.strerror})") from None
            if not head.strip() or b"\x00" in head:
                skipped.append(child)
            else:
                files.append(child)
                found += 1
        if not found:
            raise HwlearnError(f"{path}: no text files in directory")
    return files, skipped


def read_wordlist(path: str | Path) -> Counter[str]:
    """Counts of a word list: one ``word`` (count 1) or ``word<TAB>count`` per line. Blank lines
    and entries without a letter or digit are skipped."""
    path = Path(path)
    counts: Counter[str] = Counter()
    for lineno, line in enumerate(read_text_file(path).splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        word, count = line, 1
        if "\t" in line:
            word, _, count_text = line.rpartition("\t")
            word = word.strip()
            try:
                count = int(count_text)
            except ValueError:
                count = 0
            if count < 1:
                raise HwlearnError(f"{path}:{lineno}: count {count_text!r} is not a positive integer")
        if _has_alnum(word):
            counts[word] += count
    if not counts:
        raise HwlearnError(f"{path}: no words in word list")
    return counts


def _has_alnum(word: str) -> bool:
    return any(ch.isalnum() for ch in word)


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------

#: How a word is cased: ``lower`` ("day", "3rd"), ``capitalized`` ("Sir", "I"), ``upper``
#: ("UK", at least two cased letters), ``mixed`` ("McDonald"), ``uncased`` ("1784").
CASE_CLASSES = ("lower", "capitalized", "upper", "mixed", "uncased")


def case_class(word: str) -> str:
    """The case class of ``word`` (one of :data:`CASE_CLASSES`)."""
    cased = [ch for ch in word if ch.islower() or ch.isupper()]
    if not cased:
        return "uncased"
    if all(ch.islower() for ch in cased):
        return "lower"
    if cased[0].isupper() and all(ch.islower() for ch in cased[1:]):
        return "capitalized"
    if len(cased) >= 2 and all(ch.isupper() for ch in cased):
        return "upper"
    return "mixed"


@dataclass
class CorpusStats:
    """Word statistics of a corpus. All distributions are token-weighted (a word that occurs 10
    times counts 10 times).

    ``word_counts`` may have been pruned (:meth:`pruned`); ``tokens`` and the other
    distributions always describe the whole corpus, so coverages stay honest.
    """

    word_counts: Counter = field(default_factory=Counter)  #: word (case kept) -> count
    char_counts: Counter = field(default_factory=Counter)  #: character of the words -> count
    length_counts: Counter = field(default_factory=Counter)  #: word length in characters -> count
    case_counts: Counter = field(default_factory=Counter)  #: case class -> count
    affix_counts: Counter = field(default_factory=Counter)  #: (prefix, suffix) punctuation -> count
    tokens: int = 0  #: number of word tokens read
    sources: list = field(default_factory=list)  #: file names the statistics come from
    path: Path | None = field(default=None, compare=False, repr=False)  #: where it was loaded from

    # ---- building ---------------------------------------------------------------------------

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path]) -> "CorpusStats":
        """Statistics of text files and directories (recursively; see :func:`find_text_files`)."""
        paths = list(paths)
        files, _ = find_text_files(paths)
        stats = cls()
        for f in files:
            stats.add_file(f)
        stats.require_words(", ".join(str(p) for p in paths))
        return stats

    @classmethod
    def from_text(cls, text: str, source: str | None = None) -> "CorpusStats":
        """Statistics of one string (Gutenberg boilerplate removed)."""
        stats = cls()
        stats.add_text(text, source)
        return stats

    @classmethod
    def from_wordlist(cls, path: str | Path) -> "CorpusStats":
        """Statistics of a word list (see :func:`read_wordlist`); no punctuation statistics."""
        stats = cls()
        stats.add_words(read_wordlist(path), source=Path(path).name)
        return stats

    def add_file(self, path: str | Path) -> None:
        """Add the words of one UTF-8 text file."""
        path = Path(path)
        self.add_text(read_text_file(path), source=path.name)

    def add_text(self, text: str, source: str | None = None) -> None:
        """Add the words of ``text`` (Gutenberg header/footer, _italics_ markup and control
        characters removed)."""
        text = _ITALICS.sub("", _CONTROL_CHARS.sub("", strip_gutenberg(normalize(text))))
        tokens, affixes = _tokens_and_affixes(text)
        self.affix_counts.update(affixes)
        self.add_words(Counter(tokens), source)

    def add_words(self, counts: dict[str, int], source: str | None = None) -> None:
        """Add word counts (each word NFC-normalized, case kept)."""
        for word, count in counts.items():
            word = normalize(word)
            self.word_counts[word] += count
            self.length_counts[len(word)] += count
            self.case_counts[case_class(word)] += count
            for ch in word:
                self.char_counts[ch] += count
            self.tokens += count
        if source is not None:
            self.sources.append(source)

    def merge(self, other: "CorpusStats") -> "CorpusStats":
        """A new object with the statistics of both."""
        merged = CorpusStats()
        for stats in (self, other):
            merged.word_counts.update(stats.word_counts)
            merged.char_counts.update(stats.char_counts)
            merged.length_counts.update(stats.length_counts)
            merged.case_counts.update(stats.case_counts)
            merged.affix_counts.update(stats.affix_counts)
            merged.tokens += stats.tokens
            merged.sources.extend(stats.sources)
        return merged

    def pruned(self, min_count: int = 1, max_types: int | None = None) -> "CorpusStats":
        """A copy whose ``word_counts`` keeps only words seen at least ``min_count`` times, and at
        most the ``max_types`` most frequent of them; all other statistics are unchanged."""
        kept = [(w, c) for w, c in _sorted_items(self.word_counts) if c >= min_count]
        if max_types is not None:
            kept = kept[:max_types]
        return CorpusStats(
            word_counts=Counter(dict(kept)),
            char_counts=Counter(self.char_counts),
            length_counts=Counter(self.length_counts),
            case_counts=Counter(self.case_counts),
            affix_counts=Counter(self.affix_counts),
            tokens=self.tokens,
            sources=list(self.sources),
            path=self.path,
        )

    def require_words(self, where: str) -> None:
        """Raise :class:`HwlearnError` naming ``where`` when no word was found."""
        if not self.word_counts:
            raise HwlearnError(f"{where}: no words found (a word needs a letter or digit)")

    # ---- reading ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """How error messages name this corpus: its file, else its sources."""
        if self.path is not None:
            return str(self.path)
        return ", ".join(self.sources) or "corpus"

    @property
    def types(self) -> int:
        """Number of distinct words (case-sensitive) in ``word_counts``."""
        return len(self.word_counts)

    @property
    def affixed_tokens(self) -> int:
        """Number of tokens written with punctuation attached."""
        return sum(self.affix_counts.values())

    @property
    def charset(self) -> Charset:
        """The sorted characters of the words and their attached punctuation."""
        chars = set(self.char_counts)
        for prefix, suffix in self.affix_counts:
            chars.update(prefix + suffix)
        if not chars:
            raise HwlearnError(f"{self.name}: no characters (empty corpus)")
        return Charset(sorted(chars))

    def most_common(self, n: int | None = None) -> list[tuple[str, int]]:
        """The ``n`` most frequent words with their counts (ties in alphabetical order)."""
        return _sorted_items(self.word_counts)[:n]

    def coverage(self, n: int) -> float:
        """Share of all tokens that are one of the ``n`` most frequent words."""
        if not self.tokens:
            return 0.0
        top = sorted(self.word_counts.values(), reverse=True)[:n]
        return sum(top) / self.tokens

    def case_shares(self) -> dict[str, float]:
        """Token share of each case class."""
        total = sum(self.case_counts.values()) or 1
        return {k: self.case_counts.get(k, 0) / total for k in CASE_CLASSES}

    def mean_length(self) -> float:
        """Mean word length in characters (token-weighted)."""
        total = sum(self.length_counts.values())
        return sum(n * c for n, c in self.length_counts.items()) / total if total else 0.0

    # ---- saving -----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The JSON document (see docs/corpus.md); counts sorted by count, then key."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "sources": list(self.sources),
            "tokens": self.tokens,
            "types": self.types,
            "case_counts": {k: self.case_counts.get(k, 0) for k in CASE_CLASSES},
            "length_counts": {str(n): c for n, c in sorted(self.length_counts.items())},
            "char_counts": dict(_sorted_items(self.char_counts)),
            "affix_counts": [[p, s, c] for (p, s), c in _sorted_items(self.affix_counts)],
            "word_counts": dict(_sorted_items(self.word_counts)),
        }

    def save(self, path: str | Path) -> None:
        """Write the statistics as JSON (atomically: a temporary file, then a rename)."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, _dump(self.to_dict()))
        except OSError as exc:
            raise HwlearnError(f"{path}: cannot write ({exc.strerror})") from None

    @classmethod
    def load(cls, path: str | Path) -> "CorpusStats":
        """Read a file written by :meth:`save`; :class:`HwlearnError` for anything else."""
        path = Path(path)
        try:
            data = json.loads(read_text_file(path))
        except json.JSONDecodeError as exc:
            raise HwlearnError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
        fmt = data.get("format") if isinstance(data, dict) else None
        if fmt != FORMAT:
            raise HwlearnError(f"{path}: not a hwlearn corpus statistics file (format {fmt!r}, expected {FORMAT!r})")
        if data.get("version") != VERSION:
            raise HwlearnError(
                f"{path}: unsupported {FORMAT} version {data.get('version')!r} (this hwlearn reads {VERSION})"
            )
        try:
            return cls(
                word_counts=Counter({str(w): int(c) for w, c in data["word_counts"].items()}),
                char_counts=Counter({str(ch): int(c) for ch, c in data["char_counts"].items()}),
                length_counts=Counter({int(n): int(c) for n, c in data["length_counts"].items()}),
                case_counts=Counter({str(k): int(c) for k, c in data["case_counts"].items()}),
                affix_counts=Counter({(str(p), str(s)): int(c) for p, s, c in data["affix_counts"]}),
                tokens=int(data["tokens"]),
                sources=[str(s) for s in data["sources"]],
                path=path,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise HwlearnError(f"{path}: malformed corpus statistics ({type(exc).__name__}: {exc})") from None


def _sorted_items(counts: dict) -> list:
    """Items by count (descending), then key, so saved files are stable."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _dump(doc: dict) -> str:
    """JSON with one count per line (readable, diff-friendly), UTF-8 characters kept."""

    def one(value) -> str:
        return json.dumps(value, ensure_ascii=False)

    fields = []
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            body = ",\n".join(f"  {one(k)}: {one(v)}" for k, v in value.items())
            text = "{\n" + body + "\n }"
        elif isinstance(value, list) and value and isinstance(value[0], list):
            text = "[\n" + ",\n".join(f"  {one(row)}" for row in value) + "\n ]"
        else:
            text = one(value)
        fields.append(f" {one(key)}: {text}")
    return "{\n" + ",\n".join(fields) + "\n}\n"


def load_default_corpus() -> CorpusStats:
    """The bundled English statistics (``hwlearn.paths.default_corpus_path()``)."""
    path = default_corpus_path()
    if not path.is_file():
        raise HwlearnError(
            f"{path}: default corpus statistics not found (set HWLEARN_CORPUS to a file made by `hwlearn corpus`)"
        )
    return CorpusStats.load(path)


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------

_DIGITS = "0123456789"


def _small_int(rng: np.random.Generator) -> str:
    return str(int(rng.integers(1, 100)))  # "12"


def _year(rng: np.random.Generator) -> str:
    return str(int(rng.integers(1500, 2030)))  # "1784"


def _large_int(rng: np.random.Generator) -> str:
    return str(int(rng.integers(100, 10000)))  # "250"


def _decimal(rng: np.random.Generator) -> str:
    return f"{int(rng.integers(0, 100))}.{int(rng.integers(0, 100)):02d}"  # "3.50"


def _thousands(rng: np.random.Generator) -> str:
    return f"{int(rng.integers(1000, 100000)):,}"  # "1,250"


def _day_month_year(rng: np.random.Generator) -> tuple[int, int, int]:
    return int(rng.integers(1, 32)), int(rng.integers(1, 13)), int(rng.integers(1600, 2030))


def _date_slashes(rng: np.random.Generator) -> str:
    d, m, y = _day_month_year(rng)
    return f"{d}/{m}/{y}"  # "12/3/1790"


def _date_iso(rng: np.random.Generator) -> str:
    d, m, y = _day_month_year(rng)
    return f"{y}-{m:02d}-{d:02d}"  # "1790-04-12"


def _date_dots(rng: np.random.Generator) -> str:
    d, m, y = _day_month_year(rng)
    return f"{d}.{m}.{y}"  # "12.3.1790"


def ordinal(n: int) -> str:
    """``n`` as an English ordinal: ``3rd``, ``11th``, ``21st``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _ordinal(rng: np.random.Generator) -> str:
    return ordinal(int(rng.integers(1, 32)))  # "3rd", "21st"


# (weight, characters needed, generator); a format is used only when the charset has its characters.
NUMBER_FORMATS: tuple[tuple[float, str, Callable[[np.random.Generator], str]], ...] = (
    (0.35, _DIGITS, _small_int),
    (0.30, _DIGITS, _year),
    (0.15, _DIGITS, _large_int),
    (0.12, _DIGITS + ".", _decimal),
    (0.08, _DIGITS + ",", _thousands),
)
DATE_FORMATS: tuple[tuple[float, str, Callable[[np.random.Generator], str]], ...] = (
    (0.35, _DIGITS + "stndrh", _ordinal),
    (0.30, _DIGITS + "/", _date_slashes),
    (0.15, _DIGITS + "-", _date_iso),
    (0.20, _DIGITS + ".", _date_dots),
)

#: Attached punctuation used when the statistics have none (e.g. made from a word list only).
FALLBACK_AFFIXES: dict[tuple[str, str], int] = {
    ("", ","): 40, ("", "."): 25, ("", ";"): 6, ("", ":"): 3, ("", "!"): 3, ("", "?"): 3,
    ('"', ""): 4, ("", '"'): 4, ("(", ""): 2, ("", ")"): 2, ("", ".\""): 3, ("", ",\""): 2,
}
MAX_AFFIX_LEN = 3  #: longer runs of attached punctuation ("?--") are not sampled
MAX_AFFIX_PAIRS = 64  #: the most frequent (prefix, suffix) pairs are sampled, the rest dropped


class WordSampler:
    """Draws training words from corpus statistics; picklable, a few microseconds per word.

    A draw is a number with probability ``number_share``, a date-like token with probability
    ``date_share``, else a corpus word. A word is drawn with probability proportional to
    ``count ** (1 / temperature)`` among the words with ``count >= min_count``, at most ``max_len``
    characters, written entirely in ``charset``: ``temperature=1`` follows the corpus,
    higher temperatures flatten the distribution so that rare words are seen (very high: every
    word equally often). With probability ``case_share`` a word is re-cased (lower /
    Capitalized / UPPER, drawn by the corpus's case shares). Then, with probability
    ``punct_share``, punctuation is attached (``day,`` ``Sir.`` ``(the``), drawn from the corpus's
    attached-punctuation statistics. Numbers, dates and punctuation use only characters of
    ``charset``; when none fits, that share goes to plain words.

    The defaults suit pretraining a recognizer: ``temperature=2`` (square-root frequencies: common
    words stay common, but rare words and their letter combinations are seen far more often than
    in running text), ``max_len=20``, 5 % numbers, 3 % dates, 10 % re-cased words and 15 %
    attached punctuation (about the rate in running English text and in real word crops).
    With ``phrase_share`` (default 0) a plain word is joined with one or two more words by a
    character of ``phrase_joiners`` (space, hyphen): for crops that hold several words, such as
    street names or form fields.
    With ``break_share`` (default 0) a plain word of four or more letters is instead cut where a line
    break would cut it, two or more letters on each line, and its first part drawn with
    :data:`hwlearn.charset.BREAK_MARK` (``immedi-``): archives of running text break words at line
    ends (GW: 50 of 2,375 train words), and a recognizer that never saw such a part reads its hyphen
    as a period.
    With ``capital_share`` (default 0) a draw that starts in lower case is written with a capital first letter
    instead (``day,`` → ``Day,``), where the charset has it: running text starts ~18 % of its words with a capital,
    and capitals are where handwriting styles differ most (:func:`hwlearn.selftrain.tune_to_fonts` draws half its
    words so).
    With ``char_floor`` (default 0) the words holding a rare letter are drawn more often, so that
    every letter at least :data:`FLOOR_MIN_WORDS` words have occurs in at least that share of the
    word draws (:func:`floor_char_shares`): a letter that running text seldom has (German ``Ä`` is in
    0.06 % of the draws from a German word list) is otherwise barely learned, and self-training
    on pseudo-labels then drives it out of the model altogether (DHSD's ``Äußere`` read as
    ``Außere``; see benchmarks/EXPERIMENTS.md).
    ``charset=None`` means :data:`hwlearn.charset.DEFAULT_CHARSET`.
    """

    def __init__(
        self,
        stats: CorpusStats,
        charset: Charset | None = None,
        *,
        max_len: int = 20,
        min_count: int = 1,
        temperature: float = 2.0,
        number_share: float = 0.05,
        date_share: float = 0.03,
        punct_share: float = 0.15,
        case_share: float = 0.10,
        phrase_share: float = 0.0,
        phrase_joiners: str = " -",
        char_floor: float = 0.0,
        break_share: float = 0.0,
        capital_share: float = 0.0,
    ):
        _check_params(max_len, min_count, temperature, number_share, date_share, punct_share, case_share,
                      phrase_share, char_floor, break_share, capital_share)
        self.charset = charset if charset is not None else DEFAULT_CHARSET
        self.max_len = max_len
        self.temperature = float(temperature)
        self.punct_share = float(punct_share)
        self.case_share = float(case_share)
        self.phrase_share = float(phrase_share)
        self.phrase_joiners = [j for j in dict.fromkeys(phrase_joiners) if j in self.charset]
        self.break_share = float(break_share) if BREAK_MARK in self.charset else 0.0
        self.capital_share = float(capital_share)

        words = [
            (w, c)
            for w, c in _sorted_items(stats.word_counts)
            if c >= min_count and len(w) <= max_len and self.charset.covers(w)
        ]
        if not words:
            raise HwlearnError(
                f"{stats.name}: no word fits the charset and max_len={max_len}"
                f" (min_count={min_count}; charset {self.charset.to_string()[:40]!r})"
            )
        #: The words that can be drawn, most frequent first (a lexicon for decoding).
        self.vocabulary: list[str] = [w for w, _ in words]
        counts = np.array([c for _, c in words], dtype=np.float64)
        weights = np.exp((np.log(counts) - np.log(counts.max())) / self.temperature)
        self.char_floor = float(char_floor)
        if self.char_floor:
            weights = floor_char_shares(self.vocabulary, weights, self.char_floor)
        self._word_cdf = _cdf(weights)

        self._numbers = self._formats(NUMBER_FORMATS)
        self._dates = self._formats(DATE_FORMATS)
        self._number_cut = number_share if self._numbers else 0.0
        self._date_cut = self._number_cut + (date_share if self._dates else 0.0)

        pairs = stats.affix_counts or FALLBACK_AFFIXES
        affixes = [
            ((p, s), c)
            for (p, s), c in _sorted_items(pairs)
            if len(p) <= MAX_AFFIX_LEN and len(s) <= MAX_AFFIX_LEN and self.charset.covers(p + s)
        ][:MAX_AFFIX_PAIRS]
        self._affixes = [pair for pair, _ in affixes]
        self._affix_cdf = _cdf(np.array([c for _, c in affixes], dtype=np.float64)) if affixes else None

        shares = stats.case_shares()
        case_weights = np.array([shares["lower"], shares["capitalized"], shares["upper"]])
        self._case_cdf = _cdf(case_weights) if case_weights.sum() > 0 else None

    def _formats(self, formats) -> tuple[list, np.ndarray] | None:
        """The generators (and their CDF) whose characters the charset has; None when none has."""
        usable = [(w, fn) for w, chars, fn in formats if all(ch in self.charset for ch in chars)]
        if not usable:
            return None
        return [fn for _, fn in usable], _cdf(np.array([w for w, _ in usable]))

    def __repr__(self) -> str:
        return (
            f"WordSampler({len(self.vocabulary)} words, temperature={self.temperature}, "
            f"max_len={self.max_len}, charset of {len(self.charset)} symbols)"
        )

    def with_capital_share(self, share: float) -> "WordSampler":
        """A copy that draws with ``capital_share`` = ``share`` (the same words otherwise, when ``share`` is 0)."""
        _check_share("capital_share", share)
        other = copy.copy(self)
        other.capital_share = float(share)
        return other

    def sample(self, rng: np.random.Generator) -> str:
        """One word (NFC, within ``max_len`` characters, written in the charset)."""
        token = self._sample(rng)
        if self.capital_share and rng.random() < self.capital_share and token[:1].islower():
            capital = token[0].upper()
            if len(capital) == 1 and capital in self.charset:
                token = capital + token[1:]
        return token

    def _sample(self, rng: np.random.Generator) -> str:
        u = rng.random()
        token = None
        if u < self._number_cut:
            token = _draw_format(self._numbers, rng)
        elif u < self._date_cut:
            token = _draw_format(self._dates, rng)
        if token is None or len(token) > self.max_len:
            token = self._draw_word(rng)
            if self.break_share and rng.random() < self.break_share and token.isalpha() and (cuts := break_cuts(token)):
                return token[: int(rng.integers(cuts.start, cuts.stop))] + BREAK_MARK  # (no punctuation after it)
            if self.phrase_share and self.phrase_joiners and rng.random() < self.phrase_share:
                token = self._extend_phrase(token, rng)
        if self._affix_cdf is not None and self.punct_share and rng.random() < self.punct_share:
            prefix, suffix = self._affixes[_draw_index(self._affix_cdf, rng)]
            if len(prefix) + len(token) + len(suffix) <= self.max_len:
                token = prefix + token + suffix
        return token

    def sample_many(self, n: int, rng: np.random.Generator) -> list[str]:
        """``n`` words drawn one after another from ``rng``."""
        return [self.sample(rng) for _ in range(n)]

    def _extend_phrase(self, word: str, rng: np.random.Generator) -> str:
        """``word`` joined with one more word (a quarter of the time two more) by a joiner
        (space or hyphen by default), kept within ``max_len``: multi-word crops such as street
        names ("An der Kirche", "Anton-Graff-Straße")."""
        joiner = self.phrase_joiners[int(rng.integers(len(self.phrase_joiners)))]
        extra = 2 if rng.random() < 0.25 else 1
        for _ in range(extra):
            nxt = self._draw_word(rng)
            if len(word) + len(joiner) + len(nxt) > self.max_len:
                break
            word = word + joiner + nxt
        return word

    def _draw_word(self, rng: np.random.Generator) -> str:
        word = self.vocabulary[_draw_index(self._word_cdf, rng)]
        if self._case_cdf is not None and self.case_share and rng.random() < self.case_share:
            style = _draw_index(self._case_cdf, rng)
            recased = (word.lower(), word[:1].upper() + word[1:].lower(), word.upper())[style]
            recased = normalize(recased)
            if len(recased) <= self.max_len and self.charset.covers(recased):
                word = recased
        return word


#: A character held by fewer words than this is not raised by :func:`floor_char_shares`: it would
#: draw those few words over and over (from the bundled English, ``Cæsar`` alone would be 1 % of
#: the draws and ``Lemaître`` another 1 %; from the German word list, ``voilà``).
FLOOR_MIN_WORDS = 20


def floor_char_shares(words: list[str], weights: np.ndarray, floor: float, rounds: int = 10,
                      min_words: int = FLOOR_MIN_WORDS) -> np.ndarray:
    """``weights`` (one per word of ``words``; any scale) changed so that each letter of the
    words occurs in at least ``floor`` of the draws, where it can: the words holding a letter
    that falls short are all weighted up by the same factor, character after character, the
    rarest first, for ``rounds`` passes (raising one character lowers the others' shares a little;
    a few passes settle it). Words holding only characters above the floor keep their relative
    weights; a letter no word has stays absent, and one that fewer than ``min_words`` words hold
    keeps its share. Only letters are raised: the sampler's digits and marks come mostly from
    its numbers, dates and punctuation, not from the words (raising the digits of the bundled
    English would draw numbers such as ``97,500`` more often than ``the``). Returns new weights
    summing to 1."""
    if not 0.0 < floor < 1.0:
        raise HwlearnError(f"char_floor must be above 0 and below 1, got {floor}")
    holding: dict[str, list[int]] = {}
    for i, word in enumerate(words):
        for ch in set(word):
            holding.setdefault(ch, []).append(i)
    index = {ch: np.asarray(ids) for ch, ids in holding.items()
             if ch.isalpha() and len(ids) >= min_words}
    p = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
    for _ in range(rounds):
        shares = {ch: float(p[ids].sum()) for ch, ids in index.items()}
        short = sorted((share, ch) for ch, share in shares.items() if share < floor * (1.0 - 1e-6))
        if not short:
            break
        for _, ch in short:
            ids = index[ch]
            share = float(p[ids].sum())
            if share >= floor:
                continue
            # weight the holders by k so that k*share / (1 - share + k*share) = floor
            p[ids] *= floor * (1.0 - share) / (share * (1.0 - floor))
            p /= p.sum()
    return p


def break_cuts(word: str) -> range:
    """Where a line break may cut ``word``: the lengths of its first part that leave two or more letters
    on each line (empty for a word of under four letters). The sampler's line-break parts
    (``break_share``) and the lexicon's (:func:`hwlearn.recipes.break_parts`) are cut there."""
    return range(2, len(word) - 1)


def _check_params(max_len, min_count, temperature, number_share, date_share, punct_share, case_share,
                  phrase_share=0.0, char_floor=0.0, break_share=0.0, capital_share=0.0) -> None:
    if max_len < 1:
        raise HwlearnError(f"max_len must be at least 1, got {max_len}")
    if min_count < 1:
        raise HwlearnError(f"min_count must be at least 1, got {min_count}")
    if not temperature > 0:
        raise HwlearnError(f"temperature must be positive, got {temperature}")
    for name, share in (
        ("number_share", number_share),
        ("date_share", date_share),
        ("punct_share", punct_share),
        ("case_share", case_share),
        ("phrase_share", phrase_share),
        ("char_floor", char_floor),
        ("break_share", break_share),
        ("capital_share", capital_share),
    ):
        _check_share(name, share)
    if char_floor >= 1.0:
        raise HwlearnError(f"char_floor must be below 1, got {char_floor}")
    if number_share + date_share > 1.0:
        raise HwlearnError(f"number_share + date_share must be at most 1, got {number_share + date_share}")


def _check_share(name: str, share: float) -> None:
    if not 0.0 <= share <= 1.0:
        raise HwlearnError(f"{name} must be between 0 and 1, got {share}")


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights, dtype=np.float64)
    return cdf / cdf[-1]


def _draw_index(cdf: np.ndarray, rng: np.random.Generator) -> int:
    return min(int(np.searchsorted(cdf, rng.random(), side="right")), len(cdf) - 1)


def _draw_format(formats, rng: np.random.Generator) -> str:
    generators, cdf = formats
    return generators[_draw_index(cdf, rng)](rng)
