"""Self-training: adapt a pretrained recognizer to unlabeled real word images.

First the **layout** the images are read in is chosen (:func:`choose_layout`): as they are, or with
their blank margins trimmed to those of the synthetic words at the sides or on all four sides
(:mod:`hwlearn.layout`) — whichever the pretrained model labels with the highest mean confidence
(on a seeded sample of :data:`LAYOUT_SAMPLE` images when there are more); a collection of light ink on
dark paper is inverted first (:func:`hwlearn.layout.light_ink_share`).
It is recorded in every checkpoint written, so ``evaluate`` and ``recognize`` read images the same way.
Then the synthetic words mixed into training are drawn from the fonts closest to the images
(``match_fonts``, :func:`match_synthetic_fonts`), and the model trains ``font_steps`` steps on those words
alone (with ``font_capitals`` > 0 that share of those that start in lower case written with a capital;
:func:`tune_to_fonts`, into ``fonts/last``): round 0's readings, the rounds and the student start from it.

Each round:

1. **label** every unlabeled image with the current model (lexicon-constrained when a lexicon is
   given, else guided by a character model of the language when one is given, else greedy) and
   score each pseudo-label with its length-normalized CTC probability
   (:func:`hwlearn.decode.sequence_confidence`; a lexicon word's times its share among the words
   that fit the image, its forms with other trailing marks counted as it,
   :class:`hwlearn.decode.LexiconMatch`); with ``views`` > 0 the image's
   augmented copies are read too and the pseudo-label is the reading they agree on best, scored by
   its probability averaged over the image and the copies (:func:`hwlearn.decode.consensus`);
   with ``hold_marks`` (the default), from round 2 on each trailing mark's share of the readings
   (``day,`` ``day.``) is moved back to round 0's (:func:`hold_mark_shares`), by adding the mark
   to the readings it makes likelier most, or dropping it from those it makes likelier least
   (:func:`mark_gains`): self-training otherwise drops the marks it is unsure of round by round;
2. **select** by rank: the most confident share of the images, a share that grows linearly from
   ``start_share`` in round 1 to ``end_share`` in round ``ramp_rounds`` and stays there in the
   rounds after (a rank rule cannot silently select nothing, unlike a fixed threshold); with
   ``rare_chars``, the readings holding a rare character are selected at that share too
   (:func:`select_by_rank`); with ``mark_doubt``, the selected readings without a trailing mark
   that a mark would read nearly as well leave the selection (:func:`mark_doubted`), unless that
   would leave it empty;
3. **train** the model on the selection, each image freshly augmented every time it is drawn
   (:func:`hwlearn.data.augment_real_strong` by default: heavier than the copies it was labeled
   in, so the model cannot merely confirm its labels; ``augment="light"``:
   :func:`hwlearn.data.augment_real`), mixed with synthetic words (``synthetic_share`` of each
   batch) so rare characters and the synthetic prior are not forgotten (with ``rare_chars``, the
   pseudo-labels holding a rare character are also repeated, :func:`repeat_rare`), with dropout ``dropout``
   (0.2 by default, whatever the pretrained model had: pretraining on ever-new renderings does best
   without any, a few thousand images seen again and again do better with it; recorded in the
   round's checkpoint);
4. **checkpoint** the round (``round<k>/last``; the labels it trained on are in
   ``round<k>/pseudo_labels.tsv``, :func:`write_pseudo_labels`) and re-label all images with the new model; the
   mean confidence over *all* unlabeled images is the round's label-free score.

After the rounds, the **student** (``student_steps``, by default four times as many steps as the rounds together,
:data:`STUDENT_STEPS_PER_ROUND_STEP`; 0: none): the weights round 1 started from are loaded again and trained once on
the last round's readings (marks held, the end share selected), as a round trains, into ``student/``; it
reads every image as a round does. A model trained round after round on its own labels keeps some of what it
learned from the first rounds' noisier ones. With a ``time_limit``, a round after the first starts only when it
fits in what is left of it at the pace of the slowest round before (:func:`round_fits_in_time`; the rounds left
out take the student with them), and the student gets only the steps that fit at the rounds' pace, or none when
fewer than a round's steps fit (:func:`student_steps_in_time`). The layout choice, the font stage, round 0's reading
and round 1 always run, so the limit is kept when they fit in it.

An interrupted run can be resumed (``resume``): run again into the same directory with the same
checkpoint, images and settings, and the finished rounds (each checkpoint carries a key of all three
and its report row) are loaded rather than trained again, and so are the readings of the images by the
pretrained model and by the last finished round's (``round<k>/readings.json``, :func:`save_readings`; read
again where a round has none), so the resumed run trains and chooses as the uninterrupted one would.

Labels of an optional validation set are used only to print CER/WER per round, never to train or
to choose. The final model is the round (or the student) with the highest label-free score (round 0 = the
pretrained model), copied to ``final``, with the pseudo-labels that round trained on and how often
each occurs (:data:`DOMAIN_WORDS`): what this archive says, which reading with the character model
mixes in (:func:`hwlearn.recipes.load_charlm`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .charset import Charset
from .checkpoint import load_checkpoint, read_meta, save_checkpoint
from .console import console
from .data import LabeledImages, augment_real, augment_real_strong, load_image, to_model_input
from .decode import Prediction, ctc_log_likelihood, reading_method
from .errors import HwlearnError
from .fontmatch import closest_fonts, rank_fonts
from .inference import (AugmentedCopy, SearchPool, model_outputs, predict, predict_views, predictions_by_method,
                        search_workers)
from .layout import LAYOUTS, Layout, candidates, light_ink_share, synthetic_margins
from .metrics import score
from .paths import write_text_atomic
from .train import ModelInputs, Source, Trainer, TrainConfig


@dataclass
class AdaptConfig:
    """Hyper-parameters of self-training (stored in each round's checkpoint)."""

    rounds: int = 7
    ramp_rounds: int = 5  # the share grows over the first ramp_rounds rounds, then stays at end_share
    steps_per_round: int = 500
    start_share: float = 0.4
    end_share: float = 0.9  # 0.8 until session 33: 0.9 read GW's train labels better (benchmarks/EXPERIMENTS.md)
    synthetic_share: float = 0.1
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 50
    num_workers: int = 2
    seed: int = 0
    # precision of the training steps (hwlearn.train.autocast_dtype): "auto" is bf16 (or fp16) on CUDA and float32
    # on the CPU; "bf16" asks for bf16 on the CPU too; "off" float32 anywhere
    amp: str = "auto"
    # prefixes the pseudo-labels' search keeps (and the rounds' report-only readings); None: LEXICON_BEAM with a
    # lexicon, else CHARLM_BEAM
    beam_width: int | None = None
    layout: str = "auto"  # "auto" (chosen by mean confidence) or one of hwlearn.layout.LAYOUTS
    # read the images with their grey levels inverted (light ink on dark paper); None: when most of them look so
    # (hwlearn.layout.light_ink_share > 0.5)
    invert: bool | None = None
    match_fonts: int = 20  # > 0: synthetic words only from the fonts closest to the images (hwlearn.fontmatch)
    # before round 1, train the pretrained model this many steps on synthetic words from those closest fonts alone
    # (tune_to_fonts; 0: none, and none when no fonts were matched): the rounds start from, and the student from, a
    # model that has seen more of the handwriting styles nearest the images. On GW's held-out pages the students
    # read better on both pretrained models tried (benchmarks/EXPERIMENTS.md, session 64)
    font_steps: int = 2000
    # draw the synthetic words from these fonts instead of matching them to the images (an earlier adaptation's
    # matched fonts: recipes.adapt_folder's fonts_from, `hwlearn adapt --fonts-from`); (): match them
    fonts: tuple[str, ...] = ()
    # share of the font stage's words that start in lower case written with a capital first letter (0: as drawn).
    # Misread capitals are GW's largest error class, but 0.5 gained nothing measurable: GW's held-out pages a tie
    # (fewer capitals misread, the rest worse), its train labels over two adaptations a tie (greedy 0.0551 -> 0.0565,
    # character model 0.0538 -> 0.0531), `hwlearn demo` worse (benchmarks/EXPERIMENTS.md, sessions 65-66)
    font_capitals: float = 0.0
    views: int = 4  # augmented copies of each image read too; the pseudo-label is the reading they agree on best
    augment: str = "strong"  # augmentation of the pseudo-labeled images in training: "strong" or "light" (AUGMENTS)
    dropout: float | None = 0.2  # dropout while training on the pseudo-labels (None: the model's own; see adapt())
    # give characters in few readings (German capital umlauts) their share of the selection and repeat their
    # pseudo-labels in training (select_by_rank, repeat_rare); off: it helps DHSD's Ä, but on GW (rare capitals
    # and digits, often misread) it repeats the misreadings (benchmarks/EXPERIMENTS.md, sessions 44-45)
    rare_chars: bool = False
    # hold each trailing mark's share of the pseudo-labels at round 0's (hold_mark_shares): self-training drops the
    # marks the model is unsure of a little more each round (GW's commas: 8.6 % of the readings at round 0, 4.1 % at
    # round 6); holding them read GW's train labels better on four pretrained models (benchmarks/EXPERIMENTS.md, session 53)
    hold_marks: bool = True
    # leave out of each selection the readings without a trailing mark (``day``) that a mark the images use
    # (doubting_marks) would make nearly as likely: log P(day,) - log P(day) > -mark_doubt, read from the image
    # (mark_doubted; 0: keep them). Trained on, they teach the model to leave out marks it sees: a quarter of GW's
    # wrong pseudo-labels were commas read as nothing. 5 read GW's train labels better on two pretrained models, but
    # a weaker one (seed 16) and `hwlearn demo` (CER 0.396 -> 0.436) worse: a model unsure of its readings doubts
    # many of them (the demo's round 1: 90 of 160). Off until a rule holds on all of them (benchmarks/EXPERIMENTS.md,
    # sessions 81-82)
    mark_doubt: float = 0.0
    # after the rounds, train a fresh *student* from the pretrained weights for this many steps on the last round's
    # pseudo-labels (the end share, marks held), to compete with the rounds for the final model (None: four times
    # as many steps as the rounds together, STUDENT_STEPS_PER_ROUND_STEP; 0: no student). A model self-trained round
    # after round keeps the errors it learned early; one trained once on the best labels need not. The held-out
    # words of GW and DHSD read better on all six adaptations tried (benchmarks/EXPERIMENTS.md, sessions 60-62)
    student_steps: int | None = None
    # finish within this many seconds of the adaptation's start (None: no limit): a round after the first starts
    # only when it fits at the pace of the slowest round before (round_fits_in_time), and the student is cut to the
    # steps that fit at the rounds' pace, or left out (student_steps_in_time)
    time_limit: float | None = None

    def share(self, round_index: int) -> float:
        """Share of the unlabeled images selected in round ``round_index`` (1-based): growing
        linearly from ``start_share`` to ``end_share`` over the first ``ramp_rounds`` rounds (all
        of them when there are fewer), then held at ``end_share``."""
        ramp = min(self.ramp_rounds, self.rounds)
        if ramp <= 1:
            return self.end_share
        t = min(1.0, (round_index - 1) / (ramp - 1))
        return self.start_share + t * (self.end_share - self.start_share)


#: The student's steps (:attr:`AdaptConfig.student_steps` None) per training step of the rounds: on the held-out
#: words of both datasets each doubling read better greedily, from as many as the rounds' to four times as many (GW
#: 0.0946 -> 0.0910 -> 0.0851 over two pretrained models, DHSD 0.1360 -> 0.1285 -> 0.1230; benchmarks/EXPERIMENTS.md,
#: sessions 61-62). It costs time: on 2 CPU cores ~10 minutes for GW's 6 x 300 round steps.
STUDENT_STEPS_PER_ROUND_STEP = 4

#: The pseudo-labels' beam with a lexicon (:attr:`AdaptConfig.beam_width` None): a search that may only grow along the
#: lexicon's words loses, with 10 prefixes, the word whose first letter the model doubts before its end (GW: the
#: pretrained model's round-1 pseudo-labels 0.270 -> 0.240 CER at 24, and the train labels read better after
#: adaptation on all four models tried; benchmarks/EXPERIMENTS.md, session 59).
LEXICON_BEAM = 24

#: The pseudo-labels' beam without a lexicon (the character model's search, or greedy): on DHSD 24 labeled
#: round 1 no better (0.2419 -> 0.2402 CER), and the one adaptation tried read the train labels a little worse.
CHARLM_BEAM = 10

#: Augmentation of the pseudo-labeled images while training on them (:attr:`AdaptConfig.augment`).
AUGMENTS = {"strong": augment_real_strong, "light": augment_real}


def stage_name(round_index: int, student: bool) -> str:
    """What reports call round ``round_index``: ``"round 3"``, or ``"student"`` for the student."""
    return "student" if student else f"round {round_index}"


@dataclass
class RoundReport:
    round: int
    labeled: int
    selected: int
    share: float
    mean_confidence: float
    selected_confidence: float
    val: dict = field(default_factory=dict)
    checkpoint: str = ""
    #: wall seconds of the round: ``training`` (on its pseudo-labels), ``labeling`` (reading every unlabeled
    #: image afterwards, in all views) and ``report`` (reading the validation labels, when given)
    seconds: dict = field(default_factory=dict)
    student: bool = False  # the fresh student trained after the rounds (AdaptConfig.student_steps)

    @property
    def name(self) -> str:
        """``"round 3"``, or ``"student"``."""
        return stage_name(self.round, self.student)

    def seconds_text(self) -> str:
        """``"training 55 s, labeling 33 s"``: where the round's time went."""
        return ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items())


@dataclass
class AdaptResult:
    rounds: list[RoundReport]
    chosen_round: int
    final_checkpoint: Path
    skipped: list[tuple[Path, str]]
    layout: str = "as-is"  # hwlearn.layout.Layout.describe(): the kind, ", inverted" added when it inverts
    layout_scores: dict[str, float] = field(default_factory=dict)
    #: the student's steps: ``asked`` (AdaptConfig.student_steps), ``trained`` (fewer when a time limit cut them,
    #: 0 when it left the student out) and the ``time_limit`` in seconds (None: none); ``left_out_by`` when the
    #: stages stopped before it: ``"time limit"`` or ``"no usable pseudo-label"``
    student_steps: dict = field(default_factory=dict)
    #: the rounds: ``asked`` (AdaptConfig.rounds) and ``trained`` (fewer when a time limit left the last ones out, or
    #: when no image had a usable pseudo-label: then ``left_out_by`` says which)
    rounds_trained: dict = field(default_factory=dict)

    @property
    def chosen(self) -> RoundReport:
        """The report row of the chosen round (or student)."""
        return next(row for row in self.rounds if row.round == self.chosen_round)


#: A character held by fewer than this share of the readings is rare (:attr:`AdaptConfig.rare_chars`).
RARE_CHAR_SHARE = 0.02
#: With :attr:`AdaptConfig.rare_chars`, pseudo-labels holding a rare character are repeated in training until
#: it is in about this share of them, at most :data:`RARE_CHAR_COPIES` times each.
RARE_CHAR_FLOOR = 0.01
RARE_CHAR_COPIES = 8


def rare_characters(texts: Sequence[str]) -> dict[str, int]:
    """``{character: number of texts holding it}`` for the characters in fewer than :data:`RARE_CHAR_SHARE`
    of ``texts``."""
    count = Counter(ch for text in texts for ch in set(text))
    return {ch: n for ch, n in count.items() if n < RARE_CHAR_SHARE * len(texts)}


def select_by_rank(predictions: Sequence[Prediction], share: float, charset: Charset,
                   rare_chars: bool = False) -> list[int]:
    """Indices of the ``share`` most confident non-empty predictions (ties broken by index).

    With ``rare_chars``, the readings holding a rare character (:func:`rare_characters`) are selected at
    ``share`` too: at least the ``share`` most confident of them. Self-training otherwise leaves a
    rare letter's less confident readings out, and unlearns the letter (benchmarks/EXPERIMENTS.md,
    session 44)."""
    usable = [i for i, p in enumerate(predictions) if p.text.strip() and charset.covers(p.text)]
    usable.sort(key=lambda i: (-predictions[i].confidence, i))
    k = int(round(share * len(predictions)))
    chosen = set(usable[: max(1, min(k, len(usable)))]) if usable else set()
    if rare_chars:
        for ch in rare_characters([predictions[i].text for i in usable]):
            holders = [i for i in usable if ch in predictions[i].text]  # most confident first
            need = int(round(share * len(holders))) - sum(i in chosen for i in holders)
            for i in holders:
                if need <= 0:
                    break
                if i not in chosen:
                    chosen.add(i)
                    need -= 1
    return sorted(chosen)


def repeat_rare(items: Sequence[tuple[object, str]]) -> list[tuple[object, str]]:
    """``(image, text)`` items with those holding a rare character (:func:`rare_characters`) repeated, so
    that each rare character is in about :data:`RARE_CHAR_FLOOR` of the items (each item at most
    :data:`RARE_CHAR_COPIES` times; every repeat is augmented anew when drawn)."""
    rare = rare_characters([text for _, text in items])
    out = []
    for item in items:
        copies = max((math.ceil(RARE_CHAR_FLOOR * len(items) / rare[ch]) for ch in set(item[1]) if ch in rare),
                     default=1)
        out.extend([item] * min(RARE_CHAR_COPIES, copies))  # copies >= 1: a ceiling of a positive number
    return out


#: Key of the final checkpoint's meta holding the pseudo-labels the chosen round trained on, ``{text: count}``.
DOMAIN_WORDS = "domain_words"

#: File in each round's directory listing every unlabeled image's pseudo-label (see :func:`write_pseudo_labels`).
PSEUDO_LABELS = "pseudo_labels.tsv"

#: File in each round's directory (``round0``: the pretrained model's) with every image's reading by the round's
#: model after it trained, which the next round selects from (:func:`save_readings`).
READINGS = "readings.json"


#: Trailing marks whose share of the pseudo-labels :func:`hold_mark_shares` holds.
HELD_MARKS = (",", ".", ";", ":", "-")


def _bare(text: str) -> bool:
    """``text`` ends in a letter or digit (``day``): a mark can be added to it."""
    return bool(text) and text[-1].isalnum()


def _marked(text: str, mark: str) -> bool:
    """``text`` ends in ``mark`` after a letter or digit (``day,``): the mark can be dropped from it."""
    return len(text) > 1 and text.endswith(mark) and text[-2].isalnum()


def mark_shares(texts: Sequence[str]) -> dict[str, float]:
    """Share of ``texts`` ending in each of :data:`HELD_MARKS` after a letter or digit (``day,``)."""
    n = max(1, len(texts))
    return {m: sum(_marked(t, m) for t in texts) / n for m in HELD_MARKS}


def mark_changes(texts: Sequence[str], target: dict[str, float]) -> dict[str, int]:
    """For each of :data:`HELD_MARKS`, how many of ``texts`` must gain it (negative: lose it) for its
    share (:func:`mark_shares`) to be back at ``target``'s."""
    shares = mark_shares(texts)
    return {m: round((target.get(m, 0.0) - shares[m]) * len(texts)) for m in HELD_MARKS}


@torch.no_grad()
def mark_gains(model, inputs, texts: Sequence[str], charset: Charset, device, batch_size: int = 64,
               marks: Sequence[str] = HELD_MARKS) -> np.ndarray:
    """``(len(texts), len(HELD_MARKS))``: what each of ``marks`` adds to the log-probability of each
    text, read from the images (``inputs``, no copies): log P(text + mark) - log P(text) for a text
    ending in a letter or digit, and for one ending in that mark after a letter or digit log P(text)
    - log P(text without it) (negative: the image reads likelier without it). ``-inf`` where neither
    applies, for the other marks and for a mark not in the charset."""
    gains = np.full((len(texts), len(HELD_MARKS)), -np.inf)
    columns = [(k, m) for k, m in enumerate(HELD_MARKS) if m in marks and m in charset]
    for idx, [(log_probs, lengths)] in model_outputs(model, [inputs], device, batch_size):
        for k, mark in columns:
            rows, labels = [], []  # (batch column, image) and its text with and without the mark
            for b, i in enumerate(idx):
                t = texts[i]
                if _bare(t):
                    rows.append((b, i))
                    labels += [charset.encode(t + mark), charset.encode(t)]
                elif _marked(t, mark):
                    rows.append((b, i))
                    labels += [charset.encode(t), charset.encode(t[:-1])]
            if not rows:
                continue
            cols = [b for b, _ in rows for _ in (0, 1)]
            ll = ctc_log_likelihood(log_probs[:, cols], lengths[cols], labels).numpy()
            for j, (_, i) in enumerate(rows):
                gains[i, k] = ll[2 * j] - ll[2 * j + 1]
    return gains


#: With :attr:`AdaptConfig.mark_doubt`, a trailing mark doubts the readings without one only where it ends at
#: least this share of round 0's readings: one the images do not use is no sign of a mark left out (DHSD's
#: place names: "." and "-" end 0.08 % and 0.11 % of them; GW's ",", ".", ";" and "-" 1.7-6.9 %).
DOUBTING_MARK_SHARE = 0.01


def doubting_marks(shares: dict[str, float]) -> list[str]:
    """The marks of :data:`HELD_MARKS` that end at least :data:`DOUBTING_MARK_SHARE` of round 0's readings
    (``shares``: :func:`mark_shares`)."""
    return [m for m in HELD_MARKS if shares.get(m, 0.0) >= DOUBTING_MARK_SHARE]


def mark_doubted(model, inputs, preds: Sequence[Prediction], selected: Sequence[int], charset: Charset, device,
                 doubt: float, batch_size: int = 64, read: tuple[Sequence[str], np.ndarray] | None = None,
                 marks: Sequence[str] = HELD_MARKS) -> list[int]:
    """Of ``selected`` (indexes into ``preds`` and ``inputs``), the readings ending in a letter or digit (``day``)
    that one of ``marks`` would make nearly as likely: log P(``day,``) - log P(``day``) > -``doubt``, read from the
    image (:func:`mark_gains`). None when ``doubt`` is 0 or there are no ``marks``. ``read``: texts and their
    :func:`mark_gains` for every mark, read by the same model (holding the marks' shares reads them): reused for
    the readings whose text is the same, so only the others are read again."""
    columns = [k for k, m in enumerate(HELD_MARKS) if m in marks]
    bare = [i for i in selected if _bare(preds[i].text)] if doubt > 0 and columns else []
    gains, fresh = {}, []  # (fresh: read again, its text not the one ``read`` holds)
    for i in bare:
        if read is not None and read[0][i] == preds[i].text:
            gains[i] = read[1][i]
        else:
            fresh.append(i)
    if fresh:
        rows = mark_gains(model, [inputs[i] for i in fresh], [preds[i].text for i in fresh], charset, device,
                          batch_size, marks)
        gains.update(zip(fresh, rows))
    return [i for i in bare if gains[i][columns].max() > -doubt]


def hold_mark_shares(preds: Sequence[Prediction], changes: dict[str, int], gains: np.ndarray,
                     charset: Charset) -> tuple[list[Prediction], dict[str, int]]:
    """The readings with each mark added to, or dropped from, as many readings as ``changes`` says
    (:func:`mark_changes`): added to the readings without a mark that gain most from it, dropped from
    those of its readings that lose least without it (``gains``, :func:`mark_gains`). Returns the
    readings (confidences unchanged) and how many each mark gained (negative: lost); fewer than
    asked where too few readings can take the change."""
    texts = [p.text for p in preds]
    moved = {}
    for k, mark in enumerate(HELD_MARKS):
        change = changes.get(mark, 0)
        if change > 0:
            pool = [i for i, t in enumerate(texts) if _bare(t) and np.isfinite(gains[i, k])]
            chosen = sorted(pool, key=lambda i: -gains[i, k])[:change]
            for i in chosen:
                texts[i] += mark
        elif change < 0:
            pool = [i for i, t in enumerate(texts) if _marked(t, mark) and np.isfinite(gains[i, k])]
            chosen = sorted(pool, key=lambda i: gains[i, k])[:-change]
            for i in chosen:
                texts[i] = texts[i][:-1]
        else:
            chosen = []
        moved[mark] = len(chosen) if change > 0 else -len(chosen)
    out = [p if p.text == t else Prediction(t, p.confidence, charset.encode(t)) for p, t in zip(preds, texts)]
    return out, moved


def write_pseudo_labels(path: Path, images: Sequence[Path], predictions: Sequence[Prediction],
                        selected: Sequence[int]) -> None:
    """Write what a round trains on, for inspection: a TSV with a header and one row per image —
    ``image`` (path), ``pseudo_label``, ``confidence``, ``selected`` (1: trained on) — most confident
    first. Tabs and newlines in a label are written as spaces."""
    chosen = set(selected)
    order = sorted(range(len(predictions)), key=lambda i: (-predictions[i].confidence, i))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("image\tpseudo_label\tconfidence\tselected\n")
        for i in order:
            label = " ".join(predictions[i].text.split("\t")).replace("\n", " ")
            f.write(f"{images[i]}\t{label}\t{predictions[i].confidence:.4f}\t{int(i in chosen)}\n")
    tmp.replace(path)


#: The layout is chosen on at most this many of the unlabeled images (a seeded sample of larger sets):
#: reading all of DHSD's 4745 under every candidate took ~43 s. On GW, whose two best layouts are
#: close, 1000-image samples chose another layout than all 2375 images 1.75 % of the time, 2000-image
#: ones never (benchmarks/EXPERIMENTS.md, session 24).
LAYOUT_SAMPLE = 2000


def choose_layout(model, images: Sequence[np.ndarray], synthetic: Dataset, config: AdaptConfig, charset: Charset,
                  height: int, *, device, method: str = "greedy", lexicon=None, charlm=None,
                  margin_samples: int = 200, pool=None,
                  sample: int = LAYOUT_SAMPLE) -> tuple[Layout, dict[str, float], list[Prediction] | None]:
    """The :class:`hwlearn.layout.Layout` the unlabeled ``images`` are read in, the mean confidence
    of the model's labels under each candidate, and those labels of all ``images`` under the chosen
    layout (None when no candidate was tried or only a sample was read), so the caller need not
    label the images again.

    The margins come from ``margin_samples`` synthetic words (what the model was trained on). With
    ``config.layout == "auto"`` every layout of :data:`hwlearn.layout.LAYOUTS` is tried on ``sample``
    of the images (all of them when there are no more; else a sample seeded by ``config.seed``) and
    the one with the highest mean confidence wins (ties: the earlier, ``as-is`` first); otherwise the
    named one is used without trying the others. The candidates invert the images' grey levels with
    ``config.invert``, or when it is None and most images look like light ink on dark paper
    (:func:`hwlearn.layout.light_ink_share`)."""
    margins = synthetic_margins(synthetic[i][0] for i in range(min(margin_samples, len(synthetic))))
    kinds = LAYOUTS if config.layout == "auto" else (config.layout,)
    invert = config.invert if config.invert is not None else light_ink_share(images) > 0.5
    layouts = candidates(kinds, margins, invert)
    if len(layouts) == 1:
        return layouts[0], {}, None
    read = list(images)
    if len(images) > sample:
        pick = np.random.default_rng([config.seed, len(images)]).choice(len(images), size=sample, replace=False)
        read = [images[i] for i in sorted(pick.tolist())]
    scores, labels = {}, {}
    for layout in layouts:
        labels[layout.kind] = predict(model, [(to_model_input(layout(img), height), None) for img in read],
                                      charset, device=device, method=method, lexicon=lexicon,
                                      beam_width=config.beam_width, charlm=charlm, pool=pool)
        scores[layout.kind] = float(np.mean([p.confidence for p in labels[layout.kind]])) if read else 0.0
    best = layouts[max(range(len(layouts)), key=lambda i: (scores[layouts[i].kind], -i))]
    return best, scores, labels[best.kind] if len(read) == len(images) else None


def match_synthetic_fonts(model, inputs, synthetic, config: AdaptConfig, charset: Charset, height: int, device,
                          max_images: int = 1000):
    """``(synthetic drawing only with the fonts closest to the images, their names)``: the
    ``config.match_fonts`` closest by :func:`hwlearn.fontmatch.rank_fonts` (on up to ``max_images``
    of ``inputs``, a seeded sample), plus any further font needed to draw every character; or the fonts
    ``config.fonts`` names, when it names any, without matching. ``(synthetic, [])`` unchanged when there
    is nothing to choose: a stream that cannot be redrawn with fewer fonts (no ``with_fonts``), or one
    with no more than ``config.match_fonts`` fonts."""
    fonts = getattr(getattr(synthetic, "renderer", None), "fonts", None)
    if not hasattr(synthetic, "with_fonts") or fonts is None:
        console.print("font matching skipped: the synthetic stream cannot be redrawn with fewer fonts")
        return synthetic, []
    if config.fonts:
        keep = list(config.fonts)
        try:
            chosen = synthetic.with_fonts(keep)
        except HwlearnError as exc:
            raise HwlearnError(f"the fonts an earlier adaptation matched, in the pretrained model's fonts: {exc}") from None
        console.print(f"synthetic words from the {len(keep)} fonts an earlier adaptation matched: {', '.join(keep)}")
        return chosen, keep
    if len(fonts) <= config.match_fonts:
        console.print(f"font matching skipped: the synthetic words use {len(fonts)} fonts, "
                      f"no more than the {config.match_fonts} asked for")
        return synthetic, []
    rng = np.random.default_rng(config.seed)
    pick = sorted(rng.choice(len(inputs), size=min(max_images, len(inputs)), replace=False).tolist())
    ranking = rank_fonts(model, height, [inputs[i][0] for i in pick], synthetic, seed=config.seed, device=device)
    keep = closest_fonts(ranking, synthetic.renderer.fonts, charset, config.match_fonts)
    console.print(f"synthetic words from the {len(keep)} fonts closest to the images: {', '.join(keep)}")
    return synthetic.with_fonts(keep), keep


def stage_meta(meta: dict, config: AdaptConfig, round_index: int, source: Path, fonts_used: list[str],
               **facts) -> dict:
    """The metadata a stage of the run (the font stage as round 0, a round, the student) trains and is saved with:
    the pretrained checkpoint's ``meta`` without its training record, metrics and domain words, and under ``adapt``
    the settings, the stage's index, ``facts`` (e.g. how many readings it selected), the checkpoint the run
    started from and the fonts its synthetic words were drawn from."""
    return {**{k: v for k, v in meta.items() if k not in ("training", "metrics", DOMAIN_WORDS)},
            "adapt": {**asdict(config), "round": round_index, **facts, "source": str(source), "fonts_used": fonts_used}}


def training_record(trainer: Trainer, phase: str) -> dict:
    """How a stage's model was trained, for its checkpoint's ``training`` entry."""
    return {"phase": phase, "step": trainer.step, "seconds": round(trainer.seconds, 1), "device": str(trainer.device),
            "precision": trainer.precision}


#: Where the model trained on the matched fonts before round 1 is written (:func:`tune_to_fonts`): ``OUT/fonts/last``.
FONTS_STAGE = "fonts"


def font_stage_key(checkpoint: Path, source_meta: dict, synthetic, fonts_used: Sequence[str],
                   config: AdaptConfig) -> str:
    """What makes the font stage's model (:func:`tune_to_fonts`): the pretrained checkpoint (path and training
    record), the synthetic words it trains on (the stream's description and the matched fonts) and the settings
    it trains with. The images count only through the fonts they matched: two runs on images of the same hands
    that match the same fonts train the same stage to the last bit, so a run may start from a copy of the
    other's ``fonts/last`` (``benchmarks/real_accuracy.py`` does so for the train + test images' adaptation)."""
    settings = {k: getattr(config, k) for k in ("font_steps", "font_capitals", "batch_size", "lr", "warmup_steps",
                                                "num_workers", "seed")}
    if config.amp != "auto":
        settings["amp"] = config.amp
    return _digest({**_source_parts(checkpoint, source_meta), "synthetic": getattr(synthetic, "info", None),
                    "fonts": sorted(fonts_used), "config": settings})


def _source_parts(checkpoint: Path, source_meta: dict) -> dict:
    """The pretrained checkpoint as a key knows it: its path and its training record."""
    return {"source": str(Path(checkpoint).resolve()), "source_training": source_meta.get("training")}


def _digest(parts: dict) -> str:
    """A short hash of ``parts`` (JSON, keys sorted): the keys saved with a run's stages."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tune_to_fonts(model, synthetic, config: AdaptConfig, charset: Charset, height: int, out_dir: Path, key: str,
                  meta: dict, device, dropout: float, resume: bool = False, reuse: Path | None = None) -> Path:
    """Train ``model`` ``config.font_steps`` steps on the synthetic words of ``synthetic`` alone (already drawn
    from the fonts closest to the images, :func:`match_synthetic_fonts`) with ``dropout`` (the pretrained model's
    own), at the rounds' learning rate and batch size, ``config.font_capitals`` of the words that start in lower
    case written with a capital first letter, and save it with ``meta`` (:func:`stage_meta`) to ``out_dir`` /
    :data:`FONTS_STAGE` ``/ last`` under ``key`` (:func:`font_stage_key`); return that path. With ``resume``, a
    model saved there under ``key`` is loaded instead of trained again; so is, resuming or not, one saved under
    ``key`` in the run directory ``reuse`` (an earlier adaptation's: it is copied in first). The rounds start from it, and so does the student: pretraining saw every font
    equally, and the styles nearest the images (GW's copperplate capitals, say) were a few of the 65."""
    last = out_dir / FONTS_STAGE / "last"
    for found in ([last] if resume else []) + ([reuse / FONTS_STAGE / "last"] if reuse is not None else []):
        try:
            saved = json.loads((found / "meta.json").read_text(encoding="utf-8")).get("resume_key") == key
        except (OSError, ValueError):
            saved = False
        if saved:
            stage = load_checkpoint(found, device=device)
            if found != last:  # this run's metadata (its layout, settings) with the stage's key and training record
                save_checkpoint(last, stage.model, charset,
                                meta={**meta, "resume_key": key, "training": stage.meta.get("training")})
            model.load_state_dict(stage.model.state_dict())
            console.print(f"resuming: the model trained on the matched fonts is in {found}")
            return last
    rounds_dropout = model.config.dropout
    model.set_dropout(dropout)
    train_config = TrainConfig(steps=config.font_steps, batch_size=config.batch_size, lr=config.lr,
                               warmup_steps=config.warmup_steps, val_every=config.font_steps,
                               num_workers=config.num_workers, seed=config.seed * 1000, phase="adapt-fonts",
                               amp=config.amp)
    if config.font_capitals and hasattr(synthetic, "with_capitals"):  # (a stream of another kind as it is)
        synthetic = synthetic.with_capitals(config.font_capitals)
    words = Source(ModelInputs(synthetic, height), share=1.0, infinite=True, name="synthetic")
    trainer = Trainer(model, charset, [words], last.parent, train_config, device=device, meta=meta)
    trainer.fit()
    model.set_dropout(rounds_dropout)
    save_checkpoint(last, model, charset,
                    meta={**meta, "resume_key": key, "training": training_record(trainer, train_config.phase)})
    console.print(f"trained {config.font_steps} steps on the matched fonts' words alone ({trainer.seconds:.0f} s)")
    return last


def matched_fonts(run_dir: str | Path) -> list[str]:
    """The fonts an adaptation in ``run_dir`` drew its synthetic words from (``fonts_used`` of its font stage,
    else of its final model); raises :class:`HwlearnError` when it has neither or matched none."""
    run_dir = Path(run_dir)
    for meta_path, keys in ((run_dir / FONTS_STAGE / "last" / "meta.json", ("adapt", "fonts_used")),
                            (run_dir / "final" / "meta.json", ("adapt_summary", "fonts_used"))):
        try:
            fonts = json.loads(meta_path.read_text(encoding="utf-8"))[keys[0]][keys[1]]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if fonts:
            return list(fonts)
    raise HwlearnError(f"{run_dir}: no adaptation with matched fonts here (neither {FONTS_STAGE}/last nor final "
                       "records any)")


def resume_key(checkpoint: Path, source_meta: dict, unlabeled: Sequence[Path], config: AdaptConfig, method: str,
               lexicon, charlm, layout: Layout, val_items: Sequence[tuple[Path, str]]) -> str:
    """What makes a round's result: the pretrained checkpoint (path and training record), the images in
    order, the settings, the reading method and its lexicon or character model, the layout, and the
    report-only validation labels. A finished round is reused only under the same key. The student's steps and
    the time limit are left out: the rounds do not depend on them (a finished run given a student reuses its
    rounds), and the student's checkpoint records its own steps (:func:`finished_rounds`). ``config.invert`` counts through the layout,
    which records what was decided."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("student_steps", "invert", "time_limit")}
    if not config.fonts:
        del settings["fonts"]  # (matched fonts follow from the rest: the keys of runs before the field stay)
    if config.amp == "auto":
        del settings["amp"]  # (the keys of runs before the field stay)
    if not config.mark_doubt:
        del settings["mark_doubt"]  # (the keys of runs before the field stay)
    parts = {
        **_source_parts(checkpoint, source_meta),
        "images": [str(p) for p in unlabeled], "config": settings, "method": method,
        "lexicon": ([len(lexicon), len(lexicon.breaks), lexicon.prior_weight]
                    + ([lexicon.length_bonus] if lexicon.length_bonus else [])) if lexicon is not None else None,
        "charlm": [charlm.num_words, charlm.order] if method == "charlm" else None,
        "layout": layout.to_dict(), "val": [[str(p), t] for p, t in val_items],
    }
    return _digest(parts)


def stage_dir(out_dir: Path, config: AdaptConfig, r: int) -> Path:
    """Where round ``r`` of ``config``'s run in ``out_dir`` writes: ``round<r>``, or ``student`` for the student
    trained after the rounds (``r`` = ``config.rounds`` + 1)."""
    return out_dir / ("student" if r > config.rounds else f"round{r}")


def last_stage(config: AdaptConfig) -> int:
    """The index of the run's last stage: ``config.rounds``, plus one for the student when it has steps."""
    return config.rounds + (config.student_steps > 0)


def finished_rounds(out_dir: Path, key: str, config: AdaptConfig) -> list[RoundReport]:
    """The report rows of the rounds 1, 2, ... (and the student, when ``config`` asks for one) that a run with
    ``key`` finished in ``out_dir`` (stops at the first one missing, unfinished or made under another key, or a
    student trained for another number of steps: :func:`student_as_asked`)."""
    done = []
    for r in range(1, last_stage(config) + 1):
        folder = stage_dir(out_dir, config, r)
        try:
            meta = json.loads((folder / "last" / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            break
        row = meta.get("report")
        if meta.get("resume_key") != key or not isinstance(row, dict) or not (folder / PSEUDO_LABELS).is_file() \
                or (r > config.rounds and not student_as_asked(meta.get("adapt", {}), config)):
            break
        try:
            done.append(RoundReport(**row))
        except TypeError:  # a row of another hwlearn version
            break
    return done


def student_as_asked(adapt_meta: dict, config: AdaptConfig) -> bool:
    """Whether a finished student (its checkpoint's ``adapt`` entry) is the one ``config`` asks for: trained for
    ``config.student_steps``, or, when ``config`` has a time limit too, cut from them by one
    (:func:`student_steps_in_time`; its ``student_steps_asked``). Without a time limit a cut student is trained
    again for all its steps."""
    if "student_steps_asked" in adapt_meta:
        return config.time_limit is not None and adapt_meta["student_steps_asked"] == config.student_steps
    return adapt_meta.get("student_steps") == config.student_steps


def student_steps_in_time(config: AdaptConfig, rounds: Sequence[RoundReport], seconds_left: float) -> int:
    """The student's steps that fit in ``seconds_left``: at most ``config.student_steps``, as many as the rounds'
    training pace (their ``training`` seconds per step) allows once the reading of the images that follows it (as
    long as the last round's ``labeling``) is set aside; 0 when fewer than ``config.steps_per_round`` fit (a
    student that short reads worse than the rounds). Without rounds that trained, ``config.student_steps``."""
    trained = [row.seconds["training"] for row in rounds if row.round >= 1 and "training" in row.seconds]
    if not trained or config.steps_per_round <= 0:
        return config.student_steps
    per_step = sum(trained) / (len(trained) * config.steps_per_round)
    reading = rounds[-1].seconds.get("labeling", 0.0)
    fits = math.floor((seconds_left - reading) / per_step) if per_step > 0 else config.student_steps
    steps = min(config.student_steps, max(fits, 0))
    return steps if steps >= config.steps_per_round else 0


def round_fits_in_time(rounds: Sequence[RoundReport], seconds_left: float) -> bool:
    """Whether one more round fits in ``seconds_left``, at the pace of the rounds that trained (round 0 and the
    student aside): as long as the slowest of them took (``seconds``: holding the marks, training, reading the images
    and the report; the mean let GW's train + test adaptation end right at its limit, the later rounds holding marks
    the first did not). True while no round has trained: the first round always runs, or there is no adaptation."""
    walls = [sum(row.seconds.values()) for row in rounds if row.round >= 1 and not row.student and row.seconds]
    return not walls or seconds_left >= max(walls)


def save_readings(folder: Path, key: str, predictions: Sequence[Prediction], row: RoundReport | None = None) -> None:
    """Write every image's reading by a round's model (and, for round 0, its report row) to ``folder`` /
    :data:`READINGS` under the run's resume ``key``, so a resumed run need not read the images again."""
    data = {"resume_key": key, "readings": [[p.text, float(p.confidence)] for p in predictions]}
    if row is not None:
        data["report"] = asdict(row)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / READINGS, json.dumps(data, ensure_ascii=False))


def saved_readings(folder: Path, key: str, count: int,
                   charset: Charset) -> tuple[list[Prediction], RoundReport | None] | None:
    """The readings (and report row, when saved) :func:`save_readings` wrote to ``folder`` under ``key`` for
    ``count`` images; None when there are none, or they were made under another key or for other images."""
    try:
        data = json.loads((folder / READINGS).read_text(encoding="utf-8"))
        if data.get("resume_key") != key or len(data["readings"]) != count:
            return None
        preds = [Prediction(text, float(confidence), charset.encode(text)) for text, confidence in data["readings"]]
        row = RoundReport(**data["report"]) if "report" in data else None
    except (OSError, ValueError, KeyError, TypeError):  # unreadable, or written by another hwlearn version
        return None
    return preds, row


def read_selected_labels(path: Path) -> Counter:
    """The pseudo-labels a round trained on, and how often each, from its :func:`write_pseudo_labels` file."""
    readings: Counter = Counter()
    with open(path, encoding="utf-8") as f:
        next(f, None)
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) == 4 and fields[3] == "1":
                readings[fields[1]] += 1
    return readings


def adapt(
    checkpoint: str | Path,
    unlabeled: Sequence[Path],
    out_dir: str | Path,
    synthetic: Dataset,
    config: AdaptConfig = AdaptConfig(),
    *,
    lexicon=None,
    charlm=None,
    val_items: Sequence[tuple[Path, str]] = (),
    device: str | torch.device = "cpu",
    skipped: Sequence[tuple[Path, str]] = (),
    report=None,
    resume: bool = False,
    fonts_from: str | Path | None = None,
    started: float | None = None,
) -> AdaptResult:
    """Self-train the model in ``checkpoint`` on ``unlabeled`` image paths; see the module docstring.

    ``started``: the :func:`time.monotonic` instant ``config.time_limit`` counts from (default: this call's start;
    :func:`hwlearn.recipes.adapt_folder` passes its own, before the lexicon and images are loaded).

    ``fonts_from``: an earlier adaptation's run directory (of the same pretrained model, say on fewer images of
    the same hands): its matched fonts are used instead of matching them again (:func:`matched_fonts`), and its
    font stage instead of training one when it was trained with the same settings (:func:`tune_to_fonts`).

    ``synthetic`` yields ``(uint8 image, word)`` (e.g. :class:`hwlearn.synth.SyntheticWords`);
    ``report(RoundReport)`` is called after each round (the CLI prints the table row).
    Pseudo-labels are decoded with ``lexicon`` (a :class:`hwlearn.decode.Lexicon`) when given, else
    with ``charlm`` (a :class:`hwlearn.charlm.CharLM`) when given, else greedily. With ``resume``, rounds
    that an earlier run with the same inputs finished in ``out_dir`` are reused (module docstring).
    """
    started = time.monotonic() if started is None else started
    out_dir = Path(out_dir)
    if fonts_from is not None:
        config = replace(config, fonts=tuple(matched_fonts(fonts_from)))
    ckpt = load_checkpoint(checkpoint, device=device)
    model, charset, meta = ckpt.model, ckpt.charset, ckpt.meta
    height = int(meta["preprocessing"]["height"])
    device = torch.device(device) if not isinstance(device, torch.device) else device
    method = "lexicon" if lexicon is not None else reading_method(None, charlm)  # pseudo-labels: lexicon words
    if config.augment not in AUGMENTS:
        raise HwlearnError(f"unknown augmentation {config.augment!r} (choose from {', '.join(AUGMENTS)})")
    if config.beam_width is None:
        config = replace(config, beam_width=LEXICON_BEAM if lexicon is not None else CHARLM_BEAM)
    if config.student_steps is None:
        config = replace(config, student_steps=STUDENT_STEPS_PER_ROUND_STEP * config.rounds * config.steps_per_round)
    own_dropout = model.config.dropout
    if config.dropout is not None:
        model.set_dropout(config.dropout)  # (readings are made in eval mode: dropout only acts in training)

    # one pool of search workers for every reading: they keep their character model's cache warm
    searches = SearchPool(charset, lexicon, charlm, config.beam_width,
                          search_workers(len(unlabeled) * (config.views + 1) * (method != "greedy")))
    with searches:
        originals = [load_image(p) for p in unlabeled]
        layout, layout_scores, preds = choose_layout(model, originals, synthetic, config, charset, height,
                                                     device=device, method=method, lexicon=lexicon, charlm=charlm,
                                                     pool=searches, sample=LAYOUT_SAMPLE)
        console.print(f"layout: {layout.describe()} " + ("(mean confidence " + ", ".join(
            f"{k} {v:.4f}" for k, v in layout_scores.items()) + ")" if layout_scores else "(as asked)"))
        images = [layout(img) for img in originals]
        del originals
        inputs = [(to_model_input(img, height), None) for img in images]
        val = [(to_model_input(layout(load_image(p)), height), text) for p, text in val_items]
        meta = {**meta, "preprocessing": {**meta.get("preprocessing", {}), "layout": layout.to_dict()}}
        fonts_used: list[str] = []
        if config.match_fonts > 0 or config.fonts:
            synthetic, fonts_used = match_synthetic_fonts(model, inputs, synthetic, config, charset, height, device)
        key = resume_key(checkpoint, ckpt.meta, unlabeled, config, method, lexicon, charlm, layout, val_items)
        start = Path(checkpoint)  # the weights round 1 and the student start from
        if config.font_steps > 0 and fonts_used:
            start = tune_to_fonts(model, synthetic, config, charset, height, out_dir,
                                  font_stage_key(checkpoint, ckpt.meta, synthetic, fonts_used, config),
                                  stage_meta(meta, config, 0, checkpoint, fonts_used), device, own_dropout, resume,
                                  reuse=Path(fonts_from) if fonts_from is not None else None)
            preds = None  # (the layout choice's readings were the pretrained model's)

        def augmented_inputs(round_index: int, view: int) -> AugmentedCopy:
            """Model inputs of an augmented copy of every image (a fresh one per round and view, made as
            the model reads them)."""
            return AugmentedCopy(images, height, lambda i, _img: [config.seed, round_index, view, i])

        def label_and_score(round_index: int, share: float, selected: list[int], preds_before,
                            preds=None, with_val: bool = True) -> tuple[list[Prediction], RoundReport]:
            """Label every image with the current model (unless ``preds`` already holds its labels) and
            make the round's report row (reading the validation labels too unless ``with_val`` is false)."""
            started = time.perf_counter()
            if config.views > 0:  # (round 0's labels from the layout choice are read again, with the copies)
                copies = [augmented_inputs(round_index, v) for v in range(config.views)]
                preds = predict_views(model, [inputs] + copies, charset, device=device, method=method,
                                      lexicon=lexicon, beam_width=config.beam_width, charlm=charlm, pool=searches)
            elif preds is None:
                preds = predict(model, inputs, charset, device=device, method=method, lexicon=lexicon,
                                beam_width=config.beam_width, charlm=charlm, pool=searches)
            row = RoundReport(
                round=round_index,
                labeled=len(preds),
                selected=len(selected),
                share=share,
                mean_confidence=float(np.mean([p.confidence for p in preds])) if preds else 0.0,
                selected_confidence=float(np.mean([preds_before[i].confidence for i in selected])) if selected else 0.0,
            )
            row.seconds["labeling"] = round(time.perf_counter() - started, 1)
            if val and with_val:
                started = time.perf_counter()
                refs = [t for _, t in val]
                by_method = predictions_by_method(model, [val], charset, ("greedy", method), device=device,
                                                  lexicon=lexicon, beam_width=config.beam_width, charlm=charlm,
                                                  pool=searches)
                for m, vp in by_method.items():
                    s = score(refs, [p.text for p in vp])
                    suffix = {"greedy": "", "lexicon": "_lex", "charlm": "_lm"}[m]
                    row.val.update({f"cer{suffix}": s["cer"], f"wer{suffix}": s["wer"]})
                row.seconds["report"] = round(time.perf_counter() - started, 1)
            return preds, row

        done = finished_rounds(out_dir, key, config) if resume else []
        if resume and not done and (out_dir / "round1" / "last" / "meta.json").is_file():
            raise HwlearnError(f"{out_dir}: its rounds were made from another checkpoint, other images or other "
                               "settings; use --overwrite to start over")
        saved = saved_readings(out_dir / "round0", key, len(inputs), charset) if done else None
        if saved and saved[1]:
            preds, row = saved
        else:
            preds, row = label_and_score(0, 0.0, [], [], preds)  # the layout choice may have labeled them all
            row.checkpoint = str(start)
            save_readings(out_dir / "round0", key, preds, row)
        round0_marks = mark_shares([p.text for p in preds])
        doubters = doubting_marks(round0_marks) if config.mark_doubt > 0 else []
        if config.mark_doubt > 0 and not doubters:
            console.print(f"no trailing mark ends {DOUBTING_MARK_SHARE:.0%} of round 0's readings: none doubts "
                          "a reading (--mark-doubt)")
        rounds = [row]
        if report:
            report(row)
        round_dirs = {0: start}
        readings: dict[int, Counter] = {}  # round -> the pseudo-labels it trained on, and how often each
        for row in done:
            round_dirs[row.round] = stage_dir(out_dir, config, row.round) / "last"
            readings[row.round] = read_selected_labels(stage_dir(out_dir, config, row.round) / PSEUDO_LABELS)
            rounds.append(row)
            if report:
                report(row)
        if done:
            last = done[-1].round
            model.load_state_dict(load_checkpoint(round_dirs[last], device=device).model.state_dict())
            saved = saved_readings(stage_dir(out_dir, config, last), key, len(inputs), charset)
            rounds_done = min(last, config.rounds)
            finished = ("round 1" if rounds_done == 1 else f"rounds 1-{rounds_done}") \
                + (" and the student were" if last > config.rounds else " was" if rounds_done == 1 else " were")
            if saved:
                preds = saved[0]
                console.print(f"resuming: {finished} finished in {out_dir}, with {done[-1].name}'s readings")
            else:  # (a round finished by an older hwlearn, or stopped before its readings were written)
                console.print(f"resuming: {finished} finished in {out_dir}; "
                              f"re-labeling with {done[-1].name}'s model")
                preds, _ = label_and_score(last, config.share(last), [], [], with_val=False)
        stopped_by = None  # why the stages stopped before the last: "time limit" or "no usable pseudo-label"
        for r in range(len(done) + 1, last_stage(config) + 1):
            student = r > config.rounds
            name = stage_name(r, student)
            folder = stage_dir(out_dir, config, r)
            share = config.share(r)
            if not student and config.time_limit is not None:
                left = config.time_limit - (time.monotonic() - started)
                if not round_fits_in_time(rounds, left):
                    left_out = f"round {r}" if r == config.rounds else f"rounds {r}-{config.rounds}"
                    console.print(f"[yellow]{left_out}{' and the student' if config.student_steps > 0 else ''} "
                                  f"left out: {max(left, 0) / 60:.1f} of the time limit's {config.time_limit / 60:.1f} "
                                  "minutes are left, less than the slowest round took")
                    stopped_by = "time limit"
                    break
            marks_started = time.perf_counter()
            changes = mark_changes([p.text for p in preds], round0_marks) if config.hold_marks and r > 1 else {}
            read = None  # the readings' texts and mark_gains for every mark, when holding the shares reads them
            if any(changes.values()):  # (no reading of the images where every share is where it was)
                texts = [p.text for p in preds]
                gains = mark_gains(model, inputs, texts, charset, device, config.batch_size * 2,
                                   marks=sorted({m for m, n in changes.items() if n} | set(doubters)))
                read = (texts, gains) if doubters else None
                preds, moved = hold_mark_shares(preds, changes, gains, charset)
                if any(moved.values()):
                    console.print(f"{name}: trailing marks back at round 0's shares: "
                                  + ", ".join(f"{m!r} {n:+d}" for m, n in moved.items() if n))
            selected = select_by_rank(preds, share, charset, config.rare_chars)
            doubted = set(mark_doubted(model, inputs, preds, selected, charset, device, config.mark_doubt,
                                       config.batch_size * 2, read, doubters))
            if doubted and len(doubted) == len(selected):  # (a model that doubts all it reads: barely trained)
                console.print(f"[yellow]{name}: a trailing mark would read every selected reading nearly as well; "
                              "none left out")
                doubted = set()
            if doubted:
                selected = [i for i in selected if i not in doubted]
                console.print(f"{name}: {len(doubted)} readings left out of the selection: a trailing mark would "
                              "read them nearly as well")
            marks_seconds = time.perf_counter() - marks_started
            if not selected:
                console.print(f"[yellow]{name}: no usable pseudo-label (all predictions empty); stopping")
                stopped_by = "no usable pseudo-label"
                break
            stage_config = config
            if student and config.time_limit is not None:
                left = config.time_limit - (time.monotonic() - started)
                steps = student_steps_in_time(config, rounds, left)
                if steps == 0:
                    console.print(f"[yellow]student left out: {max(left, 0) / 60:.1f} of the time limit's "
                                  f"{config.time_limit / 60:.1f} minutes are left, too few for "
                                  f"{config.steps_per_round} steps at the rounds' pace")
                    stopped_by = "time limit"
                    break
                if steps < config.student_steps:
                    console.print(f"[yellow]student: {steps} of its {config.student_steps} steps fit in the "
                                  f"{left / 60:.1f} minutes left of the time limit")
                    stage_config = replace(config, student_steps=steps)
            if student:  # a fresh model: the weights round 1 started from (with the rounds' dropout, set above)
                model.load_state_dict(load_checkpoint(start, device=device).model.state_dict())
            write_pseudo_labels(folder / PSEUDO_LABELS, unlabeled, preds, selected)
            readings[r] = Counter(preds[i].text for i in selected)
            items = [(images[i], preds[i].text) for i in selected]
            pseudo = LabeledImages(repeat_rare(items) if config.rare_chars else items, height,
                                   augment=AUGMENTS[config.augment], seed=config.seed + r)
            sources = [Source(pseudo, share=1 - config.synthetic_share, name="pseudo")]
            if config.synthetic_share > 0:
                sources.append(Source(ModelInputs(synthetic, height), share=config.synthetic_share, infinite=True,
                                      name="synthetic"))
            steps = stage_config.student_steps if student else config.steps_per_round
            phase = "adapt-student" if student else f"adapt-round-{r}"
            train_config = TrainConfig(
                steps=steps, batch_size=config.batch_size, lr=config.lr, warmup_steps=config.warmup_steps,
                val_every=steps, num_workers=config.num_workers, seed=config.seed * 1000 + r, phase=phase,
                amp=config.amp,
            )
            round_meta = stage_meta(meta, stage_config, r, checkpoint, fonts_used, selected=len(selected),
                                    **({"mark_doubted": len(doubted)} if config.mark_doubt > 0 else {}),
                                    **({"student_steps_asked": config.student_steps} if stage_config is not config else {}))
            trainer = Trainer(model, charset, sources, folder, train_config, device=device, meta=round_meta)
            trainer.fit()
            before = preds
            preds, row = label_and_score(r, share, selected, before)
            row.student = student
            marks_read = any(changes.values()) or bool(doubters)  # (holding the shares, or the doubt)
            row.seconds = {**({"marks": round(marks_seconds, 1)} if marks_read else {}),
                           "training": round(trainer.seconds, 1), **row.seconds}
            row.checkpoint = str(folder / "last")
            # store the label-free score (and the report-only validation numbers) with the round's checkpoint;
            # a finished round needs no trainer resume state, so it is written without it, but with its report
            # row and the key a resumed run reuses it under
            save_checkpoint(folder / "last", model, charset,
                            meta={**round_meta, "training": training_record(trainer, phase),
                                  "metrics": {"mean_confidence": row.mean_confidence,
                                              **{f"val_{k}": v for k, v in row.val.items()}},
                                  "report": asdict(row), "resume_key": key})
            save_readings(folder, key, preds)
            round_dirs[r] = folder / "last"
            rounds.append(row)
            if report:
                report(row)

    trained = next((read_meta(round_dirs[x.round])["training"]["step"] for x in rounds if x.student), 0)
    student_steps = {"asked": config.student_steps, "trained": trained, "time_limit": config.time_limit}
    rounds_trained = {"asked": config.rounds, "trained": sum(1 for x in rounds if x.round >= 1 and not x.student)}
    if stopped_by is not None:  # (what left the rest out: the time limit, or readings that were all empty)
        student_steps["left_out_by"] = stopped_by
        if rounds_trained["trained"] < rounds_trained["asked"]:
            rounds_trained["left_out_by"] = stopped_by
    chosen_row = max(rounds, key=lambda x: (x.mean_confidence, -x.round))
    chosen = chosen_row.round
    final = out_dir / "final"
    chosen_ckpt = load_checkpoint(round_dirs[chosen], device="cpu")
    save_checkpoint(final, chosen_ckpt.model, charset, meta={
        **chosen_ckpt.meta,
        "preprocessing": meta["preprocessing"],  # round 0 is the pretrained model, read in the chosen layout
        # what the archive says, most often first: reading mixes it into the character model (recipes.load_charlm)
        DOMAIN_WORDS: dict(readings[chosen].most_common()) if chosen in readings else {},
        "adapt_summary": {"chosen_round": chosen, "chosen": chosen_row.name,
                          "rule": "highest mean confidence on the unlabeled images",
                          "layout": layout.describe(), "layout_mean_confidence": layout_scores, "fonts_used": fonts_used,
                          "lexicon": ({"words": len(lexicon), "line_break_parts": len(lexicon.breaks),
                                       "prior_weight": lexicon.prior_weight, "length_bonus": lexicon.length_bonus}
                                      if lexicon is not None else None),
                          "charlm": ({"words": charlm.num_words, "order": charlm.order}
                                     if method == "charlm" else None),
                          "student_steps": student_steps, "rounds_trained": rounds_trained,
                          "rounds": [asdict(x) for x in rounds], "skipped_images": len(skipped)},
    })
    return AdaptResult(rounds, chosen, final, list(skipped), layout.describe(), layout_scores, student_steps,
                       rounds_trained)
