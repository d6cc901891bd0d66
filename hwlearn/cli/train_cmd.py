"""``hwlearn train``: supervised fine-tuning on labeled real words."""

from __future__ import annotations

from pathlib import Path

import click

from .options import amp_option, device_option, print_train_result, seed_option, train_loop_options, workers_option


@click.command()
@click.option("--from", "checkpoint", required=True, type=click.Path(path_type=Path), help="Checkpoint to start from (e.g. runs/pre/best).")
@click.option("--labeled", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Labeled real words: TSV (path<TAB>text), CSV or IAM words.txt.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@click.option("--val", "val_labels", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Validation labels (picks OUT/best).")
@click.option("--synthetic-share", default=0.0, show_default=True, type=click.FloatRange(0, 0.95),
              help="Share of each batch taken from synthetic words (keeps rare characters alive with few labels).")
@click.option("--dropout", default=0.2, show_default=True, type=click.FloatRange(0.0, 0.9),
              help="Dropout while fine-tuning, whatever the checkpoint was built with (the small preset "
                   "pretrains without any; on GW fine-tuning read better with 0.2).")
@train_loop_options
@device_option
@amp_option
@workers_option
@seed_option
def train(checkpoint, labeled, out, val_labels, synthetic_share, dropout, steps, batch_size, lr, val_every, resume, overwrite,
          device, amp, workers, seed):
    """Fine-tune a checkpoint on labeled real words (the supervised upper bound).

    Images are augmented anew every time they are drawn. Useful when you have a few hundred
    labels, and to measure how far label-free adaptation is from supervised training.
    """
    from ..recipes import finetune
    from ..train import TrainConfig

    config = TrainConfig(steps=steps or 1000, batch_size=batch_size, lr=lr or TrainConfig.lr, warmup_steps=50, val_every=val_every,
                         amp=amp, num_workers=workers, seed=seed, phase="finetune")
    result = finetune(checkpoint, labeled, out, config=config, val_labels=val_labels, synthetic_share=synthetic_share,
                      device=device, resume=resume, overwrite=overwrite, dropout=dropout)
    print_train_result(result, out)
