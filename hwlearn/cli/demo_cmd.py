"""``hwlearn demo``: the whole label-free loop on bundled fonts and corpus."""

from __future__ import annotations

from pathlib import Path

import click

from .options import device_option, seed_option, workers_option


@click.command()
@click.option("-o", "--out", default=Path("runs/demo"), show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--pretrain-steps", default=1500, show_default=True, type=click.IntRange(min=1))
@click.option("--target-size", default=400, show_default=True, type=click.IntRange(min=10),
              help="Images in the synthetic target domain.")
@click.option("--adapt-rounds", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--adapt-steps", default=250, show_default=True, type=click.IntRange(min=1), help="Training steps per round.")
@click.option("--overwrite", is_flag=True, help="Replace a previous demo run in --out.")
@device_option
@workers_option
@seed_option
def demo(out, pretrain_steps, target_size, adapt_rounds, adapt_steps, overwrite, device, workers, seed):
    """Run the whole label-free loop on the bundled fonts and corpus (about 10 minutes on 2 CPU cores).

    A target domain is made from held-out fonts with strong distortions; a small model is
    pretrained on the other fonts, adapted to the target images WITHOUT their labels (the
    pseudo-labels are words of the bundled corpus, as with `hwlearn adapt --lexicon`), and
    scored on the target labels before and after. To use your own scans instead, run
    `hwlearn pretrain`, then `hwlearn adapt --unlabeled YOUR_DIR` (see README).
    """
    from rich.table import Table

    from ..console import console
    from ..demo import DemoConfig, run_demo

    config = DemoConfig(pretrain_steps=pretrain_steps, target_size=target_size, adapt_rounds=adapt_rounds,
                        adapt_steps=adapt_steps, workers=workers, seed=seed, device=device)
    result = run_demo(out, config, overwrite=overwrite)
    table = Table(title="target domain (held-out fonts, hard style), greedy decoding")
    for col in ("model", "CER", "WER", "CER (no case)"):
        table.add_column(col, justify="right")
    table.add_row("pretrained (synthetic only)", f"{result.before['cer']:.4f}", f"{result.before['wer']:.4f}",
                  f"{result.before['cer_nocase']:.4f}")
    table.add_row(f"adapted without labels ({result.chosen})", f"{result.after['cer']:.4f}",
                  f"{result.after['wer']:.4f}", f"{result.after['cer_nocase']:.4f}")
    console.print(table)
    console.print(f"total {result.seconds['total']:.0f} s; everything is in {out}/ (demo_result.json, checkpoints, metrics)")
