"""The ``hwlearn`` command line: a thin click layer over the library.

Each command lives in its own module of this package and is registered below. Bad input raises
:class:`hwlearn.errors.HwlearnError`; the group turns it into one line on stderr
(``Error: <message>``) and exit status 2, never a traceback.
"""

from __future__ import annotations

import click

from ..errors import EXIT_BAD_INPUT, HwlearnError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HwlearnError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(EXIT_BAD_INPUT)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hwlearn")
def main() -> None:
    """hwlearn: a handwritten word recognizer trained without labeled data.

    \b
    Typical flow:
      hwlearn demo        the whole loop on bundled data (start here)
      hwlearn corpus      word statistics from text files / word lists
      hwlearn fonts       which handwriting fonts cover which characters
      hwlearn synth       render a synthetic labeled dataset
      hwlearn pretrain    train a recognizer on synthetic words
      hwlearn adapt       self-train it on your unlabeled word images
      hwlearn evaluate    CER/WER on a labeled subset
      hwlearn recognize   read images
    """


# --- command registrations (one line per command module) ---
from .corpus_cmd import corpus  # noqa: E402
main.add_command(corpus)
from .fonts_cmd import fonts  # noqa: E402
main.add_command(fonts)
from .synth_cmd import synth  # noqa: E402
main.add_command(synth)
from .checkpoints_cmd import checkpoints  # noqa: E402
main.add_command(checkpoints)
from .pretrain_cmd import pretrain  # noqa: E402
main.add_command(pretrain)
from .train_cmd import train  # noqa: E402
main.add_command(train)
from .adapt_cmd import adapt  # noqa: E402
main.add_command(adapt)
from .evaluate_cmd import evaluate  # noqa: E402
main.add_command(evaluate)
from .recognize_cmd import recognize  # noqa: E402
main.add_command(recognize)
from .demo_cmd import demo  # noqa: E402
main.add_command(demo)
