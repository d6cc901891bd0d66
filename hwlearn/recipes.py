"""The jobs behind the CLI commands, as library functions: pretrain, fine-tune, evaluate, recognize.

Each function takes plain paths and numbers, builds the datasets, model and trainer from the other
modules, and returns a result object; the CLI only parses options and prints.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from .charset import BREAK_MARK, Charset
from .checkpoint import load_checkpoint
from .decode import LENGTH_BONUS, PRIOR_WEIGHT, reading_method
from .errors import HwlearnError
from .train import ModelInputs, Source, Trainer, TrainConfig, TrainResult, ValSet, resolve_device

VAL_SEED_OFFSET = 7919  # held-out synthetic validation words use seed + this: never the training stream


# --------------------------------------------------------------------------------------------
# shared pieces


#: Written forms added to a lexicon's most frequent words (see :func:`lexicon_words`).
VARIANT_WORDS = 20_000
VARIANT_SUFFIXES = 3
#: Share of a word's count that its line-break parts (``immedi-``) get, and how many of the most
#: frequent words give them (see :func:`break_parts`).
BREAK_SHARE = 0.02
BREAK_WORDS = 20_000
#: Numbers a lexicon of a counted corpus also holds (see :func:`number_forms`).
NUMBER_LIMIT = 10_000


def number_forms(limit: int = NUMBER_LIMIT) -> list[str]:
    """The integers ``0 .. limit-1`` and the ordinals ``1st .. 100th``: numbers are an open class
    that no corpus lists (GW's ``1755.``, ``28th.``), so without them a lexicon-constrained
    pseudo-label turns every page number and date into a word (``28th.`` -> ``as``) and
    self-training teaches the model to read digits as letters."""
    from .corpus import ordinal

    return [str(n) for n in range(limit)] + [ordinal(n) for n in range(1, 101)]


def _by_frequency(counts, charset: Charset) -> list[tuple[str, float]]:
    """The ``(word, count)`` pairs of ``counts`` that ``charset`` covers, most frequent first (ties
    by word)."""
    return sorted(((w, c) for w, c in counts.items() if charset.covers(w)), key=lambda wc: (-wc[1], wc[0]))


def _uncounted(ranked: list[tuple[str, float]]) -> bool:
    """Whether every count is the same: a plain word list, whose counts give no frequency order."""
    return len({c for _, c in ranked}) <= 1


def lexicon_words(counts, charset: Charset, affixes=None, max_words: int = 50_000,
                  variant_words: int = VARIANT_WORDS, suffixes: int = VARIANT_SUFFIXES) -> dict[str, float]:
    """The words of a lexicon with their counts, most frequent first: the ``max_words``
    most frequent of ``counts`` (word -> count) that ``charset`` covers, and — for the
    ``variant_words`` most frequent of them — the forms a word crop shows in running text:
    Capitalized (sentence start) and with each of the ``suffixes`` most frequent trailing
    punctuation marks of ``affixes`` (``(prefix, suffix) -> count``; e.g. ``day,`` ``day.``
    ``day;``; a word list's counts come without punctuation statistics: then the most frequent of
    :data:`hwlearn.corpus.FALLBACK_AFFIXES`). With every count equal (a plain word list) there is no
    frequency order: all its words are kept, as they are, with no variants. A counted corpus with
    numbers in it also gives :func:`number_forms` and their punctuated forms, sharing the count of
    the corpus's number tokens equally (each far rarer than a common word: the image has to show
    a number clearly to win).

    The counts are the lexicon's word prior (:class:`hwlearn.decode.Lexicon`). A variant has the
    count of the form it was made from, a Capitalized form (also one the corpus lists) the larger
    of its own count and its word's: the prior says which word an image shows, the image alone
    whether it is capitalized or punctuated (a trailing mark is a frame or two of evidence, which a corpus share of 4–8 %
    would overrule almost always: measured on GW, see ``benchmarks/EXPERIMENTS.md``).
    The bundled corpus gives ~200,000 entries (~3–4 s to build the trie)."""
    ranked = _by_frequency(counts, charset)
    if _uncounted(ranked):
        return dict(ranked)  # a plain word list: all of it, as it is
    words = dict(ranked[:max_words])
    from .corpus import FALLBACK_AFFIXES

    marks = [suf for (pre, suf), _ in sorted((affixes or FALLBACK_AFFIXES).items(), key=lambda kv: -kv[1])
             if not pre and suf and charset.covers(suf)][:suffixes]
    extra: dict[str, float] = {}
    for word in list(words)[:variant_words]:
        forms = {word: words[word]}
        if word[:1].islower():
            cap = word[0].upper() + word[1:]
            forms[cap] = max(words.get(cap, 0), counts.get(cap, 0), words[word])
            if cap in words:
                words[cap] = forms[cap]
        for form, count in list(forms.items())[1:] + [(f + m, c) for f, c in forms.items() for m in marks]:
            if form not in words and form not in extra and charset.covers(form):
                extra[form] = count
    numbers = [f for f in number_forms() if charset.covers(f)]
    number_tokens = sum(c for w, c in counts.items() if any(ch.isdigit() for ch in w))
    if numbers and number_tokens > 0:
        each = number_tokens / len(numbers)
        for form in numbers + [f + m for f in numbers for m in marks]:
            if form not in words and form not in extra:
                extra[form] = each
    return {**words, **extra}


def break_parts(counts, charset: Charset, max_words: int = BREAK_WORDS,
                share: float = BREAK_SHARE) -> dict[str, float]:
    """The first parts a hyphenated line break leaves of a corpus's words (``immedi`` of
    ``immedi-``, ``Recrui`` of ``Recrui-``), with counts for a lexicon's prior
    (:attr:`hwlearn.decode.Lexicon.breaks`): of the ``max_words`` most frequent words of ``counts``
    that are all letters, and of their Capitalized forms (counted as in :func:`lexicon_words`),
    each place to break (:func:`hwlearn.corpus.break_cuts`) gets an equal part of ``share`` times the form's
    count, summed over the forms that share a part. Empty for a plain word list
    (every count equal: no prior to share) or a charset without :data:`hwlearn.charset.BREAK_MARK`.
    Archives break words at line ends (GW: 50 of 2,375 train words); without these, lexicon
    decoding must read a part as a word (``De-`` -> ``To.``)."""
    from .corpus import break_cuts

    if not charset.covers(BREAK_MARK):
        return {}
    ranked = [(w, c) for w, c in _by_frequency(counts, charset) if w.isalpha()]
    if _uncounted(ranked):
        return {}
    parts: dict[str, float] = {}
    done: set[str] = set()
    for word, count in ranked[:max_words]:
        forms = {word: count}
        cap = word[0].upper() + word[1:]
        if cap != word and charset.covers(cap):
            forms[cap] = max(counts.get(cap, 0), count)
        for form, n in forms.items():
            cuts = break_cuts(form)
            if form in done or not cuts:
                continue
            done.add(form)
            for cut in cuts:
                parts[form[:cut]] = parts.get(form[:cut], 0.0) + share * n / len(cuts)
    return parts


def load_lexicon(source: str | Path | None, charset: Charset, max_words: int = 50_000,
                 prior_weight: float = PRIOR_WEIGHT, length_bonus: float = LENGTH_BONUS):
    """A :class:`~hwlearn.decode.Lexicon` from a word list file (one word per line, optional
    ``<TAB>count``) or a corpus statistics JSON: its ``max_words`` most frequent words plus the
    Capitalized and punctuated forms of the most frequent ones (:func:`lexicon_words`), their counts
    as the words' prior with weight ``prior_weight`` (:data:`hwlearn.decode.PRIOR_WEIGHT` by default)
    and ``length_bonus`` per letter (:data:`hwlearn.decode.LENGTH_BONUS` by default),
    and the parts of words a line break leaves (:func:`break_parts`); None for None."""
    if source is None:
        return None
    from .corpus import CorpusStats, read_wordlist
    from .decode import Lexicon

    path = Path(source)
    if path.suffix == ".json":
        stats = CorpusStats.load(path)
        counts, affixes = stats.word_counts, stats.affix_counts
    else:
        counts, affixes = read_wordlist(path), None
    words = lexicon_words(counts, charset, affixes, max_words=max_words)
    if not words:
        raise HwlearnError(f"{path}: no lexicon word is covered by the model's charset")
    try:
        return Lexicon(words, charset, prior_weight, breaks=break_parts(counts, charset), length_bonus=length_bonus)
    except HwlearnError as exc:
        raise HwlearnError(f"{path}: {exc}") from None


#: Weight of an adapted model's own readings in its character model (chosen on DHSD *train* labels:
#: benchmarks/EXPERIMENTS.md, session 15).
DOMAIN_WEIGHT = 0.2


def load_charlm(source: str | Path | None, ckpt=None, domain: bool = True):
    """A :class:`~hwlearn.charlm.CharLM` from a corpus statistics JSON or a word list; with
    ``"auto"`` from the corpus ``ckpt`` was pretrained on (the one its synthetic words came from,
    the bundled English corpus when none is recorded; for a checkpoint copied to another machine, the
    file of the same name where :func:`hwlearn.paths.recorded_path` finds it) — None, with a
    warning, when there is none; None for None or ``"none"``.

    A checkpoint made by adaptation carries the pseudo-labels its final round trained on
    (:data:`hwlearn.selftrain.DOMAIN_WORDS`); their character model, counting each as often as it
    occurs, is mixed in with weight :data:`DOMAIN_WEIGHT` (:class:`~hwlearn.charlm.MixedCharLM`):
    the archive's frequent words (DHSD's ``Straße``) beat the language's equally good spellings
    (``Strafe``). ``domain=False`` leaves them out: callers do so when a lexicon is given, which
    already names the archive's words (on GW the readings gained nothing from them)."""
    if source is None or source == "none":
        return None
    from .charlm import CharLM, MixedCharLM
    from .selftrain import DOMAIN_WORDS

    if source == "auto":
        recorded = (ckpt.meta.get("synthetic") or {}).get("corpus") if ckpt is not None else None
        from .console import console
        from .paths import default_corpus_path, recorded_path

        try:
            source = recorded_path(recorded, "corpus") or default_corpus_path()
        except HwlearnError as exc:
            console.print(f"[yellow]{exc}; decoding without a character model (give one with --char-lm FILE)",
                          highlight=False)
            return None
        if not source.is_file():
            console.print(f"[yellow]{source}: the corpus the model was pretrained on is not here; decoding "
                          "without a character model (give one with --char-lm FILE)", highlight=False)
            return None
    lm = CharLM.from_source(source)
    words = (ckpt.meta.get(DOMAIN_WORDS) or {}) if ckpt is not None and domain else {}
    if words:  # an adapted model: the archive's own readings mixed in
        lm = MixedCharLM(lm, CharLM(words, lm.order, counted=True), DOMAIN_WEIGHT)
    return lm


def reading_lm_weight(lexicon, charlm) -> float:
    """The character model's weight when reading: :data:`hwlearn.decode.ARCHIVE_LM_WEIGHT` when it knows
    the archive's words — a lexicon given (its words are favoured) or an adapted model's own readings mixed
    in (a :class:`~hwlearn.charlm.MixedCharLM`, :func:`load_charlm`) — else :data:`hwlearn.decode.LM_WEIGHT`,
    which self-training's pseudo-labels use too (benchmarks/EXPERIMENTS.md, session 58)."""
    from .charlm import MixedCharLM
    from .decode import ARCHIVE_LM_WEIGHT, LM_WEIGHT

    return ARCHIVE_LM_WEIGHT if lexicon is not None or isinstance(charlm, MixedCharLM) else LM_WEIGHT


def synthetic_like(ckpt, seed: int):
    """An endless synthetic word stream made like the one ``ckpt`` was pretrained on (same fonts,
    corpus, style, sampler options, charset, height), with another seed. Fonts and corpus that
    are no longer where the checkpoint says (copied from another machine) are looked for where
    :func:`hwlearn.paths.recorded_path` says; fonts found elsewhere must be as many as recorded."""
    from .paths import recorded_path
    from .synth import build_synthetic

    syn = ckpt.meta.get("synthetic", {})
    fonts = recorded_path(syn.get("fonts"), "fonts")
    words = build_synthetic(fonts, recorded_path(syn.get("corpus"), "corpus"), height=ckpt.height,
                            style=syn.get("style", "default"), charset=ckpt.charset, seed=seed, length=10**9,
                            **syn.get("sampler_options", {}))
    expected = syn.get("num_fonts")
    moved = fonts is not None and str(fonts) != syn.get("fonts")
    if moved and expected is not None and words.info["num_fonts"] != expected:
        raise HwlearnError(f"{fonts}: {words.info['num_fonts']} fonts, but the model was pretrained with {expected} "
                           f"in {syn.get('fonts')} (set HWLEARN_FONTS to where those are now)")
    return words


def _labeled(path: str | Path, height: int, augment=None, seed: int = 0, prepare=None):
    """The labeled images of a label file, every one of them checked readable before training starts."""
    from .data import LabeledImages, check_labeled, read_labels

    items = read_labels(path)
    check_labeled(items, path)
    return LabeledImages(items, height, augment=augment, seed=seed, prepare=prepare)


def _prepare_run_dir(out_dir: Path, resume: bool, overwrite: bool) -> bool:
    """True when the run resumes. A run directory holding a checkpoint is never silently overwritten."""
    has_run = (out_dir / "last" / "meta.json").exists()
    if resume:
        if not (out_dir / "last" / "train_state.pt").exists():
            raise HwlearnError(f"{out_dir}: nothing to resume (no last/train_state.pt)")
        return True
    if has_run and not overwrite:
        raise HwlearnError(f"{out_dir}: already holds a run; use --resume to continue it or --overwrite to start over")
    if overwrite and (out_dir / "metrics.jsonl").exists():
        (out_dir / "metrics.jsonl").unlink()
    return False


# --------------------------------------------------------------------------------------------
# pretraining on synthetic words


@dataclass
class PretrainSetup:
    model: torch.nn.Module
    charset: Charset
    synthetic: object  # SyntheticWords producing uint8 images at the model's height
    height: int


def synthetic_setup(preset: str = "small", *, fonts_dir=None, corpus=None, style="default", seed: int = 0,
                    charset: Charset | None = None, model_overrides: dict | None = None, **sampler_options) -> PretrainSetup:
    """A fresh model of ``preset`` and the synthetic word stream it trains on (rendered at the model's height)."""
    from .model import PRESETS, create_model
    from .synth import build_synthetic

    if preset not in PRESETS:
        raise HwlearnError(f"unknown model preset {preset!r} (known: {', '.join(PRESETS)})")
    height = int((model_overrides or {}).get("height", PRESETS[preset].height))
    synthetic = build_synthetic(fonts_dir, corpus, height=height, style=style, charset=charset, seed=seed,
                                length=10**9, **sampler_options)
    charset = Charset.from_string(synthetic.info["charset"])
    torch.manual_seed(seed)  # same seed, same initial weights
    model = create_model(preset, charset.num_classes, **(model_overrides or {}))
    return PretrainSetup(model, charset, synthetic, height)


def pretrain(
    out_dir: str | Path,
    *,
    preset: str = "small",
    fonts_dir=None,
    corpus=None,
    style: str = "default",
    data_dir: str | Path | None = None,
    config: TrainConfig = TrainConfig(),
    val_labels: str | Path | None = None,
    val_size: int = 500,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    model_overrides: dict | None = None,
    sampler_options: dict | None = None,
    progress: bool = True,
    until: int | None = None,
) -> TrainResult:
    """Pretrain a recognizer on synthetic words (rendered on the fly, or read from a ``hwlearn synth``
    dataset in ``data_dir``), validating on ``val_size`` held-out synthetic words and on
    ``val_labels`` (a labeled real set) when given. Checkpoints go to ``out_dir/{best,last}``.
    ``sampler_options`` go to :class:`~hwlearn.corpus.WordSampler`; ``until`` stops early at that step
    (the run stays resumable)."""
    out_dir = Path(out_dir)
    setup = synthetic_setup(preset, fonts_dir=fonts_dir, corpus=corpus, style=style, seed=config.seed,
                            model_overrides=model_overrides, **(sampler_options or {}))
    if data_dir is not None:
        from .synth import read_meta

        meta = read_meta(data_dir)
        if "charset" in meta and Charset.from_string(meta["charset"]) != setup.charset:
            from .model import create_model

            setup.charset = Charset.from_string(meta["charset"])
            setup.model = create_model(preset, setup.charset.num_classes, **(model_overrides or {}))
        train_source = Source(_labeled(Path(data_dir) / "labels.tsv", setup.height), name="synth-dataset")
    else:
        train_source = Source(ModelInputs(setup.synthetic, setup.height), infinite=True, name="synthetic")
    from .synth import SyntheticWords

    val_synth = SyntheticWords(setup.synthetic.sampler, setup.synthetic.renderer,
                               seed=config.seed + VAL_SEED_OFFSET, length=val_size)
    val_sets = [ValSet("synth_val", ModelInputs(val_synth, setup.height))]
    if val_labels is not None:
        val_sets.append(ValSet("real_val", _labeled(val_labels, setup.height)))
    resuming = _prepare_run_dir(out_dir, resume, overwrite)  # after the checks: a bad file overwrites nothing
    meta = {
        "synthetic": setup.synthetic.info,
        "preset": preset,
        "data_dir": str(data_dir) if data_dir else None,
        "preprocessing": {"height": setup.height},
    }
    trainer = Trainer(setup.model, setup.charset, [train_source], out_dir, config, val_sets=val_sets,
                      device=device, meta=meta)
    if resuming:
        trainer.resume(out_dir / "last")
    return trainer.fit(progress=progress, until=until)


# --------------------------------------------------------------------------------------------
# supervised fine-tuning (the upper bound label-free adaptation is compared against)

#: Dropout while fine-tuning on labeled real words, whatever the checkpoint was built with
#: (held-out GW train pages: CER 0.0755 -> 0.0725 against none; benchmarks/EXPERIMENTS.md, session 19).
FINETUNE_DROPOUT = 0.2


def finetune(
    checkpoint: str | Path,
    labeled: str | Path,
    out_dir: str | Path,
    *,
    config: TrainConfig = TrainConfig(phase="finetune", steps=1000, warmup_steps=50),
    val_labels: str | Path | None = None,
    synthetic_share: float = 0.0,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    layout=None,
    dropout: float | None = FINETUNE_DROPOUT,
) -> TrainResult:
    """Fine-tune a checkpoint on labeled real words (augmented), optionally mixed with synthetic words.

    The images are read in ``layout`` (a :class:`hwlearn.layout.Layout`), by default the checkpoint's
    own (``as-is`` for a pretrained model, the chosen one for an adapted model); it is stored with
    the result. The model trains with dropout ``dropout`` whatever it was built with (None: its
    own), as in adaptation: a few thousand real images seen again and again are read better with
    it (:meth:`hwlearn.model.Recognizer.set_dropout`; GW: ``benchmarks/EXPERIMENTS.md``)."""
    from .data import augment_real

    out_dir = Path(out_dir)
    ckpt = load_checkpoint(checkpoint)
    height = ckpt.height
    layout = layout if layout is not None else ckpt.layout
    labeled_set = _labeled(labeled, height, augment=augment_real, seed=config.seed, prepare=layout)
    val_sets = [ValSet("real_val", _labeled(val_labels, height, prepare=layout))] if val_labels else []
    resuming = _prepare_run_dir(out_dir, resume, overwrite)  # after the checks: a bad file overwrites nothing
    if dropout is not None:
        ckpt.model.set_dropout(dropout)
    sources = [Source(labeled_set, share=1 - synthetic_share, name="labeled")]
    if synthetic_share > 0:
        synthetic = synthetic_like(ckpt, seed=config.seed)
        sources.append(Source(ModelInputs(synthetic, height), share=synthetic_share, infinite=True, name="synthetic"))
    meta = {k: v for k, v in ckpt.meta.items() if k not in ("training", "metrics")}
    meta["preprocessing"] = {**meta.get("preprocessing", {}), "layout": layout.to_dict()}
    meta["finetune"] = {"source": str(checkpoint), "labeled": str(labeled), "synthetic_share": synthetic_share,
                        "dropout": ckpt.model.config.dropout}
    trainer = Trainer(ckpt.model, ckpt.charset, sources, out_dir, config, val_sets=val_sets, device=device, meta=meta)
    if resuming:
        trainer.resume(out_dir / "last")
    return trainer.fit(progress=progress)


# --------------------------------------------------------------------------------------------
# evaluation and recognition


@dataclass
class EvalRow:
    image: str
    reference: str
    prediction: str
    confidence: float
    edit_distance: int


def evaluate(
    checkpoint: str | Path,
    labels: str | Path,
    *,
    lexicon_source=None,
    lexicon_weight: float = PRIOR_WEIGHT,
    length_bonus: float = LENGTH_BONUS,
    charlm_source="auto",
    device: str = "auto",
    batch_size: int = 64,
    views: int = 0,
    invert: bool | None = None,
    csv_path: str | Path | None = None,
    json_path: str | Path | None = None,
) -> dict:
    """CER/WER (case-sensitive and not) of a checkpoint on a labeled set, greedy and — with a lexicon —
    lexicon-constrained and — with a character model (:func:`load_charlm`; by default of the
    pretraining corpus, ``None`` for none) — guided by it, favouring the lexicon's words when there
    is a lexicon (:func:`hwlearn.decode.charlm_decode`); with ``views`` > 0 each image is also
    read in that many augmented copies and the reading they agree on best is kept
    (:func:`hwlearn.inference.predict_views`); ``invert`` as :func:`reading_layout`. Writes a JSON
    summary and a per-sample CSV when asked; the CSV (and ``rows``) hold the decoding :func:`recognize`
    would use — the character model's, else the lexicon's, else greedy — named in
    ``summary["csv_decoding"]``; ``summary["reading"]`` records how the images were read (layout, lexicon and its
    weight and length bonus, character model and its weight; None for what was not used)."""
    from .data import load_labeled, read_labels, to_model_input
    from .inference import augmented_copies, predictions_by_method
    from .metrics import edit_distance, score

    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, device=dev)
    items = read_labels(labels)
    t0 = time.perf_counter()
    images = load_labeled(items, labels)
    layout = reading_layout(ckpt.layout, invert, images)
    images = [layout(img) for img in images]
    view_inputs = [[(to_model_input(img, ckpt.height), text) for img, (_, text) in zip(images, items)]]
    view_inputs += augmented_copies(images, views, ckpt.height)
    refs = [t for _, t in items]
    lexicon = load_lexicon(lexicon_source, ckpt.charset, prior_weight=lexicon_weight, length_bonus=length_bonus) if lexicon_source else None
    charlm = load_charlm(charlm_source, ckpt, domain=lexicon is None)
    lm_weight = reading_lm_weight(lexicon, charlm)
    summary: dict = {"checkpoint": str(checkpoint), "labels": str(labels), "n": len(items), "views": views,
                     "reading": {"layout": layout.describe(),
                                 "lexicon": str(lexicon_source) if lexicon is not None else None,
                                 "lexicon_weight": lexicon_weight if lexicon is not None else None,
                                 "length_bonus": length_bonus if lexicon is not None else None,
                                 "char_lm": str(charlm_source) if charlm is not None else None,
                                 "lm_weight": lm_weight if charlm is not None else None},
                     "results": {}}
    rows: list[EvalRow] = []
    methods = ["greedy"] + ["lexicon"] * (lexicon is not None) + ["charlm"] * (charlm is not None)
    summary["csv_decoding"] = reading_method(lexicon, charlm)
    by_method = predictions_by_method(ckpt.model, view_inputs, ckpt.charset, methods, device=dev, batch_size=batch_size,
                                      lexicon=lexicon, charlm=charlm, lm_weight=lm_weight)
    for method, preds in by_method.items():
        summary["results"][method] = score(refs, [p.text for p in preds])
        if method == summary["csv_decoding"]:
            rows = [EvalRow(str(p), r, pr.text, round(pr.confidence, 4), edit_distance(r, pr.text))
                    for (p, r), pr in zip(items, preds)]
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    if csv_path:
        _write_rows(Path(csv_path), rows)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    summary["rows"] = rows
    return summary


#: Images that must vote on their polarity (hwlearn.layout.polarity_votes) before :func:`warn_polarity` speaks:
#: one tight crop of an ``I`` can look like light ink on dark paper.
POLARITY_MIN_IMAGES = 5


def reading_layout(layout, invert: bool | None, images: Sequence):
    """The layout ``images`` (uint8, as loaded) are read in: the model's own ``layout``, checked by
    :func:`warn_polarity`, when ``invert`` is None; else that layout with its grey levels inverted
    (``invert`` true: light ink on dark paper) or not, as the caller asks, unchecked."""
    if invert is None:
        warn_polarity(images, layout)
        return layout
    return replace(layout, invert=invert)


def warn_polarity(images: Sequence, layout) -> bool:
    """Print a warning and return True when most of ``images`` (uint8, as loaded; at least
    :data:`POLARITY_MIN_IMAGES` that vote) have the other polarity than ``layout`` reads: light ink on
    dark paper for a model that reads them as they are (it reads a negative as nothing), or the
    reverse for one adapted to negatives."""
    from .console import console
    from .layout import polarity_votes

    votes = polarity_votes(images)
    if len(votes) < POLARITY_MIN_IMAGES or (2 * sum(votes) > len(votes)) == layout.invert:
        return False
    share = sum(votes) if not layout.invert else len(votes) - sum(votes)
    if layout.invert:
        console.print(f"[yellow]warning:[/] {share} of {len(votes)} images look like dark ink on light paper, but this "
                      "model was adapted to light ink on dark paper and inverts them (read them as they are: "
                      "--no-invert)", markup=True, highlight=False)
    else:
        console.print(f"[yellow]warning:[/] {share} of {len(votes)} images look like light ink on dark paper, which "
                      "this model reads as nothing: adapt it to them (hwlearn adapt inverts such images) or read "
                      "them inverted (--invert)", markup=True, highlight=False)
    return True


def _write_rows(path: Path, rows: Sequence[EvalRow]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "reference", "prediction", "confidence", "edit_distance"])
        for r in rows:
            w.writerow([r.image, r.reference, r.prediction, r.confidence, r.edit_distance])


#: Images :func:`iter_recognize` loads, reads and hands back at a time: memory stays bounded whatever the
#: number of images (100,000 GW-sized words hold 2.3 GB as loaded, before their layout's copies and model
#: inputs), and the first readings come at once.
RECOGNIZE_CHUNK = 2048


def recognize(checkpoint: str | Path, inputs: Iterable[str | Path],
              **options) -> tuple[list[tuple[Path, str, float]], list[tuple[Path, str]]]:
    """Read every image among ``inputs`` (files, or directories searched recursively): all the chunks of
    :func:`iter_recognize` (whose keyword ``options`` it takes) at once.

    Returns ``(results, skipped)``: ``(path, text, confidence)`` per readable image and
    ``(path, reason)`` per unreadable one, whether named or in a directory. Raises
    :class:`HwlearnError` for a missing input, a directory without image files, and when not one of
    the images can be read.
    """
    results: list[tuple[Path, str, float]] = []
    skipped: list[tuple[Path, str]] = []
    for chunk_results, chunk_skipped in iter_recognize(checkpoint, inputs, **options):
        results += chunk_results
        skipped += chunk_skipped
    return results, skipped


def iter_recognize(
    checkpoint: str | Path,
    inputs: Iterable[str | Path],
    *,
    lexicon_source=None,
    lexicon_weight: float = PRIOR_WEIGHT,
    length_bonus: float = LENGTH_BONUS,
    charlm_source="auto",
    method: str = "greedy",
    device: str = "auto",
    batch_size: int = 64,
    views: int = 0,
    invert: bool | None = None,
    chunk: int = RECOGNIZE_CHUNK,
) -> Iterator[tuple[list[tuple[Path, str, float]], list[tuple[Path, str]]]]:
    """Read every image among ``inputs`` (files, or directories searched recursively), ``chunk`` images at
    a time, with ``method``; a character model (:func:`load_charlm`, by default of the pretraining corpus;
    then decoding guided by it, favouring the lexicon's words when there is a lexicon) or else a lexicon
    (then decoding constrained to its words) overrides ``method``: pass ``charlm_source=None`` for
    lexicon, greedy or beam decoding. With ``views`` > 0 each image is also read in that many augmented
    copies and the reading they agree on best is kept (:func:`hwlearn.inference.predict_views`); ``invert`` as
    :func:`reading_layout`.

    Yields ``(results, skipped)`` of each chunk in the order of the images: ``(path, text, confidence)``
    per readable image, ``(path, reason)`` per unreadable one (files found unreadable in a directory's
    scan come with the first chunk). Each image reads as it would among all the others. Missing inputs and directories
    without image files raise before the first chunk, and a run where not one image can be read
    raises at the end. The polarity check (:func:`warn_polarity`) looks at the first chunk with a readable image."""
    from .data import image_problem, load_image, none_readable, scan_images, to_model_input
    from .inference import SearchPool, augmented_copies, predict_views, search_workers

    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, device=dev)
    paths: list[Path] = []
    scan_skipped: list[tuple[Path, str]] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            scan = scan_images(item, require_readable=False)
            paths.extend(scan.paths)
            scan_skipped.extend(scan.skipped)
        elif item.exists():
            paths.append(item)
        else:
            raise HwlearnError(f"{item}: no such file or directory")
    layout = None  # chosen (and the polarity checked) on the first chunk that holds a readable image
    lexicon = load_lexicon(lexicon_source, ckpt.charset, prior_weight=lexicon_weight, length_bonus=length_bonus) if lexicon_source else None
    charlm = load_charlm(charlm_source, ckpt, domain=lexicon is None)
    method = reading_method(lexicon, charlm, default=method)
    lm_weight = reading_lm_weight(lexicon, charlm)
    beam_width = 10  # predict_views' default, which the searches' pool must serve
    workers = search_workers(len(paths) * (views + 1) * (method != "greedy"))
    all_skipped: list[tuple[Path, str]] = []
    read = 0
    with SearchPool(ckpt.charset, lexicon, charlm, beam_width, workers, lm_weight=lm_weight) as pool:
        for start in range(0, max(len(paths), 1), chunk):
            images, kept, skipped = [], [], list(scan_skipped) if start == 0 else []
            for p in paths[start : start + chunk]:
                try:
                    images.append(load_image(p))
                    kept.append(p)
                except HwlearnError as exc:  # listed as a folder's are: the reason alone
                    skipped.append((p, image_problem(p) or str(exc)))
            all_skipped += skipped
            if layout is None and images:
                layout = reading_layout(ckpt.layout, invert, images)
            images = [layout(img) for img in images]
            results = []
            if images:
                view_inputs = [[(to_model_input(img, ckpt.height), None) for img in images]]
                view_inputs += augmented_copies(images, views, ckpt.height)
                preds = predict_views(ckpt.model, view_inputs, ckpt.charset, device=dev, batch_size=batch_size,
                                      method=method, lexicon=lexicon, charlm=charlm, beam_width=beam_width,
                                      pool=pool, lm_weight=lm_weight)
                results = [(p, pr.text, pr.confidence) for p, pr in zip(kept, preds)]
                read += len(results)
            if not read and start + chunk >= len(paths):
                raise none_readable(all_skipped)
            yield results, skipped


# --------------------------------------------------------------------------------------------
# label-free adaptation


def adapt_folder(
    checkpoint: str | Path,
    unlabeled_dir: str | Path | Sequence[Path],
    out_dir: str | Path,
    *,
    config=None,
    lexicon_source=None,
    lexicon_weight: float = PRIOR_WEIGHT,
    length_bonus: float = LENGTH_BONUS,
    charlm_source="auto",
    val_labels: str | Path | None = None,
    device: str = "auto",
    overwrite: bool = False,
    resume: bool = False,
    report=None,
    fonts_from: str | Path | None = None,
):
    """Self-train ``checkpoint`` on the images under ``unlabeled_dir`` (recursively; unreadable files are
    skipped and listed), mixing in synthetic words rendered like the checkpoint's pretraining data.
    Pseudo-labels are decoded with the lexicon when one is given, else guided by the character model
    of ``charlm_source`` (:func:`load_charlm`; by default the pretraining corpus), else greedily.
    An interrupted run in ``out_dir`` goes on after its last finished round with ``resume`` (the same
    checkpoint, images and settings), starts over with ``overwrite``, and is refused otherwise; a finished
    run is reused the same way (``resume`` with a student added trains the student alone). ``fonts_from``: an
    earlier adaptation's run directory whose matched fonts and font stage to use (:func:`hwlearn.selftrain.adapt`).
    See :func:`hwlearn.selftrain.adapt`."""
    from .data import check_labeled, read_labels, scan_images
    from .selftrain import AdaptConfig, adapt

    started = time.monotonic()  # (config.time_limit counts from here)
    config = config or AdaptConfig()
    out_dir = Path(out_dir)
    if (out_dir / "final" / "meta.json").exists() and not (overwrite or resume):
        raise HwlearnError(f"{out_dir}: already holds an adaptation run; use --overwrite to start over, or --resume "
                           "to reuse its rounds")
    if not (resume or overwrite) and any(out_dir.glob("round*/last/meta.json")):
        raise HwlearnError(f"{out_dir}: holds an unfinished adaptation run; use --resume to go on after its last "
                           "finished round, or --overwrite to start over")
    if isinstance(unlabeled_dir, (str, Path)):
        scan = scan_images(unlabeled_dir)
        paths, skipped = list(scan.paths), list(scan.skipped)
    else:
        paths, skipped = list(unlabeled_dir), []
    if not paths:
        raise HwlearnError(f"{unlabeled_dir}: no readable image")
    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint)
    synthetic = synthetic_like(ckpt, seed=config.seed + 104729)
    lexicon = load_lexicon(lexicon_source, ckpt.charset, prior_weight=lexicon_weight, length_bonus=length_bonus) if lexicon_source else None
    charlm = load_charlm(charlm_source, ckpt) if lexicon is None else None
    val_items = read_labels(val_labels) if val_labels else []
    check_labeled(val_items, val_labels)  # before the adaptation's first minutes, not after them
    if fonts_from is not None:
        from .selftrain import matched_fonts

        matched_fonts(fonts_from)  # (the same check adapt makes: a wrong directory fails now, not in a minute)
    return adapt(checkpoint, paths, out_dir, synthetic, config, lexicon=lexicon, charlm=charlm, val_items=val_items,
                 device=dev, skipped=skipped, report=report, resume=resume and not overwrite, fonts_from=fonts_from,
                 started=started)
