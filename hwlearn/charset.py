"""The symbol table of a recognizer: characters <-> class indices, with the CTC blank at 0.

Text is normalized to Unicode NFC everywhere (``normalize``), so "ä" typed as ``a`` + combining
diaeresis and the precomposed "ä" are the same symbol. A charset is stored with every model and
checkpoint; two charsets are equal when they list the same symbols in the same order.
"""

from __future__ import annotations

import unicodedata
from typing import Iterable, Sequence

from .errors import HwlearnError

BLANK = 0

#: What ends the first part of a word a line break cut (``immedi-``): drawn by the word sampler
#: (``break_share``), read by lexicon decoding (:attr:`hwlearn.decode.Lexicon.breaks`).
BREAK_MARK = "-"


def normalize(text: str) -> str:
    """Unicode NFC normalization; the one text normalization used for labels and corpora."""
    return unicodedata.normalize("NFC", text)


class Charset:
    """An ordered set of single characters; class ``i + 1`` is ``symbols[i]``, class 0 is the blank."""

    def __init__(self, symbols: Iterable[str]):
        seen: dict[str, None] = {}
        for s in symbols:
            s = normalize(s)
            if len(s) != 1:
                raise HwlearnError(f"charset symbol {s!r} is not a single character")
            seen.setdefault(s, None)
        if not seen:
            raise HwlearnError("charset is empty")
        self.symbols: tuple[str, ...] = tuple(seen)
        self._index = {s: i + 1 for i, s in enumerate(self.symbols)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "Charset":
        """The sorted set of characters occurring in ``texts`` (after NFC)."""
        chars: set[str] = set()
        for t in texts:
            chars.update(normalize(t))
        return cls(sorted(chars))

    @property
    def num_classes(self) -> int:
        """Number of output classes of a CTC model: the symbols plus the blank."""
        return len(self.symbols) + 1

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, ch: str) -> bool:
        return ch in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Charset) and self.symbols == other.symbols

    def __hash__(self) -> int:
        return hash(self.symbols)

    def __repr__(self) -> str:
        return f"Charset({''.join(self.symbols)!r})"

    def covers(self, text: str) -> bool:
        """True when every character of ``text`` (after NFC) is in the charset."""
        return all(ch in self._index for ch in normalize(text))

    def missing(self, text: str) -> str:
        """The characters of ``text`` that are not in the charset, in order of first occurrence."""
        return "".join(dict.fromkeys(ch for ch in normalize(text) if ch not in self._index))

    def encode(self, text: str) -> list[int]:
        """Class indices of ``text``; raises :class:`HwlearnError` for characters outside the charset."""
        text = normalize(text)
        try:
            return [self._index[ch] for ch in text]
        except KeyError:
            raise HwlearnError(
                f"text {text!r} has characters outside the charset: {self.missing(text)!r}"
            ) from None

    def decode(self, indices: Sequence[int]) -> str:
        """Characters of class indices (no CTC collapsing; the blank and unknown indices are dropped)."""
        n = len(self.symbols)
        return "".join(self.symbols[i - 1] for i in indices if 0 < i <= n)

    def to_string(self) -> str:
        """The symbols as one string (how charsets are stored in JSON metadata)."""
        return "".join(self.symbols)

    @classmethod
    def from_string(cls, s: str) -> "Charset":
        return cls(list(s))


def _default_symbols() -> str:
    latin = "".join(chr(c) for c in range(0x20, 0x7F))  # printable ASCII incl. space
    extra = "ÄÖÜäöüßÉÈÊÀÂÇéèêëàâçîïôûùœŒæÆ£§°–—‘’“”"
    return latin + extra


#: The charset used when none is given: printable ASCII, space, German umlauts/ß, common accents
#: and typographic punctuation. Models trained with it can read English and German text.
DEFAULT_CHARSET = Charset(_default_symbols())
