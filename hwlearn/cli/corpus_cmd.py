"""``hwlearn corpus``: word statistics from text files and word lists, saved as JSON."""

from __future__ import annotations

from pathlib import Path

import click

COVERAGE_TOPS = (10, 100, 1000, 10000)


@click.command()
@click.argument("inputs", nargs=-1)
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="Statistics file to write (JSON).",
)
@click.option(
    "--wordlist", "wordlists", multiple=True, metavar="FILE",
    help="A word list: one 'word' or 'word<TAB>count' per line (count 1 when missing). Repeatable.",
)
@click.option(
    "--min-count", default=1, show_default=True, type=click.IntRange(min=1),
    help="Save only words seen at least N times (the totals still count every token).",
)
@click.option(
    "--max-types", default=None, type=click.IntRange(min=1), metavar="N",
    help="Save at most the N most frequent words.  [default: all]",
)
@click.option(
    "--top", default=20, show_default=True, type=click.IntRange(min=0), metavar="N",
    help="List the N most frequent words in the summary (0: none).",
)
def corpus(inputs, output, wordlists, min_count, max_types, top):
    """Count the words of INPUTS and word lists and save the statistics to OUTPUT.

    INPUTS are UTF-8 text files or directories (read recursively; empty, binary and hidden files
    inside a directory are skipped). Project Gutenberg license headers and footers are ignored.
    Case is kept. The file holds counts only, no text: word counts, characters, word lengths,
    case and attached punctuation. A summary table goes to stderr.

    \b
    Example:
      hwlearn corpus books/ --wordlist extra_words.txt -o corpora/mine.json
    """
    from ..corpus import CorpusStats, find_text_files

    if not inputs and not wordlists:
        raise click.UsageError("give at least one INPUT file or directory, or --wordlist FILE")

    from rich.markup import escape

    from ..console import console, progress_bar
    from ..errors import HwlearnError

    files, skipped = find_text_files(inputs)
    stats = CorpusStats()
    with progress_bar() as bar:
        task = bar.add_task("reading", total=len(files) + len(wordlists))
        try:
            for path in files:
                stats.add_file(path)
                bar.advance(task)
            for path in wordlists:
                stats = stats.merge(CorpusStats.from_wordlist(path))
                bar.advance(task)
        except HwlearnError:
            bar.live.transient = True  # erase the bar: the error is the only output
            raise
    stats.require_words(", ".join(list(inputs) + list(wordlists)))

    kept = stats.pruned(min_count=min_count, max_types=max_types)
    kept.save(output)
    for path in skipped:
        console.print(f"[yellow]skipped (empty or binary):[/] {escape(str(path))}")
    console.print(_summary(stats, kept, len(files), len(wordlists), top))
    console.print(f"wrote {escape(str(output))} ({output.stat().st_size / 1e6:.2f} MB)")


def _summary(stats, kept, n_files: int, n_wordlists: int, top: int):
    """The rich summary table of a corpus."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="corpus statistics", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("files", f"{n_files} text, {n_wordlists} word lists")
    table.add_row("tokens", f"{stats.tokens:,}")
    table.add_row("types", f"{stats.types:,} (case-sensitive); {kept.types:,} saved")
    charset = stats.charset.to_string()
    table.add_row("charset", escape(f"{len(charset)} characters: {charset!r}"))
    table.add_row("mean word length", f"{stats.mean_length():.2f}")
    shares = stats.case_shares()
    table.add_row("case", ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    if stats.tokens:
        table.add_row("attached punctuation", f"{stats.affixed_tokens / stats.tokens:.1%} of tokens")
    for n in COVERAGE_TOPS:
        if n < stats.types:
            table.add_row(f"top {n:,} words cover", f"{stats.coverage(n):.1%} of tokens")
    if top:
        words = ", ".join(f"{w} ({c:,})" for w, c in stats.most_common(top))
        table.add_row(f"top {top} words", escape(words))
    return table
