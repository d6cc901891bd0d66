"""``hwlearn adapt``: self-train a pretrained recognizer on unlabeled real word images."""

from __future__ import annotations

from pathlib import Path

import click

from ..layout import LAYOUTS
from .options import amp_option, charlm_option, device_option, lexicon_option, seed_option, workers_option


@click.command()
@click.option("--from", "checkpoint", required=True, type=click.Path(path_type=Path), help="Pretrained checkpoint (e.g. runs/pre/best).")
@click.option("--unlabeled", required=True, type=click.Path(path_type=Path),
              help="Directory of word images (searched recursively: png jpg tif bmp webp; unreadable files are skipped and listed).")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory (round checkpoints, final).")
@lexicon_option
@charlm_option("auto", "Without --lexicon, decode the pseudo-labels guided by a character model of the language: "
                       "names and compounds no word list holds still get spellings the language uses (none: greedy).")
@click.option("--val", "val_labels", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Labeled subset to REPORT CER/WER per round. Never used for training or for choosing the model.")
@click.option("--rounds", default=7, show_default=True, type=click.IntRange(min=1),
              help="Self-training rounds (each: label, select, train). On GW the CER still fell in rounds 6 "
                   "and 7, held at the end share.")
@click.option("--ramp-rounds", default=5, show_default=True, type=click.IntRange(min=1),
              help="The selected share grows from --start-share to --end-share over this many rounds (all of "
                   "them when --rounds is smaller), then stays at --end-share.")
@click.option("--steps-per-round", default=500, show_default=True, type=click.IntRange(min=1))
@click.option("--start-share", default=0.4, show_default=True, type=click.FloatRange(0.01, 1.0),
              help="Share of the images (most confident first) used as pseudo-labels in round 1.")
@click.option("--end-share", default=0.9, show_default=True, type=click.FloatRange(0.01, 1.0),
              help="Share used from round --ramp-rounds on (grows linearly until then).")
@click.option("--synthetic-share", default=0.1, show_default=True, type=click.FloatRange(0.0, 0.95),
              help="Share of each batch taken from synthetic words.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=3e-3, show_default=True, type=float,
              help="Peak learning rate of each round (AdamW, warmup then cosine decay).")
@click.option("--layout", default="auto", show_default=True, type=click.Choice(["auto", *LAYOUTS]),
              help="How the images' blank margins are trimmed before reading (auto: the layout the model is "
                   "most confident with, on up to 2000 of the images; see docs/adapting.md).")
@click.option("--invert/--no-invert", default=None,
              help="Read the images with their grey levels inverted: light ink on dark paper, as film negatives. "
                   "Default: inverted when most images look so (their median grey nearer their darkest than their "
                   "lightest). The choice is stored with the layout, so evaluate and recognize read alike.")
@click.option("--fonts-from", "fonts_from", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              metavar="RUN", help="Use the fonts an earlier adaptation RUN of the same pretrained model matched instead "
                                  "of matching them again, and its font stage when trained with the same settings "
                                  "(e.g. RUN adapted to fewer images of the same hands).")
@click.option("--match-fonts", default=20, show_default=True, type=click.IntRange(min=0), metavar="K",
              help="Draw the synthetic words mixed into training from the K fonts whose words look most like "
                   "your images (0: all fonts).")
@click.option("--font-steps", default=2000, show_default=True, type=click.IntRange(min=0), metavar="N",
              help="Before round 1, train the pretrained model N steps on synthetic words from the --match-fonts "
                   "fonts alone, so that the rounds and the student start from a model that has seen more of the "
                   "styles nearest your images (0: none; none without --match-fonts). 3-4 minutes on 2 CPU cores "
                   "for the small model. See docs/adapting.md.")
@click.option("--views", default=4, show_default=True, type=click.IntRange(min=0),
              help="Read each image also in this many augmented copies and take as its pseudo-label the "
                   "reading they agree on best, scored by its probability averaged over the image and the "
                   "copies (0: the image alone; each copy costs one more reading of your images per round).")
@click.option("--augment", default="strong", show_default=True, type=click.Choice(["strong", "light"]),
              help="Augmentation of the pseudo-labeled images in training: strong (elastic warp, wider "
                   "rotation, shear, scale, ink and contrast changes) or light (as the copies of --views).")
@click.option("--dropout", default=0.2, show_default=True, type=click.FloatRange(0.0, 0.9),
              help="Dropout while training on the pseudo-labels, whatever the pretrained model used (the small "
                   "preset pretrains without any; on GW adapting with 0.2 read better than with none). "
                   "Recorded in the adapted checkpoints.")
@click.option("--rare-chars", is_flag=True, default=False,
              help="Give characters read in few images (under 2 %, e.g. German capital umlauts) their share "
                   "of each round's selection, and repeat their pseudo-labels in training (to ~1 %), so "
                   "self-training does not unlearn them. For a script whose rare letters are read but then lost "
                   "(DHSD's capital umlauts: better); not where capitals and digits are rare and misread, as "
                   "in old English letters (GW: worse, the misreadings are repeated). Off by default "
                   "(docs/adapting.md).")
@click.option("--hold-marks/--no-hold-marks", default=True, show_default=True,
              help="Keep the share of pseudo-labels ending in each mark (, . ; : -) at what the pretrained model "
                   "read: each round adds a mark to the readings it makes likeliest, or drops it, until its share "
                   "is back (self-training otherwise drops the commas it is unsure of, round by round). "
                   "See docs/training.md.")
@click.option("--mark-doubt", default=0.0, show_default=True, type=click.FloatRange(min=0), metavar="NATS",
              help="Leave out of each round's selection the readings without a trailing mark (day) that a mark "
                   "would make nearly as likely: log P(day,) - log P(day) above -NATS, read from the image, for the "
                   "marks that end at least 1 % of the pretrained model's readings. Trained on, they teach the model "
                   "to leave out commas it sees (GW: 5 read better on two pretrained models, worse on a third). "
                   "0: keep them. See docs/training.md.")
@click.option("--student-steps", default=None, type=click.IntRange(min=0), metavar="N",
              help="After the rounds, train a fresh model from the pretrained weights for N steps on the last "
                   "round's pseudo-labels (the 'student'); the final model is chosen among the rounds and it "
                   "[default: four times as many steps as the rounds together; 0: no student]. See docs/adapting.md.")
@click.option("--time-limit", default=None, type=click.FloatRange(min=0, min_open=True), metavar="MINUTES",
              help="Finish within about MINUTES: a round after the first starts only when it fits in what is "
                   "left, at the pace of the slowest round before (the best round so far is final), and the student "
                   "gets only the steps that fit after the rounds, at their pace, and is left out when fewer than a "
                   "round's steps fit. The font stage and the first round always run, so the limit holds when they "
                   "fit in it. What ran is in OUT/final/meta.json (adapt_summary.rounds_trained, "
                   "adapt_summary.student_steps).")
@click.option("--beam-width", default=None, type=click.IntRange(min=1), metavar="N",
              help="Prefixes the search for each pseudo-label keeps [default: 24 with --lexicon, else 10]. With a "
                   "lexicon a wider beam keeps the words whose first letters the model doubts (GW: 24 labeled "
                   "better than 10 for ~2 s more per round; 48 took ~6 s more and read no better).")
@click.option("--resume", is_flag=True, help="Go on with the interrupted run in --out after its last finished round "
              "(same checkpoint, images and settings: the result is the uninterrupted run's); on a finished run, reuse "
              "its rounds (with --student-steps added: train the student alone).")
@click.option("--overwrite", is_flag=True, help="Start over in an --out that already holds a run.")
@device_option
@amp_option
@workers_option
@seed_option
def adapt(checkpoint, unlabeled, out, lexicon, lexicon_weight, length_bonus, char_lm, val_labels, rounds, ramp_rounds,
          steps_per_round, start_share, end_share, synthetic_share, batch_size, lr, layout, invert, fonts_from,
          match_fonts, font_steps, views, augment, dropout, rare_chars, hold_marks, mark_doubt, student_steps,
          time_limit, beam_width, resume, overwrite, device, amp, workers, seed):
    """Adapt a recognizer to your images without labels (self-training on pseudo-labels).

    First the images' layout is chosen (margins as they are, or trimmed to the synthetic words'
    margins at the sides or all round: the one the model reads most confidently; light ink on dark
    paper inverted), and the model trains
    a while on synthetic words in the fonts closest to them. Each round labels every image with the
    current model, keeps the most confident share, trains on it (augmented, mixed with synthetic words) and checkpoints OUT/round<k>/last. Then a
    student, a fresh model from the weights round 1 started from, trains once on the last round's pseudo-labels
    (OUT/student/last). The final model (OUT/final) is the round or student with the highest mean
    confidence over all images — chosen without labels. A table shows each round; CER/WER columns
    appear only with --val.
    """
    from rich import box
    from rich.table import Table

    from ..console import console
    from ..recipes import adapt_folder
    from ..selftrain import AdaptConfig

    config = AdaptConfig(rounds=rounds, ramp_rounds=ramp_rounds, steps_per_round=steps_per_round, start_share=start_share, end_share=end_share,
                         synthetic_share=synthetic_share, batch_size=batch_size, lr=lr, num_workers=workers, seed=seed, amp=amp,
                         layout=layout, invert=invert, match_fonts=match_fonts, font_steps=font_steps, views=views, augment=augment, dropout=dropout,
                         rare_chars=rare_chars, hold_marks=hold_marks, mark_doubt=mark_doubt, student_steps=student_steps,
                         time_limit=None if time_limit is None else time_limit * 60, beam_width=beam_width)

    def report(row):
        val = "  ".join(f"{k} {v:.4f}" for k, v in row.val.items())
        console.print(f"{row.name}: labeled {row.labeled}, selected {row.selected}, "
                      f"mean confidence {row.mean_confidence:.4f}  {val}  ({row.seconds_text()})")

    result = adapt_folder(checkpoint, unlabeled, out, config=config, lexicon_source=lexicon,
                          lexicon_weight=lexicon_weight, length_bonus=length_bonus, charlm_source=char_lm,
                          val_labels=val_labels, device=device, resume=resume, overwrite=overwrite, report=report,
                          fonts_from=fonts_from)
    # no vertical rules and one space between columns: 10 columns of numbers fit an 80-column terminal
    table = Table(title="self-training rounds (val: the --val labels, report only)", box=box.SIMPLE_HEAD,
                  padding=0, show_edge=False)
    for col in ("round", "labeled", "selected", "share", "mean\nconf.", "conf. of\nselected"):
        table.add_column(col, justify="right")
    val_keys = list(result.rounds[0].val)
    for k in val_keys:
        table.add_column("val\n" + k.replace("_", " "), justify="right")
    for row in result.rounds:
        mark = " *" if row.round == result.chosen_round else ""
        table.add_row(row.name.removeprefix("round ") + mark, str(row.labeled), str(row.selected), f"{row.share:.2f}",
                      f"{row.mean_confidence:.4f}", f"{row.selected_confidence:.4f}",
                      *[f"{row.val[k]:.4f}" for k in val_keys])
    console.print(table)
    console.print(f"chosen without labels: layout {result.layout}, {result.chosen.name} "
                  f"(highest mean confidence) -> {result.final_checkpoint}")
    cut = result.rounds_trained
    if cut and cut["trained"] < cut["asked"]:
        why = cut.get("left_out_by")
        console.print(f"[yellow]{cut['trained']} of the {cut['asked']} rounds ran"
                      + (f" (the {why} left the others out)" if why == "time limit" else f" ({why})" if why else ""))
    student = result.student_steps
    if (student.get("time_limit") is not None and student["trained"] < student["asked"]
            and student.get("left_out_by", "time limit") == "time limit"):
        console.print(f"[yellow]the time limit gave the student {student['trained']} of its {student['asked']} steps"
                      + (" (it was left out)" if student["trained"] == 0 else ""))
    if result.skipped:
        console.print(f"[yellow]skipped {len(result.skipped)} unreadable file(s):")
        for path, reason in result.skipped:
            console.print(f"  {path}: {reason}", markup=False)
