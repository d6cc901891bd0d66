"""``hwlearn synth``: render a synthetic labeled word-image dataset (and/or a preview sheet)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import HwlearnError
from .options import word_mix_options

#: How many of the first samples the preview sheet shows.
PREVIEW_COUNT = 32


@click.command("synth")
@click.option("--fonts", "fonts_dir", type=click.Path(path_type=Path), default=None,
              help="Fonts directory (default: the bundled fonts).")
@click.option("--corpus", type=click.Path(path_type=Path), default=None,
              help="Corpus statistics JSON from `hwlearn corpus` (default: bundled English).")
@click.option("-n", "--count", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Number of images to write (0: only the --preview sheet).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output directory (images/, labels.tsv, meta.json).")
@click.option("--height", type=click.IntRange(min=8), default=64, show_default=True,
              help="Image height in pixels.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Rendering processes (default: all cores; 0 or 1: this process).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Item i of seed s is always the same image.")
@click.option("--style", default="default", show_default=True,
              help="Render style preset: default, historical (before ~1800: long s, raised ordinals, low line-break hyphens), hard (stronger distortion) or clean.")
@click.option("--preview", type=click.Path(path_type=Path), default=None,
              help=f"Also write a contact sheet of the first {PREVIEW_COUNT} samples (PNG).")
@word_mix_options
@click.option("--overwrite", is_flag=True, help="Replace a dataset already in the output directory.")
def synth(fonts_dir, corpus, count, output, height, workers, seed, style, preview, sampler_options, overwrite) -> None:
    """Render COUNT synthetic word images with their labels into OUTPUT.

    Words are sampled from the corpus statistics; each is drawn with a font that covers all of
    its characters. Item i depends only on (seed, i): the same command writes the same
    pixels whatever --workers is. Format: docs/synth.md.
    """
    from ..console import console
    from ..synth import build_synthetic, write_dataset

    if count > 0 and output is None:
        raise click.UsageError("-o/--output is required when -n > 0")
    if count == 0 and preview is None:
        raise click.UsageError("nothing to do: -n 0 writes no images; add --preview FILE")
    if preview is not None and preview.suffix.lower() != ".png":
        raise HwlearnError(f"{preview}: the preview sheet must be a .png file")

    dataset = build_synthetic(
        fonts_dir=fonts_dir, corpus=corpus, height=height, style=style, seed=seed,
        length=max(count, PREVIEW_COUNT), **sampler_options,
    )
    report = None
    if count > 0:
        report = write_dataset(output, dataset, count, workers=workers, overwrite=overwrite)
    if preview is not None:
        _write_preview(preview, dataset, min(PREVIEW_COUNT, count or PREVIEW_COUNT))
    console.print(_summary(dataset, report, preview))


def _write_preview(path: Path, dataset, k: int) -> None:
    """A labeled contact sheet of items ``0 .. k-1`` (the first images of the dataset)."""
    from ..render import contact_sheet

    items = [dataset.sample(i) for i in range(k)]
    sheet = contact_sheet([im for im, _ in items], labels=[w for _, w in items], cols=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def _summary(dataset, report, preview):
    from rich.table import Table

    info = dataset.info
    table = Table(title="hwlearn synth", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    if report is not None:
        table.add_row("output", str(report.out_dir))
        table.add_row("images", f"{report.count:,}")
        table.add_row("time", f"{report.seconds:.1f} s with {report.workers} worker(s)")
        table.add_row("speed", f"{report.images_per_second:,.0f} images/s")
    if preview is not None:
        table.add_row("preview", str(preview))
    table.add_row("seed / height / style", f"{dataset.seed} / {info['height']} px / {info['style']}")
    table.add_row("fonts", f"{info['num_fonts']} in {info['fonts']}")
    table.add_row("corpus", f"{info['corpus']} ({info['vocabulary']:,} words)")
    mix = info.get("sampler_options", {})
    if mix:
        table.add_row("word mix", ", ".join(f"{k} {v}" for k, v in mix.items()))
    table.add_row("charset", f"{len(info['charset'])} symbols")
    return table
