"""How close label-free adaptation gets to supervised fine-tuning on a real handwriting dataset.

    python benchmarks/real_accuracy.py DATASET_DIR [--profile smoke|cpu|cpu-full|gpu] [--corpus STATS.json]
        [--lexicon WORDS] [--adapt-lexicon] [--out-dir RUN] [--seed 0] [--device auto]
        [--skip-pretrain CKPT] [--set KEY=VALUE ...] [--systems NAME,...] [--heldout REGEX] [--speed-check-steps 30]
        [--json PATH]

``DATASET_DIR`` holds ``train.tsv`` and ``test.tsv`` (``relative/path.png<TAB>text``, paths
relative to ``DATASET_DIR``). Into the run directory ``RUN`` (default
``runs/real_accuracy/<dataset>-<profile>``) it runs, with the library calls every command uses:

1. **pretrain** a model on synthetic words only (bundled fonts, words from ``--corpus``, default
   the bundled English statistics) -> ``RUN/pretrain`` (``best`` = lowest CER on held-out
   *synthetic* words);
2. evaluate it on the test split -> **synthetic-only** CER/WER;
3. **adapt** it without labels (``recipes.adapt_folder``) to the *images* of the train split ->
   ``RUN/adapt_train`` -> evaluate on test -> **label-free** CER/WER;
4. **fine-tune** the same pretrained model on the train split *with* labels
   (``recipes.finetune``, the ``last`` checkpoint), reading the images in the layout adaptation
   chose (``hwlearn.layout``; labels are then the only difference) -> ``RUN/finetune`` ->
   **supervised** CER/WER, the upper bound;
5. adapt it again, to the images of train + test -> ``RUN/adapt_train_test`` -> **label-free (train+test
   images)**: the transductive setting where the images to read are themselves the unlabeled set. It runs
   last: with a budget (``budget_minutes``; the ``cpu`` profile's 60) it gets what is left of it as hwlearn
   adapt's ``--time-limit``, so its rounds after the first stop when the next would not fit, its student is cut
   to the steps that fit (or left out), and the run ends within the budget whenever everything before its first
   round's end fits in it. The result records the rounds and the steps each adaptation got
   (``adaptation.<system>.rounds_trained``, ``.student_steps``); the other models never depend on the budget;
6. print a table and write ``benchmarks/results/real_accuracy-<dataset>-<profile>-<host>-<date>.json``
   (commit, machine, ``host_speed``, device, profile settings, command, wall time of each step, CER/WER case-sensitive
   and not, greedy and — with ``--lexicon`` — lexicon-constrained, and
   ``gap_closed = (synthetic - label_free) / (synthetic - supervised)``, null when the
   denominator is <= 0).

Before step 1 the run times ``--speed-check-steps`` training steps and a recognition pass of the
profile's model on pre-rendered words (``benchmarks/train_speed.py``, a subprocess; ~15 s on 2
cores) and records them as ``host_speed``: the same VM type has run the same code 1.4-2x slower
from one day to the next, so a run's minutes are comparable across hosts only with it.

No leakage: test labels are read only for scoring (the evaluations, and the per-round CER that
adaptation prints). Adaptation selects pseudo-labels and its final round by model confidence on the
unlabeled images. Train labels are used by the supervised fine-tuning only (it drops the train images
whose label has a character outside the model's charset: CTC cannot learn them).

**Profiles** (``--set KEY=VALUE`` overrides one setting of the profile, e.g. ``--set pretrain_steps=3000``):

- ``smoke``: seconds; 50 train / 50 test images, a few steps per phase; checks the script works;
- ``cpu``: the 60-minute budget on 2 CPU cores (``budget_minutes=60``, see step 5): small preset, batch 32, 15000 pretraining steps,
  hwlearn adapt's 2000 steps on the matched fonts' words (3-4 minutes), 6 adaptation rounds x 300 steps (share
  ramp over 3) reading each image in 2 augmented views too, then
  hwlearn adapt's student (four times the rounds' steps: 7200, ~10 minutes), 1000 fine-tuning steps. Sized on
  GW (2375 / 3655 images to adapt to); DHSD has twice the images, wider ones, and its one-hour command sets
  7000 pretraining steps of phrases, with rare letters (``Ä``) drawn more often, adapted for 8 rounds
  (``--set pretrain_steps=7000 --set phrase_share=0.5 --set max_len=32 --set char_floor=0.01 --set adapt_rounds=8
  --set adapt_student_steps=0``: its hour has no room for the students; hwlearn adapt's 2000 steps on the
  matched fonts, 5 minutes per adaptation on DHSD's names, take it to the hour's edge; benchmarks/README.md has
  the times);
- ``cpu-full``: hwlearn adapt's defaults (7 rounds x 500 steps, 4 views) on the small preset, 7000
  pretraining steps, 2000 fine-tuning steps: the best CPU numbers, about 1.5 h (GW) to 3 h (DHSD)
  on 2 cores;
- ``gpu``: ``base`` preset (height 64), 8000 pretraining steps of batch 64 with 14 rendering
  workers, 6 x 500 adaptation steps (2 views), no student and no steps on the matched fonts before round 1,
  1500 fine-tuning steps: sized to one
  dataset in a lent GPU machine's 15-minute lease (one H200, 16 cores: ``benchmarks/gpu_session.sh``).
  The one lease so far measured pretraining at ~19 steps/s (~7 minutes for 8000); the rest is an
  estimate. The default student (4 x 3000 = 12000 steps, ~10 minutes at that pace) would not fit
  the lease: ``--set adapt_student_steps=N`` asks for one where there is time.

``--systems`` limits the run to some of the models (the synthetic-only one is always scored), e.g.
``--skip-pretrain RUN/pretrain/best --systems label_free --out-dir runs/exp1 --set adapt_lr=0.001``
tries one adaptation setting on an existing pretrained model in minutes; ``gap_closed`` is then
left out (it needs the supervised model), and the result goes to ``RUN/real_accuracy.json`` rather
than ``benchmarks/results/`` unless ``--json`` says otherwise.

**Deciding without the test split** (``--heldout REGEX``): settings are decided on words the adaptation never
saw, from the train split alone. ``REGEX``'s first group names the group of an image (its page, its writer) in
``train.tsv``'s paths; the run adapts to the images of the first half of the groups (numbers in numeric order)
and scores on the labels of the rest, as if they were the test split, which is not read. E.g. GW's train pages
270-274 / 275-279: ``--heldout 'images/(\\d+)-'``; DHSD's writers 1-18 / 19-37: ``--heldout 'writer(\\d+)/'``.
Its result stays in the run directory unless ``--json`` says otherwise (it is a decision, not a benchmark record).

**Resuming.** Each step's output in ``RUN`` is reused when it is complete (a finished
``pretrain`` or ``finetune`` run, an adaptation's ``final``, an evaluation of the same checkpoint
with the same lexicon and decoding weights: the lexicon's prior weight and length bonus, the character
model's weights); an interrupted training run is resumed from ``last``; an interrupted
adaptation goes on after its last finished round (``hwlearn.selftrain``). ``RUN/settings.json`` records what the outputs depend on, and a run
directory made with other settings is refused. ``RUN/steps.json`` records the commit each step was made at:
a step reused from other code (a default may have changed in it since) is named in a warning, and its
entry in the result's ``steps`` keeps its own ``code``. ``--skip-pretrain CKPT`` uses an existing
pretrained checkpoint instead of step 1.

**German (DHSD).** Pretrain on German words: build corpus statistics from the German word list
with hwlearn itself (the list is GPL-licensed: keep the file under ``runs/``, which git ignores)::

    mkdir -p runs/corpora
    hwlearn corpus --wordlist ../shared/corpora/wordlists/ngerman.txt -o runs/corpora/de_ngerman.json
    python benchmarks/real_accuracy.py ../shared/data/dhsd --profile cpu-full --corpus runs/corpora/de_ngerman.json \
        --set pretrain_steps=4000 --set phrase_share=0.5 --set max_len=32

The model charset has ä ö ü ß Ä Ö Ü, space and hyphen; the script reports label characters it
lacks (DHSD train: ó, š in 5 images). A word-list corpus yields single words, while ~40 % of the
DHSD labels are multi-word names (``Groß Köris``): by default the sampler draws single words;
``--set phrase_share=0.5`` joins 2-3 of them with a space or hyphen in half of the samples.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import typing
from dataclasses import MISSING, asdict, dataclass, fields, replace
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hwlearn.charset import Charset  # noqa: E402
from hwlearn.checkpoint import read_meta  # noqa: E402
from hwlearn.console import console  # noqa: E402
from hwlearn.data import read_labels  # noqa: E402
from hwlearn.errors import HwlearnError  # noqa: E402
from hwlearn.paths import write_text_atomic  # noqa: E402
from hwlearn.recipes import FINETUNE_DROPOUT  # noqa: E402
from hwlearn.selftrain import AdaptConfig  # noqa: E402
from hwlearn.train import TrainConfig  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from render_speed import code_state  # noqa: E402
from train_speed import machine  # noqa: E402

SYSTEMS = {  # result key -> table label
    "synthetic_only": "synthetic-only",
    "label_free": "label-free (train images)",
    "label_free_train_test": "label-free (train+test images)",
    "supervised": "supervised (train labels)",
}


# --------------------------------------------------------------------------------------------
# profiles


@dataclass(frozen=True)
class Profile:
    """Every setting of a benchmark run (``--set KEY=VALUE`` overrides one)."""

    preset: str
    pretrain_steps: int
    batch_size: int
    workers: int  # DataLoader workers (rendering / image loading); torch uses the cores left over
    lr: float = TrainConfig.lr  # pretraining (hwlearn pretrain's default)
    val_every: int = 500  # pretraining: validate on held-out synthetic words, checkpoint
    val_size: int = 500
    style: str = "default"
    max_len: int = 20  # longest sampled word (WordSampler)
    phrase_share: float = 0.0  # share of samples joining 2-3 words with a space/hyphen (WordSampler)
    char_floor: float = 0.0  # every character some word has is in at least this share of word draws (WordSampler)
    break_share: float = 0.0  # share of samples that are a word's first part before a line break, ``immedi-`` (WordSampler)
    # adaptation: hwlearn adapt's defaults (AdaptConfig) unless a profile says otherwise
    adapt_rounds: int = AdaptConfig.rounds
    adapt_ramp_rounds: int = AdaptConfig.ramp_rounds  # the selected share grows over these rounds, then holds
    adapt_steps: int = AdaptConfig.steps_per_round  # per round
    adapt_lr: float = AdaptConfig.lr
    adapt_start_share: float = AdaptConfig.start_share  # share of the unlabeled images pseudo-labeled in round 1 ...
    adapt_end_share: float = AdaptConfig.end_share  # ... growing linearly to this in round adapt_ramp_rounds
    adapt_synthetic_share: float = AdaptConfig.synthetic_share  # share of synthetic words in adaptation batches
    adapt_layout: str = AdaptConfig.layout  # how real images' margins are trimmed (hwlearn.layout); auto: by confidence
    adapt_match_fonts: int = AdaptConfig.match_fonts  # > 0: synthetic words from the closest fonts (hwlearn.fontmatch)
    adapt_font_steps: int = AdaptConfig.font_steps  # steps on those fonts' words alone before round 1
    adapt_font_capitals: float = AdaptConfig.font_capitals  # share of those words' lower-case starts made capitals
    adapt_views: int = AdaptConfig.views  # augmented copies of each image read too (hwlearn.decode.consensus)
    adapt_augment: str = AdaptConfig.augment  # augmentation of the pseudo-labeled images in training
    adapt_dropout: float = AdaptConfig.dropout  # dropout while training on pseudo-labels (whatever the preset has)
    adapt_rare_chars: bool = AdaptConfig.rare_chars  # rare characters' readings selected at the share, repeated
    adapt_hold_marks: bool = AdaptConfig.hold_marks  # trailing marks' share of the pseudo-labels held at round 0's
    adapt_mark_doubt: float = AdaptConfig.mark_doubt  # bare readings a mark would read nearly as well left out (0: kept)
    adapt_beam_width: int | None = AdaptConfig.beam_width  # prefixes the pseudo-labels' search keeps (None: by method)
    adapt_student_steps: int | None = AdaptConfig.student_steps  # the student's steps (None: hwlearn adapt's default)
    finetune_steps: int = 2000
    finetune_lr: float = TrainConfig.lr  # hwlearn train's default
    finetune_synthetic_share: float = 0.0
    finetune_dropout: float = FINETUNE_DROPOUT  # hwlearn train's default
    max_train_images: int = 0  # 0: all; else a seeded random subset
    max_test_images: int = 0
    # the run's minutes (0: no budget), counted from the script's start: the last adaptation (train + test images)
    # gets what is left as hwlearn adapt's --time-limit, so its student is cut to the steps that fit (or left out)
    budget_minutes: float = 0.0


PROFILES = {
    "smoke": Profile(preset="small", pretrain_steps=20, batch_size=8, workers=1, val_every=20, val_size=16,
                     adapt_rounds=1, adapt_steps=5, adapt_font_steps=5, finetune_steps=10, max_train_images=50,
                     max_test_images=50),
    # the 60-minute budget on 2 cores (GW): 6 shorter adaptation rounds read in 2 views, shorter fine-tuning
    # (pretraining is where the minutes pay most: 7000 vs 3500 steps, same adaptation: 0.110 vs 0.169;
    # 5500 steps since batches are sorted by rendered width: a step takes ~0.78 of the time it did; 7500 since
    # GW took 38.6 of its 60 minutes with 5500: 46.9 min, label-free 0.112 -> 0.104, char model 0.087 -> 0.075;
    # 10000 since GW took 32 min with 7500 and 10000 read GW's *train* labels better: char model 0.0833 -> 0.0787;
    # 6 rounds instead of 4 since DHSD took 45.5 min with 4 and rounds 5 and 6 read its train labels better:
    # char model 0.0968 -> 0.0939 -> 0.0900, ~1.6 min a round; 15000 pretraining steps since GW took 28-31 min with
    # 10000 and 15000 read its train labels better: seed 1 greedy 0.0935 -> 0.0908, char model 0.0847 -> 0.0794,
    # seed 0 0.0870 -> 0.0813, 0.0794 -> 0.0716; 38.8 min; the end share is hwlearn adapt's, 0.9 since session 33)
    "cpu": Profile(preset="small", pretrain_steps=15000, batch_size=32, workers=1, val_every=500, val_size=500,
                   adapt_rounds=6, adapt_ramp_rounds=3, adapt_steps=300, adapt_views=2, finetune_steps=1000,
                   budget_minutes=60),
    # hwlearn adapt's defaults on the small model: the best CPU numbers, ~1.5-3 h on 2 cores (its 7000 pretraining
    # steps are those its v9 results were made with; `cpu` now pretrains longer)
    "cpu-full": Profile(preset="small", pretrain_steps=7000, batch_size=32, workers=1, val_every=500, val_size=500,
                        adapt_steps=500, finetune_steps=2000),
    # one dataset in a device lease (benchmarks/gpu_session.sh: one H200, 16 cores, ~13.5 minutes of running in two
    # calls). Measured on the first lease (2026-12-04): pretraining runs at ~19.4 steps of 64 a second with
    # validation (~1340 images/s; the model alone trains 1607/s: the GPU, not the 14 renderers, sets the pace), so
    # 10000 steps took 8.5 minutes and left too little for adaptation; 8000 (synthetic val CER 0.0136 at step 8000
    # of the 10000-step schedule). Batch 128 at half the steps was not tried there: on the CPU the same change to
    # the small model (64 x 7500 for 32 x 15000) read GW worse than all four draws (0.0865 / 0.0681, EXPERIMENTS)
    # hwlearn adapt's default student (4 x 3000 = 12000 steps) would take ~10 of the lease's minutes at that pace:
    # the profile leaves it out (adapt_student_steps=0), as DHSD's one-hour `cpu` command does; and the 2000 steps
    # on the matched fonts before round 1 (never measured on the base model; ~2 minutes per adaptation at that pace)
    "gpu": Profile(preset="base", pretrain_steps=8000, batch_size=64, workers=14, val_every=1000, val_size=1000,
                   adapt_rounds=6, adapt_ramp_rounds=3, adapt_steps=500, adapt_views=2, adapt_student_steps=0,
                   adapt_font_steps=0, finetune_steps=1500),
}

# settings a run directory may be continued with other values of: the workers change only the speed, and the budget
# only the last adaptation's student (which records the steps it got)
SPEED_ONLY = ("workers", "budget_minutes")

#: Seconds of the budget kept back for what follows the last adaptation: its evaluation on the test split (6-9 s on
#: GW, ~20 on DHSD, 2 CPU cores) and the result's table and JSON.
BUDGET_RESERVE_S = 45


def parse_bool(value: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case); else ValueError."""
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def with_overrides(profile: Profile, assignments: list[str]) -> Profile:
    """``profile`` with ``KEY=VALUE`` assignments applied (values cast to the setting's type; ``none`` sets
    a setting that may be None, e.g. ``adapt_beam_width``, back to None)."""
    hints = typing.get_type_hints(Profile)
    changes = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in hints:
            raise HwlearnError(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(hints)}")
        options = typing.get_args(hints[key]) or (hints[key],)  # (int, NoneType) for ``int | None``
        optional = type(None) in options
        kind = next(t for t in options if t is not type(None))
        try:
            if optional and value.strip().lower() == "none":
                changes[key] = None
            else:
                changes[key] = parse_bool(value) if kind is bool else kind(value.strip())
        except ValueError:
            raise HwlearnError(f"--set {item!r}: {value!r} is not a valid {kind.__name__}"
                               + (" (or none)" if optional else "")) from None
    return replace(profile, **changes)


# --------------------------------------------------------------------------------------------
# data


def subset(items: list[tuple[Path, str]], split: str, limit: int, seed: int) -> list[tuple[Path, str]]:
    """``items`` of ``split``, or a seeded random subset of ``limit`` of them when ``limit`` > 0."""
    if 0 < limit < len(items):
        keep = np.random.default_rng([seed, 7, len(split)]).choice(len(items), size=limit, replace=False)
        items = [items[i] for i in sorted(keep)]
    return items


def group_key(group: str) -> tuple:
    """Sort order of held-out groups: numbers by value (writer 9 before writer 10), then other names."""
    return (0, int(group), "") if group.isdigit() else (1, 0, group)


def heldout_split(dataset_dir: Path, pattern: str) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]], dict]:
    """``--heldout``: the train split alone, cut in two by groups of images (pages, writers): the images of the
    first half of the groups to adapt to, the labels of the rest to score. ``pattern``'s first group, searched in
    an image's path as ``train.tsv`` writes it, names its group. Returns (adapt items, read items, the record)."""
    labels = dataset_dir / "train.tsv"
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise HwlearnError(f"--heldout '{pattern}': not a regular expression ({exc})") from None
    if regex.groups < 1:
        raise HwlearnError(f"--heldout '{pattern}': needs a (group) naming an image's page or writer")
    groups: dict[str, list[tuple[Path, str]]] = {}
    for path, text in read_labels(labels):
        shown = path.relative_to(dataset_dir) if path.is_relative_to(dataset_dir) else path
        match = regex.search(shown.as_posix())
        if match is None or not match.group(1):
            raise HwlearnError(f"{labels}: {shown} has no group for --heldout '{pattern}'")
        groups.setdefault(match.group(1), []).append((path, text))
    names = sorted(groups, key=group_key)
    if len(names) < 2:
        raise HwlearnError(f"{labels}: --heldout '{pattern}' finds {len(names)} group(s); it needs two or more")
    adapt, read = names[:len(names) // 2], names[len(names) // 2:]
    record = {"pattern": pattern, "adapt_groups": adapt, "read_groups": read}
    return [i for g in adapt for i in groups[g]], [i for g in read for i in groups[g]], record


def write_labels(path: Path, items: list[tuple[Path, str]]) -> Path:
    """A TSV label file with absolute image paths (read back by ``read_labels``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{Path(p).resolve()}\t{t}\n" for p, t in items), encoding="utf-8")
    return path


def coverage(items: list[tuple[Path, str]], charset: Charset) -> dict:
    """Label characters outside ``charset`` and how many images have one."""
    missing = sorted({c for _, t in items for c in charset.missing(t)})
    return {"missing_chars": "".join(missing), "images_affected": sum(1 for _, t in items if not charset.covers(t))}


def model_charset(skip_pretrain: Path | None) -> Charset:
    """The charset the pretrained model has (or will have: the symbols the bundled fonts draw)."""
    if skip_pretrain is not None:
        return Charset.from_string(read_meta(skip_pretrain)["charset"])
    from hwlearn.fonts import FontLibrary
    from hwlearn.paths import default_fonts_dir
    from hwlearn.synth import default_charset

    return default_charset(FontLibrary.scan(default_fonts_dir()))


# --------------------------------------------------------------------------------------------
# the run directory: settings, step log, reuse


def check_settings(run_dir: Path, settings: dict) -> None:
    """Record ``settings`` in ``RUN/settings.json``; refuse a run directory made with others. A
    profile setting the recorded run lacks (added to the script since) counts as its default value."""
    path = run_dir / "settings.json"
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        added = {f.name: f.default for f in fields(Profile)
                 if f.name not in old and f.default is not MISSING and f.name not in SPEED_ONLY}
        old = {**added, **old}
        diff = [f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in sorted(set(old) | set(settings))
                if old.get(k) != settings.get(k)]
        if diff:
            raise HwlearnError(f"{run_dir}: holds a run with other settings ({'; '.join(diff)}); "
                               "use another --out-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(settings, indent=2) + "\n")


class StepLog:
    """Wall time and facts of each step, and the code that made it (``git_state``), kept in
    ``RUN/steps.json`` so that reused steps keep theirs."""

    def __init__(self, path: Path, code: dict):
        self.path = path
        self.code = code
        self.saved = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        self.steps: dict = {}

    def done(self, name: str, wall_s: float, **facts) -> None:
        self.steps[name] = {"wall_s": round(wall_s, 1), "reused": False, **facts, "code": self.code}
        self.saved[name] = self.steps[name]
        write_text_atomic(self.path, json.dumps(self.saved, indent=2) + "\n")

    def reused(self, name: str, what: Path, in_run: bool = True, **facts) -> None:
        """Record a step whose outputs are reused; say so, and say when other code made those of the run
        directory (``in_run``): the settings check cannot see a default changed in hwlearn's code."""
        console.print(f"[cyan]{name}: reusing {what}")
        if not in_run:  # (e.g. --skip-pretrain's checkpoint: made elsewhere, by code this run cannot know)
            self.steps[name] = {"wall_s": None, **facts, "reused": True}
            return
        self.steps[name] = {**self.saved.get(name, {"wall_s": None}), **facts, "reused": True}
        made_by = self.steps[name].get("code")
        if made_by != self.code or self.code["dirty"]:
            made = (f"commit {made_by['commit'][:10]}{' with uncommitted changes' if made_by['dirty'] else ''}"
                    if made_by else "code that did not record its commit")
            console.print(f"[yellow]{name}: made by {made}, not by this code; its outputs are used as they are "
                          "(another --out-dir runs it with this code)")


def claim(out: Path, pretrained: Path, **extra) -> None:
    """Make sure the step directory ``out`` holds only outputs made from ``pretrained`` (and ``extra``
    facts, e.g. the layout) — a directory made from another one, e.g. before an interrupted pretraining
    was continued, is removed — and record that source in ``out/source.json``."""
    key = {"checkpoint": str(pretrained), "mtime_ns": (Path(pretrained) / "meta.json").stat().st_mtime_ns, **extra}
    path = out / "source.json"
    if out.exists() and (not path.exists() or json.loads(path.read_text(encoding="utf-8")) != key):
        console.print(f"[yellow]{out}: made from another pretrained model; starting it over")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(key) + "\n")


def training_state(run: Path) -> dict | None:
    """``{"step", "steps"}`` of the training run in ``run`` (from ``last``), None when there is none."""
    if not (run / "last" / "meta.json").exists():
        return None
    training = read_meta(run / "last").get("training", {})
    return {"step": int(training.get("step", 0)), "steps": int(training.get("steps", 0))}


# --------------------------------------------------------------------------------------------
# the steps


def pretrain_step(run_dir: Path, profile: Profile, args, log: StepLog) -> Path:
    """Step 1: a model trained on synthetic words only; returns its checkpoint."""
    from hwlearn.recipes import pretrain

    if args.skip_pretrain is not None:
        log.reused("pretrain", args.skip_pretrain, in_run=False, checkpoint=str(args.skip_pretrain), skip_pretrain=True)
        return args.skip_pretrain
    out = run_dir / "pretrain"
    state = training_state(out)
    if state and state["step"] >= state["steps"]:
        log.reused("pretrain", out / "best", checkpoint=str(out / "best"))
        return out / "best"
    console.rule("[bold]1. pretrain on synthetic words" + (f" (resuming at step {state['step']})" if state else ""))
    config = TrainConfig(steps=profile.pretrain_steps, batch_size=profile.batch_size, lr=profile.lr,
                         warmup_steps=min(200, max(1, profile.pretrain_steps // 10)), val_every=profile.val_every,
                         num_workers=profile.workers, seed=args.seed, phase="pretrain")
    t = time.perf_counter()
    result = pretrain(out, preset=profile.preset, corpus=args.corpus, style=profile.style, config=config,
                      val_size=profile.val_size, device=args.device, resume=state is not None,
                      overwrite=state is None, sampler_options={"max_len": profile.max_len, "phrase_share": profile.phrase_share,
                                       "char_floor": profile.char_floor, "break_share": profile.break_share})
    log.done("pretrain", time.perf_counter() - t, checkpoint=str(out / "best"), resumed=state is not None,
             train_seconds=round(result.seconds, 1), best_synth_val_cer=result.best_cer,
             nonfinite_samples=result.nonfinite_samples, skipped_steps=result.skipped_steps)
    return out / "best"


def earlier_adaptation(run_dir: Path, name: str) -> Path | None:
    """The train images' adaptation (``run_dir/adapt_train``) for the train + test images' (``name``), when it has
    matched fonts: the second adaptation draws its synthetic words from the same fonts and starts from the same
    font stage (``hwlearn adapt --fonts-from``) instead of matching and training them again (3 minutes on GW, 5 on
    DHSD). The stage depends on the images only through the fonts they match, and most fonts match alike (20 of 20
    on GW v57-s6 and DHSD v56-s2; 19 of 20 on GW v59-s8, whose own matching retrained the stage: session 69)."""
    from hwlearn.errors import HwlearnError
    from hwlearn.selftrain import matched_fonts

    train = run_dir / "adapt_train"
    if name == "adapt_train":
        return None
    try:
        matched_fonts(train)
    except HwlearnError:
        return None
    return train


def adapt_step(name: str, title: str, pretrained: Path, images: list[Path], run_dir: Path, profile: Profile,
               args, test_tsv: Path, log: StepLog, time_limit: float | None = None) -> tuple[Path, dict]:
    """Step 3: self-training on ``images`` (no labels); returns the final checkpoint and the round summary.
    ``time_limit``: seconds it may take (hwlearn adapt's ``--time-limit``: the student is cut to fit)."""
    from hwlearn.recipes import adapt_folder

    out = run_dir / name
    final = out / "final"
    claim(out, pretrained)
    if (final / "meta.json").exists():
        log.reused(name, final, checkpoint=str(final))
        return final, read_meta(final)["adapt_summary"]
    # an interrupted adaptation resumes after its last finished round (hwlearn.selftrain: same inputs, same key)
    console.rule(f"[bold]{title}")
    if time_limit is not None:
        console.print(f"{max(time_limit, 0) / 60:.1f} minutes of the budget are left for it: the rounds after the "
                      "first and the student's steps that fit")
    config = AdaptConfig(rounds=profile.adapt_rounds, ramp_rounds=profile.adapt_ramp_rounds,
                         steps_per_round=profile.adapt_steps,
                         batch_size=profile.batch_size, lr=profile.adapt_lr,
                         warmup_steps=min(50, max(1, profile.adapt_steps // 5)), num_workers=profile.workers,
                         seed=args.seed, layout=profile.adapt_layout, match_fonts=profile.adapt_match_fonts,
                         font_steps=profile.adapt_font_steps, font_capitals=profile.adapt_font_capitals,
                         start_share=profile.adapt_start_share, end_share=profile.adapt_end_share,
                         synthetic_share=profile.adapt_synthetic_share, views=profile.adapt_views,
                         augment=profile.adapt_augment, dropout=profile.adapt_dropout,
                         rare_chars=profile.adapt_rare_chars, hold_marks=profile.adapt_hold_marks,
                         mark_doubt=profile.adapt_mark_doubt,
                         student_steps=profile.adapt_student_steps, beam_width=profile.adapt_beam_width,
                         time_limit=time_limit)

    def report(row):
        val = "  ".join(f"test {k} {v:.4f}" for k, v in row.val.items())
        console.print(f"{row.name}: selected {row.selected}/{row.labeled}, "
                      f"mean confidence {row.mean_confidence:.4f}  {val}  (test labels: report only; {row.seconds_text()})")

    t = time.perf_counter()
    # test labels go in only to report CER per round; selection and the final round use confidence alone
    result = adapt_folder(pretrained, images, out, config=config,
                          lexicon_source=args.lexicon if args.adapt_lexicon else None, charlm_source=args.char_lm,
                          val_labels=test_tsv, device=args.device, report=report, resume=True,
                          fonts_from=earlier_adaptation(run_dir, name))
    summary = read_meta(result.final_checkpoint)["adapt_summary"]
    log.done(name, time.perf_counter() - t, checkpoint=str(result.final_checkpoint), images=len(images),
             chosen_round=result.chosen_round, layout=result.layout, student_steps=summary.get("student_steps"),
             rounds_trained=summary.get("rounds_trained"))
    return result.final_checkpoint, summary


def finetune_step(pretrained: Path, train_tsv: Path, run_dir: Path, profile: Profile, args, log: StepLog,
                  layout) -> Path:
    """Step 4: supervised fine-tuning on the labeled train split, reading the images in ``layout``
    (the one adaptation chose: labels are then the only difference); returns its last checkpoint."""
    from hwlearn.recipes import finetune

    out = run_dir / "finetune"
    claim(out, pretrained, layout=layout.to_dict())
    state = training_state(out)
    if state and state["step"] >= state["steps"]:
        log.reused("finetune", out / "last", checkpoint=str(out / "last"))
        return out / "last"
    console.rule("[bold]4. fine-tune with the train labels (upper bound)"
                 + (f" (resuming at step {state['step']})" if state else ""))
    config = TrainConfig(phase="finetune", steps=profile.finetune_steps, batch_size=profile.batch_size,
                         lr=profile.finetune_lr, warmup_steps=min(50, max(1, profile.finetune_steps // 10)),
                         val_every=min(500, profile.finetune_steps), num_workers=profile.workers, seed=args.seed)
    t = time.perf_counter()
    result = finetune(pretrained, train_tsv, out, config=config, synthetic_share=profile.finetune_synthetic_share,
                      dropout=profile.finetune_dropout, device=args.device, resume=state is not None,
                      overwrite=state is None, layout=layout)
    log.done("finetune", time.perf_counter() - t, checkpoint=str(out / "last"), resumed=state is not None,
             layout=layout.kind,
             train_seconds=round(result.seconds, 1), nonfinite_samples=result.nonfinite_samples,
             skipped_steps=result.skipped_steps)
    return out / "last"


def eval_step(name: str, checkpoint: Path, test_tsv: Path, run_dir: Path, args, log: StepLog) -> dict:
    """CER/WER of ``checkpoint`` on the test split (greedy, lexicon with ``--lexicon``, and guided
    by the character model of ``--char-lm`` unless it is ``none``);
    per-image predictions go to ``RUN/eval/<name>.csv``."""
    from hwlearn.decode import ARCHIVE_LM_WEIGHT, LENGTH_BONUS, LM_WEIGHT, PRIOR_WEIGHT
    from hwlearn.recipes import evaluate

    out = run_dir / "eval" / f"{name}.json"
    key = {"checkpoint": str(checkpoint), "checkpoint_mtime_ns": (Path(checkpoint) / "meta.json").stat().st_mtime_ns,
           "labels": str(test_tsv), "lexicon": str(args.lexicon) if args.lexicon else None,
           "char_lm": str(args.char_lm), "lm_weights": [LM_WEIGHT, ARCHIVE_LM_WEIGHT],
           "lexicon_weights": [PRIOR_WEIGHT, LENGTH_BONUS]}
    if out.exists():
        cached = json.loads(out.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            log.reused(f"eval_{name}", out)
            return cached["results"]
    t = time.perf_counter()
    summary = evaluate(checkpoint, test_tsv, lexicon_source=args.lexicon, charlm_source=args.char_lm, device=args.device,
                       csv_path=out.with_suffix(".csv"))
    write_text_atomic(out, json.dumps({"key": key, "results": summary["results"]}, indent=2) + "\n")
    log.done(f"eval_{name}", time.perf_counter() - t, images=summary["n"])
    greedy = summary["results"]["greedy"]
    console.print(f"{SYSTEMS[name]}: CER {greedy['cer']:.4f}  WER {greedy['wer']:.4f}")
    return summary["results"]


# --------------------------------------------------------------------------------------------
# results


def gap_closed(results: dict, label_free: str) -> dict:
    """``(synthetic - label_free) / (synthetic - supervised)`` per decoding and metric (None when the
    supervised model is not better than the synthetic-only one)."""
    out: dict = {}
    for method, syn in results["synthetic_only"].items():
        out[method] = {}
        for metric in ("cer", "wer", "cer_nocase", "wer_nocase"):
            s, lf, sup = syn[metric], results[label_free][method][metric], results["supervised"][method][metric]
            out[method][metric] = round((s - lf) / (s - sup), 4) if s - sup > 0 else None
    return out


def git_state() -> dict:
    commit, dirty = code_state(["hwlearn", "benchmarks", ":!benchmarks/results"])
    return {"commit": commit, "dirty": dirty}


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    results, methods = result["results"], list(result["results"]["synthetic_only"])
    steps = result["steps"]
    table = Table(title=f"real accuracy: {result['dataset']['name']} test ({result['dataset']['test_images']} images), "
                        f"profile {result['profile']['name']}, {result['device']}")
    table.add_column("model")
    for method in methods:
        tag = {"greedy": "", "lexicon": " lex", "charlm": " lm"}[method]
        for col in ("CER", "WER", "CER nocase", "WER nocase"):
            table.add_column(col + tag, justify="right")
    table.add_column("gap closed (CER)", justify="right")
    table.add_column("train min", justify="right")
    step_of = {"synthetic_only": "pretrain", "label_free": "adapt_train", "label_free_train_test": "adapt_train_test",
               "supervised": "finetune"}
    for key, label in SYSTEMS.items():
        if key not in results:
            continue
        cells = [f"{results[key][m][k]:.4f}" for m in methods for k in ("cer", "wer", "cer_nocase", "wer_nocase")]
        gap = result["gap_closed"].get(key, {}).get("greedy", {}).get("cer") if key.startswith("label_free") else None
        wall = steps.get(step_of[key], {}).get("wall_s")
        minutes = "" if wall is None else f"{wall / 60:.1f}" + (" (reused)" if steps[step_of[key]]["reused"] else "")
        table.add_row(label, *cells, "" if gap is None else f"{gap:.1%}", minutes)
    Console(width=max(Console().width, 180)).print(table)
    budget = result["profile"].get("budget_minutes") or 0
    students = [f"{SYSTEMS[k]} {a['student_steps']['trained']} of {a['student_steps']['asked']}"
                for k, a in result["adaptation"].items() if (a.get("student_steps") or {}).get("asked")]
    cut = [f"{SYSTEMS[k]} {a['rounds_trained']['trained']} of {a['rounds_trained']['asked']}"
           for k, a in result["adaptation"].items()
           if a.get("rounds_trained") and a["rounds_trained"]["trained"] < a["rounds_trained"]["asked"]]
    print(f"{result['wall_s'] / 60:.1f} minutes in all" + (f", budget {budget:g}" if budget else "")
          + ("; rounds: " + ", ".join(cut) if cut else "")
          + ("; student steps: " + ", ".join(students) if students else ""))


# --------------------------------------------------------------------------------------------
# main


def measure_host_speed(profile: Profile, device: str, steps: int) -> dict | None:
    """How fast this host trains and runs the profile's model: ``benchmarks/train_speed.py`` for
    ``steps`` steps of ``profile.batch_size`` (rendering excluded), in a subprocess so that it
    leaves this process's torch state alone. The same code on a host that trains at half the
    images/s takes about twice as long, so a run's minutes can be compared across hosts. None when
    ``steps`` is 0; ``{"error": ...}`` when the check fails (the run goes on)."""
    if steps <= 0:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speed.json"
        done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "train_speed.py"), "--presets", profile.preset,
                               "--devices", device, "--batch-size", str(profile.batch_size), "--steps", str(steps),
                               "--out", str(out)], capture_output=True, text=True)
        if done.returncode != 0 or not out.exists():
            lines = (done.stderr or done.stdout).strip().splitlines()
            reason = lines[-1] if lines else f"exit status {done.returncode}"
            console.print(f"[yellow]host speed check failed: {reason}")
            return {"error": reason}
        speed = {**json.loads(out.read_text(encoding="utf-8"))["results"][0], "steps": steps}
    console.print(f"host speed: the {speed['preset']} model trains {speed['train_images_per_s']} images/s and "
                  f"recognizes {speed['recognize_words_per_s']} words/s here ({device}, batch {speed['batch_size']}, "
                  f"rendering excluded)")
    return speed


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset_dir", type=Path, metavar="DATASET_DIR", help="directory with train.tsv and test.tsv")
    ap.add_argument("--profile", choices=list(PROFILES), default="cpu")
    ap.add_argument("--corpus", type=Path, default=None,
                    help="corpus statistics JSON for the synthetic words (default: bundled English)")
    ap.add_argument("--lexicon", type=Path, default=None,
                    help="word list or corpus JSON: also score lexicon-constrained decoding")
    ap.add_argument("--adapt-lexicon", action="store_true",
                    help="also use --lexicon for the pseudo-labels during adaptation (default: the character model of --char-lm)")
    ap.add_argument("--char-lm", default="auto", metavar="SOURCE",
                    help="character model for the pseudo-labels when there is no --adapt-lexicon, and an extra "
                         "decoding in every evaluation: auto (the pretraining corpus, hwlearn adapt's default), a "
                         "corpus JSON or word list, or none")
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="run directory (default runs/real_accuracy/<dataset>-<profile>)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--skip-pretrain", type=Path, default=None, metavar="CKPT",
                    help="use this pretrained checkpoint instead of pretraining")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help=f"override a profile setting ({', '.join(f.name for f in fields(Profile))})")
    ap.add_argument("--systems", default=",".join(SYSTEMS), metavar="NAME[,NAME...]",
                    help="which models to train and score (default all: " + ",".join(SYSTEMS) + "); "
                         "e.g. label_free alone for an adaptation experiment on a reused pretrained model")
    ap.add_argument("--speed-check-steps", type=int, default=30, metavar="N",
                    help="first time N training steps and a recognition pass of the profile's model on 512 "
                         "pre-rendered words (benchmarks/train_speed.py, in a subprocess), recorded as host_speed: "
                         "how fast this host runs torch, to compare run times across hosts (0: skip)")
    ap.add_argument("--heldout", default=None, metavar="REGEX",
                    help="decide settings without the test split: adapt to the train images of the first half of "
                         "the groups REGEX's first (group) finds in train.tsv's image paths (pages, writers; "
                         "numbers in order) and score on the train labels of the rest; test.tsv is not read, and "
                         "the result stays in the run directory. GW's pages: 'images/(\\d+)-'; DHSD's writers: "
                         "'writer(\\d+)/'")
    ap.add_argument("--json", type=Path, default=None,
                    help="result file (default benchmarks/results/...; RUN/real_accuracy.json when --systems "
                         "leaves a model out)")
    args = ap.parse_args(argv)
    if args.adapt_lexicon and args.lexicon is None:
        ap.error("--adapt-lexicon needs --lexicon")
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown or not args.systems:
        ap.error(f"--systems: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(SYSTEMS)}")
    return args


def run(args: argparse.Namespace) -> dict:
    """Run the benchmark described by parsed ``args``; returns the result written to JSON."""
    from hwlearn.train import resolve_device

    t_start = time.perf_counter()
    profile = with_overrides(PROFILES[args.profile], args.set)
    dataset_dir = args.dataset_dir.resolve()
    name = dataset_dir.name
    run_dir = (args.out_dir or REPO / "runs" / "real_accuracy" / f"{name}-{args.profile}").resolve()
    for attr in ("corpus", "lexicon", "skip_pretrain"):
        if getattr(args, attr) is not None:
            setattr(args, attr, getattr(args, attr).resolve())
    device = str(resolve_device(args.device))
    code = git_state()  # the code that runs (read now: commits made while it runs are not it)

    if args.heldout:  # the test split is not read at all
        train, test, heldout = heldout_split(dataset_dir, args.heldout)
        console.print(f"--heldout: adapting to the train images of groups {', '.join(heldout['adapt_groups'])}, "
                      f"scoring the train labels of {', '.join(heldout['read_groups'])}")
    else:
        train, test, heldout = read_labels(dataset_dir / "train.tsv"), read_labels(dataset_dir / "test.tsv"), None
    train = subset(train, "train", profile.max_train_images, args.seed)
    test = subset(test, "test", profile.max_test_images, args.seed)
    charset = model_charset(args.skip_pretrain)
    cover = {"train": coverage(train, charset), "test": coverage(test, charset)}
    for split, c in cover.items():
        if c["images_affected"]:
            console.print(f"[yellow]{split}: {c['images_affected']} label(s) use characters the model cannot "
                          f"write: {c['missing_chars']!r}")
    check_settings(run_dir, {
        "dataset": str(dataset_dir), "profile": args.profile,
        **{k: v for k, v in asdict(profile).items() if k not in SPEED_ONLY},
        "seed": args.seed, "heldout": args.heldout, "corpus": str(args.corpus) if args.corpus else None,
        "skip_pretrain": str(args.skip_pretrain) if args.skip_pretrain else None,
        "adapt_lexicon": str(args.lexicon) if args.adapt_lexicon else None,
        "char_lm": None if args.adapt_lexicon else args.char_lm,
    })
    test_tsv = write_labels(run_dir / "data" / "test.tsv", test)
    finetune_items = [(p, t) for p, t in train if charset.covers(t)]
    train_tsv = write_labels(run_dir / "data" / "train_finetune.tsv", finetune_items)
    train_images = [Path(p) for p, _ in train]
    console.print(f"{name}: {len(train)} train images ({len(finetune_items)} with labels the model can write), "
                  f"{len(test)} test images; run directory {run_dir}")
    log = StepLog(run_dir / "steps.json", code)
    # (after the checks above: a refused run does not wait for it)
    host_speed = measure_host_speed(profile, device, args.speed_check_steps)

    pretrained = pretrain_step(run_dir, profile, args, log)
    # the synthetic-only model is always scored: every other number is read against it
    results = {"synthetic_only": eval_step("synthetic_only", pretrained, test_tsv, run_dir, args, log)}
    adapted = {}
    if "label_free" in args.systems:
        final, adapted["label_free"] = adapt_step("adapt_train", "3a. adapt to the train images (no labels)",
                                                  pretrained, train_images, run_dir, profile, args, test_tsv, log)
        results["label_free"] = eval_step("label_free", final, test_tsv, run_dir, args, log)
    if "supervised" in args.systems:
        from hwlearn.layout import Layout

        # the layout adaptation to the train images chose (as-is when it was not run)
        layout = Layout.of(read_meta(run_dir / "adapt_train" / "final")) if "label_free" in adapted else Layout()
        finetuned = finetune_step(pretrained, train_tsv, run_dir, profile, args, log, layout)
        results["supervised"] = eval_step("supervised", finetuned, test_tsv, run_dir, args, log)
    if "label_free_train_test" in args.systems:  # last: with a budget, its student gets what is left of it
        left = (profile.budget_minutes * 60 - (time.perf_counter() - t_start) - BUDGET_RESERVE_S
                if profile.budget_minutes > 0 else None)
        final, adapted["label_free_train_test"] = adapt_step(
            "adapt_train_test", "3b. adapt to the train + test images (no labels)", pretrained,
            train_images + [Path(p) for p, _ in test], run_dir, profile, args, test_tsv, log,
            time_limit=None if left is None else max(left, 1e-3))
        results["label_free_train_test"] = eval_step("label_free_train_test", final, test_tsv, run_dir, args, log)

    pre_meta = read_meta(pretrained)
    result = {
        "benchmark": "real_accuracy",
        "date": date.today().isoformat(),
        **code,
        # (without machine()'s commit: that is HEAD when the run ends; the run's is above and each step's in steps)
        "machine": {k: v for k, v in machine().items() if k != "commit"},
        "host_speed": host_speed,
        "device": device,
        "command": shlex.join(["python", *sys.argv]) if args.command is None else args.command,
        "dataset": {"name": name, "dir": str(dataset_dir), "train_images": len(train), "test_images": len(test),
                    "finetune_images": len(finetune_items), "charset_coverage": cover, "heldout": heldout},
        "profile": {"name": args.profile, **asdict(profile)},
        "settings": {"seed": args.seed, "corpus": pre_meta.get("synthetic", {}).get("corpus"),
                     "lexicon": str(args.lexicon) if args.lexicon else None, "adapt_lexicon": args.adapt_lexicon,
                     "char_lm": args.char_lm,
                     "skip_pretrain": str(args.skip_pretrain) if args.skip_pretrain else None,
                     "run_dir": str(run_dir), "pretrained_checkpoint": str(pretrained)},
        "steps": log.steps,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "results": results,
        "systems": args.systems,
        "gap_closed": {key: gap_closed(results, key) for key in ("label_free", "label_free_train_test")
                       if key in results and "supervised" in results},
        "adaptation": adapted,
    }
    if args.json:
        out = args.json
    elif set(results) == set(SYSTEMS) and not args.heldout:
        out = (REPO / "benchmarks" / "results" /
               f"real_accuracy-{name}-{args.profile}-{socket.gethostname()}-{result['date']}.json")
    else:  # a partial run is an experiment, not a benchmark record: its result stays with its run
        out = run_dir / "real_accuracy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print_table(result)
    print(f"wrote {out}")
    return result


def main(argv=None) -> dict:
    """Command-line entry point; ``argv`` (a list of strings or paths) defaults to ``sys.argv[1:]``."""
    argv = None if argv is None else [str(a) for a in argv]
    args = parse_args(argv)
    args.command = None if argv is None else shlex.join(["python", "benchmarks/real_accuracy.py", *argv])
    try:
        return run(args)
    except HwlearnError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
