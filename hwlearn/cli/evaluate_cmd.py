"""``hwlearn evaluate``: CER/WER of a checkpoint on a labeled set."""

from __future__ import annotations

from pathlib import Path

import click

from .options import charlm_option, device_option, invert_option, lexicon_option, views_option


@click.command()
@click.option("--model", "checkpoint", required=True, type=click.Path(path_type=Path), help="Checkpoint directory.")
@click.option("--labels", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Labeled images: TSV (path<TAB>text), CSV (path,text) or IAM words.txt; paths relative to the file.")
@lexicon_option
@charlm_option("auto", "Also score decoding guided by a character model of the language, favouring the --lexicon "
                       "words when given (the decoding recognize uses; none: leave it out).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write one row per image: image, reference, prediction, confidence, edit_distance (the decoding "
                   "recognize uses: the character model's, else the lexicon's, else greedy).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the summary as JSON.")
@views_option
@invert_option
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@device_option
def evaluate(checkpoint, labels, lexicon, lexicon_weight, length_bonus, char_lm, csv_path, json_path, views, invert, batch_size,
             device):
    """Character and word error rates of a model on labeled images.

    CER = total edit distance / total reference characters (corpus level), WER likewise over
    words; both case-sensitive and case-insensitive, with greedy decoding, and — with --lexicon —
    lexicon-constrained decoding and — with --char-lm — decoding guided by a character model
    (favouring the --lexicon words when given). If any labeled image cannot be read, it stops
    before recognizing any, with one line counting them and naming the first three.
    """
    from rich.table import Table

    from ..console import console
    from ..recipes import evaluate as run

    summary = run(checkpoint, labels, lexicon_source=lexicon, lexicon_weight=lexicon_weight, length_bonus=length_bonus,
                  charlm_source=char_lm, device=device, batch_size=batch_size, views=views, invert=invert,
                  csv_path=csv_path, json_path=json_path)
    table = Table(title=f"{labels} ({summary['n']} images)")
    for col in ("decoding", "CER", "WER", "CER (no case)", "WER (no case)"):
        table.add_column(col, justify="right")
    for method, s in summary["results"].items():
        table.add_row(method, f"{s['cer']:.4f}", f"{s['wer']:.4f}", f"{s['cer_nocase']:.4f}", f"{s['wer_nocase']:.4f}")
    console.print(table)
    for path in (csv_path, json_path):
        if path:
            console.print(f"wrote {path}")
