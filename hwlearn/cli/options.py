"""Options shared by the training and recognition commands."""

from __future__ import annotations

import functools
from pathlib import Path

import click

device_option = click.option(
    "--device", default="auto", show_default=True,
    help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:1, mps.",
)
workers_option = click.option(
    "--workers", default=2, show_default=True, type=click.IntRange(min=0),
    help="DataLoader worker processes (render/load images in parallel; 0 = in the main process).",
)
seed_option = click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Random seed.")
amp_option = click.option(
    "--amp", default="auto", show_default=True, type=click.Choice(["auto", "bf16", "fp16", "off"]),
    help="Mixed precision: auto = on CUDA bf16 where supported, else fp16; float32 on the CPU. bf16 on the CPU: bf16 "
         "autocast (no faster on GW's benchmark even with Intel AMX, slower without; see docs/training.md).",
)
LEXICON_WEIGHT = 1.0  # = hwlearn.decode.PRIOR_WEIGHT, not imported here: the CLI starts without torch
LENGTH_BONUS = 2.0  # = hwlearn.decode.LENGTH_BONUS, likewise


def lexicon_option(f):
    """--lexicon --lexicon-weight --length-bonus (same meaning for adapt, evaluate and recognize)."""
    f = click.option(
        "--length-bonus", default=LENGTH_BONUS, show_default=True, type=click.FloatRange(min=0.0),
        help="Score added per letter when choosing among lexicon words (trailing marks left out), against CTC's "
             "preference for shorter readings: without it a faint last letter loses to the shorter word "
             "(your read you). 0 = none.",
    )(f)
    f = click.option(
        "--lexicon-weight", default=LEXICON_WEIGHT, show_default=True, type=click.FloatRange(min=0.0),
        help="Weight of the words' frequency prior when choosing among lexicon words (counts from the corpus "
             "JSON or a word<TAB>count list; a plain list has none). 0 = the image alone decides.",
    )(f)
    return click.option(
        "--lexicon", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="Words of the images' language: a word list (one per line, optional <TAB>count) or a corpus statistics "
             "JSON (its 50,000 most frequent words, their written forms, numbers, and the first parts of words "
             "hyphenated at a line end: immedi-). adapt: the pseudo-labels are these "
             "words. evaluate, recognize: readings guided by the character model favour them; with --char-lm none "
             "decoding is constrained to them.",
    )(f)


def charlm_option(default: str | None, help: str):
    """--char-lm: a character model of the language (adapt: guides the pseudo-labels; evaluate and
    recognize: a decoding)."""
    return click.option("--char-lm", "char_lm", default=default, show_default=default is not None, metavar="SOURCE",
                        help=help + " SOURCE: a corpus statistics JSON or a word list (its words' spelling), or auto "
                                    "(the corpus the model was pretrained on); an adapted model's own readings are mixed in "
                                    "when there is no --lexicon.")


READ_VIEWS = 0  # evaluate's and recognize's --views default


def views_option(f):
    """--views for evaluate and recognize: test-time reading of augmented copies."""
    return click.option(
        "--views", default=READ_VIEWS, show_default=True, type=click.IntRange(min=0),
        help="Also read each image in this many augmented copies and keep the reading they agree on best "
             "(scored by its probability averaged over the image and the copies; each copy costs one more "
             "reading of the images).",
    )(f)


invert_option = click.option(
    "--invert/--no-invert", default=None,
    help="Read the images with their grey levels inverted (light ink on dark paper, as film negatives), or as they "
         "are, whatever the model was adapted to. Default: as the model reads (hwlearn adapt stores it with the "
         "layout), with a warning when most images look the other way.")


def train_loop_options(f):
    """--steps --batch-size --lr --val-every --resume --overwrite (same meaning for every training command)."""
    for opt in reversed([
        click.option("--steps", type=click.IntRange(min=1), default=None, help="Optimizer steps in total."),
        click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1)),
        click.option("--lr", type=float, default=None, help="Peak learning rate (AdamW, warmup then cosine decay). [default: 3e-3]"),
        click.option("--val-every", default=250, show_default=True, type=click.IntRange(min=1),
                     help="Validate and checkpoint every N steps."),
        click.option("--resume", is_flag=True, help="Continue the run in --out exactly where its last checkpoint left it."),
        click.option("--overwrite", is_flag=True, help="Start over in an --out that already holds a run."),
    ]):
        f = opt(f)
    return f


def word_mix_options(f):
    """--max-len --phrase-share --char-floor --break-share (the word sampler's options, same for synth and
    pretrain), passed to the command as one ``sampler_options`` dict."""
    @functools.wraps(f)
    def command(*args, max_len, phrase_share, char_floor, break_share, **kwargs):
        return f(*args, sampler_options={"max_len": max_len, "phrase_share": phrase_share, "char_floor": char_floor,
                                         "break_share": break_share}, **kwargs)

    for opt in reversed([
        click.option("--max-len", default=20, show_default=True, type=click.IntRange(min=1),
                     help="Longest sampled word (characters)."),
        click.option("--phrase-share", default=0.0, show_default=True, type=click.FloatRange(0.0, 1.0),
                     help="Share of samples that join 2-3 words with a space or hyphen (street names, form fields)."),
        click.option("--char-floor", default=0.0, show_default=True, type=click.FloatRange(0.0, 1.0, max_open=True),
                     help="Draw words holding rare letters more often, so that every letter that 20 or more corpus "
                          "words have is in at least this share of the words (e.g. 0.01; from a German word list Ä "
                          "is in 0.06 %)."),
        click.option("--break-share", default=0.0, show_default=True, type=click.FloatRange(0.0, 1.0),
                     help="Share of samples that are the first part of a word a line break cut, with its hyphen "
                          "(immedi-): for archives of running text (e.g. 0.02)."),
    ]):
        command = opt(command)
    return command


def print_train_result(result, out_dir: Path) -> None:
    from ..console import console

    best = "n/a" if result.best_cer is None else f"{result.best_cer:.4f}"
    console.print(
        f"done: step {result.step}, best validation CER {best}, "
        f"{result.skipped_steps} skipped steps, {result.nonfinite_samples} non-finite losses, {result.seconds:.0f} s training"
    )
    console.print(f"checkpoints: {out_dir / 'best'} (best), {out_dir / 'last'} (last); metrics: {out_dir / 'metrics.jsonl'}, {out_dir / 'curve.png'}")
