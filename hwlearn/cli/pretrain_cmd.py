"""``hwlearn pretrain``: train a recognizer on synthetic words."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (amp_option, device_option, print_train_result, seed_option, train_loop_options, word_mix_options,
                      workers_option)


@click.command()
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory (checkpoints, metrics).")
@click.option("--preset", default="small", show_default=True, help="Model preset: small (CPU, height 32) or base (GPU, height 64).")
@click.option("--fonts", "fonts_dir", type=click.Path(path_type=Path), default=None, help="Fonts directory. [default: bundled fonts/]")
@click.option("--corpus", type=click.Path(path_type=Path), default=None, help="Corpus statistics JSON. [default: bundled English]")
@click.option("--style", default="default", show_default=True, help="Render style preset: default, historical (handwriting before ~1800: long s, raised ordinals, low line-break hyphens), hard.")
@word_mix_options
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Train on a dataset written by `hwlearn synth` instead of rendering on the fly.")
@click.option("--val", "val_labels", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also validate on this labeled real set (TSV/CSV/IAM words.txt); its labels never train.")
@click.option("--val-size", default=500, show_default=True, type=click.IntRange(min=1), help="Held-out synthetic validation words.")
@train_loop_options
@device_option
@amp_option
@workers_option
@seed_option
def pretrain(out, preset, fonts_dir, corpus, style, sampler_options, data_dir, val_labels, val_size, steps, batch_size, lr, val_every,
             resume, overwrite, device, amp, workers, seed):
    """Pretrain a CTC recognizer on synthetic handwritten words.

    Words are sampled from the corpus statistics and rendered with the fonts on the fly in
    --workers processes (or read from a `hwlearn synth` dataset with --data). Every --val-every
    steps the model is validated on held-out synthetic words (and --val), and OUT/last (resumable)
    and OUT/best (lowest validation CER) are written. Ctrl-C saves OUT/last; --resume continues.

    \b
    Example:
      hwlearn pretrain -o runs/pre --preset small --steps 3000
    """
    from ..recipes import pretrain as run
    from ..train import TrainConfig

    config = TrainConfig(steps=steps or 3000, batch_size=batch_size, lr=lr or TrainConfig.lr, val_every=val_every, amp=amp,
                         num_workers=workers, seed=seed, phase="pretrain")
    result = run(out, preset=preset, fonts_dir=fonts_dir, corpus=corpus, style=style, data_dir=data_dir, config=config,
                 val_labels=val_labels, val_size=val_size, device=device, resume=resume, overwrite=overwrite,
                 sampler_options=sampler_options)
    print_train_result(result, out)
