"""``hwlearn fonts``: which fonts draw which characters, and a preview sheet of every font."""

from __future__ import annotations

from pathlib import Path

import click

#: Preview texts, tried in order: each font shows the first one it covers.
SAMPLE_TEXTS = ("Handwriting Äöüß 1790", "Handwriting 1790", "Handwriting", "handwriting")
PREVIEW_HEIGHT = 48
MAX_MISSING_SHOWN = 60


@click.command()
@click.option(
    "--fonts", "fonts_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
    help="Fonts directory, searched recursively for .ttf/.otf/.woff/.woff2.  [default: bundled fonts]",
)
@click.option(
    "--charset", "charset_arg", default=None, metavar="STRING_OR_FILE",
    help="Characters to check: a string, or a UTF-8 file whose characters (line breaks ignored) "
    "form the charset.  [default: hwlearn's DEFAULT_CHARSET]",
)
@click.option(
    "--preview", default=None, type=click.Path(dir_okay=False, path_type=Path), metavar="PNG",
    help="Write a preview sheet: each font draws a sample text it covers.",
)
@click.option(
    "--sample", "sample_text", default=None, metavar="TEXT",
    help="Text for the preview sheet (fonts that cannot draw it show their best fallback).",
)
@click.option(
    "--style", "style_name", default="clean", show_default=True,
    type=click.Choice(["clean", "default", "hard"]),
    help="Render style preset of the preview sheet.",
)
def fonts(fonts_dir, charset_arg, preview, sample_text, style_name):
    """List the fonts of a fonts directory and their coverage of a charset.

    Prints a table (stderr) of every loadable font: how many characters of the charset it draws
    and which are missing. Font files that cannot be loaded are reported and skipped.

    \b
    Example:
      hwlearn fonts --fonts fonts/ --charset "abcäöüß" --preview fonts_preview.png
    """
    from rich.markup import escape

    from ..charset import DEFAULT_CHARSET
    from ..console import console
    from ..fonts import FontLibrary
    from ..paths import default_fonts_dir

    def report(path: Path, reason: str) -> None:
        console.print(f"[yellow]warning:[/] {escape(str(path))}: {escape(reason)}")

    fonts_dir = fonts_dir if fonts_dir is not None else default_fonts_dir()
    library = FontLibrary.scan(fonts_dir, on_error=report)
    charset = _read_charset(charset_arg) if charset_arg is not None else DEFAULT_CHARSET
    console.print(_coverage_table(library, charset, fonts_dir))
    if preview is not None:
        texts = (sample_text,) + SAMPLE_TEXTS if sample_text else SAMPLE_TEXTS
        sheet = preview_sheet(library, texts, style_name)
        _save_png(sheet, preview)
        console.print(f"wrote {escape(str(preview))} ({sheet.width}x{sheet.height}, {len(library)} fonts)")


def preview_sheet(library, texts: tuple[str, ...], style_name: str = "clean"):
    """A contact sheet with one row per font: the first of ``texts`` it covers, labelled."""
    import numpy as np

    from ..render import Renderer, RenderStyle, contact_sheet

    renderer = Renderer(library, height=PREVIEW_HEIGHT, style=RenderStyle.preset(style_name))
    images, labels = [], []
    for i, font in enumerate(library):
        text = next((t for t in texts if font.covers(t)), None)
        if text is None:  # covers none of the samples: show what it does draw
            text = "".join(sorted(chr(c) for c in font.codepoints if chr(c).isalnum())[:12]) or "?"
        if not font.covers(text):
            continue
        images.append(renderer.render_with_font(text, font, np.random.default_rng([0, i])))
        labels.append(f"{font.name} ({font.path.name})")
    return contact_sheet(images, labels, cols=3, cell_height=PREVIEW_HEIGHT, cell_width=10 * PREVIEW_HEIGHT)


def _read_charset(arg: str):
    """``--charset``: the characters of a file when ``arg`` names one, else of the string itself."""
    from ..charset import Charset
    from ..errors import HwlearnError

    path = Path(arg)
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise HwlearnError(f"{path}: cannot read charset file ({type(exc).__name__})") from None
        text = text.replace("\r", "").replace("\n", "")
        if not text:
            raise HwlearnError(f"{path}: charset file is empty")
        return Charset(text)
    return Charset(arg)


def _coverage_table(library, charset, fonts_dir: Path):
    """Rich table: each font's coverage of ``charset`` (best first) and its missing characters."""
    from rich.markup import escape
    from rich.table import Table

    total = len(charset)
    rows = sorted(library.coverage(charset), key=lambda fm: len(fm[1]))
    table = Table(title=f"{len(library)} fonts in {escape(str(fonts_dir))}, charset of {total} characters")
    table.add_column("font", style="bold")
    table.add_column("file")
    table.add_column("covered", justify="right")
    table.add_column("%", justify="right")
    table.add_column("missing", overflow="fold")
    for font, missing in rows:
        covered = total - len(missing)
        shown = missing if len(missing) <= MAX_MISSING_SHOWN else missing[:MAX_MISSING_SHOWN] + "…"
        color = "green" if not missing else ("yellow" if covered / total >= 0.9 else "red")
        table.add_row(
            escape(font.name), escape(font.path.name), f"{covered}/{total}",
            f"[{color}]{covered / total:.1%}[/]", escape(shown),
        )
    nowhere = "".join(ch for ch in charset.symbols if not library.covering(ch))
    full = sum(1 for _, missing in rows if not missing)
    table.caption = (
        f"{full} of {len(library)} fonts cover the whole charset; "
        + (f"drawn by no font: {escape(repr(nowhere))}" if nowhere else "every character is drawn by some font")
    )
    return table


def _save_png(image, path: Path) -> None:
    from ..errors import HwlearnError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="PNG")
    except OSError as exc:
        raise HwlearnError(f"{path}: cannot write preview ({exc.strerror or type(exc).__name__})") from None
