"""``hwlearn recognize``: read word images with a trained model."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click

from .options import charlm_option, device_option, invert_option, lexicon_option, views_option


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "checkpoint", required=True, type=click.Path(path_type=Path), help="Checkpoint directory.")
@lexicon_option
@charlm_option("auto", "Decode guided by a character model of the language, favouring the words of --lexicon "
                       "when given (none: greedy decoding, or decoding constrained to the --lexicon words).")
@click.option("--beam", is_flag=True, help="Plain CTC beam search (no character model) instead of greedy decoding "
                                          "(ignored with --lexicon).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines: {\"image\", \"text\", \"confidence\"}.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: image,text,confidence.")
@views_option
@invert_option
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@device_option
def recognize(inputs, checkpoint, lexicon, lexicon_weight, length_bonus, char_lm, beam, as_json, as_csv, views, invert, batch_size,
              device):
    """Recognize word images: INPUTS are image files or directories (searched recursively).

    Prints one line per image to stdout: path, text and confidence (tab-separated by default), a
    chunk of 2048 images at a time as they are read, so memory stays bounded on a large folder.
    Unreadable files are skipped and listed on stderr; when none can be read, a one-line error (exit
    status 2). Decoding: guided by a character model of the
    language (--char-lm, by default the corpus the model was pretrained on), favouring the words of
    --lexicon when given; with --char-lm none, the words of --lexicon when given, else greedy or a
    plain beam search (--beam).
    """
    from ..console import console
    from ..recipes import iter_recognize as run

    if as_json and as_csv:
        raise click.UsageError("--json and --csv exclude each other")
    if beam:
        if click.get_current_context().get_parameter_source("char_lm") != click.core.ParameterSource.DEFAULT:
            raise click.UsageError("--beam and --char-lm exclude each other")
        char_lm = None
    chunks = run(checkpoint, inputs, lexicon_source=lexicon, lexicon_weight=lexicon_weight, length_bonus=length_bonus,
                 charlm_source=char_lm, method="beam" if beam else "greedy", device=device, batch_size=batch_size,
                 views=views, invert=invert)
    writer = csv.writer(sys.stdout) if as_csv else None
    recognized, skipped = 0, []
    for results, chunk_skipped in chunks:  # printed as each chunk is read: a large folder's lines come at once
        if writer is not None and recognized == 0 and results:
            writer.writerow(["image", "text", "confidence"])
        for path, text, conf in results:
            if writer is not None:
                writer.writerow([str(path), text, f"{conf:.4f}"])
            elif as_json:
                click.echo(json.dumps({"image": str(path), "text": text, "confidence": round(conf, 4)}, ensure_ascii=False))
            else:
                click.echo(f"{path}\t{text}\t{conf:.4f}")
        sys.stdout.flush()
        recognized += len(results)
        skipped += chunk_skipped
    for path, reason in skipped:
        console.print(f"[yellow]skipped[/] {path}: {reason}", markup=True, highlight=False)
    console.print(f"{recognized} image(s) recognized, {len(skipped)} skipped")
