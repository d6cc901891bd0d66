"""Tests of hwlearn.fonts (scanning, coverage, broken fonts, split) and `hwlearn fonts`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from fontTools.ttLib import TTFont
from PIL import Image

from hwlearn.charset import Charset
from hwlearn.cli import main
from hwlearn.errors import HwlearnError
from hwlearn.fonts import FontInfo, FontLibrary
from hwlearn.paths import default_fonts_dir

FONTS = default_fonts_dir()
TTF = FONTS / "ttf"
# Caveat draws umlauts and ß; Edu SA Beginner and Nanum Pen Script do not (see fonts/manifest.json).
WITH_UMLAUTS = "caveat.ttf"
WITHOUT_UMLAUTS = ("edu-sa-beginner.ttf", "nanum-pen-script.ttf")


@pytest.fixture(scope="module")
def bundled() -> FontLibrary:
    return FontLibrary.scan(FONTS)


@pytest.fixture
def small_dir(tmp_path):
    """Three real fonts: one with umlauts, two without."""
    for name in (WITH_UMLAUTS,) + WITHOUT_UMLAUTS:
        shutil.copy(TTF / name, tmp_path / name)
    return tmp_path


def cmap_of(path) -> set[int]:
    with TTFont(str(path), lazy=True) as font:
        return set(font.getBestCmap())


# ---- scanning -------------------------------------------------------------------------------


def test_scan_bundled_fonts_reads_cmaps_and_manifest_names(bundled):
    files = [p for p in TTF.iterdir() if p.suffix in (".ttf", ".otf")]
    assert len(bundled) == len(files) >= 60
    by_file = {f.path.name: f for f in bundled}
    assert by_file["caveat.ttf"].name == "Caveat"  # the manifest's family name
    assert by_file["comicneue-italic.otf"].name == "ComicNeue-Italic"  # CFF outlines load too
    for info in bundled:
        assert isinstance(info, FontInfo) and isinstance(info.codepoints, frozenset)
        assert info.codepoints <= cmap_of(info.path)  # never claims a character the cmap lacks
        assert all(ord(ch) in info.codepoints for ch in "aeimnos")


def test_mapped_but_empty_glyphs_do_not_count_as_covered(bundled):
    # ecolier-court maps '^' to a glyph without outline: rendering it would show nothing
    ecolier = next(f for f in bundled if f.path.name == "ecolier-court.ttf")
    assert ord("^") in cmap_of(ecolier.path)
    assert ord("^") not in ecolier.codepoints and ord("a") in ecolier.codepoints
    assert ecolier not in bundled.covering("a^b")
    assert ord(" ") in ecolier.codepoints  # whitespace has no ink but is drawable


def test_names_from_name_table_without_manifest(small_dir):
    lib = FontLibrary.scan(small_dir)
    assert [f.path.name for f in lib] == sorted([WITH_UMLAUTS, *WITHOUT_UMLAUTS])
    assert lib.fonts[0].name == "Caveat Regular"  # full name (ID 4) from the font itself
    (small_dir / "manifest.json").write_text(
        json.dumps([{"family": "My Caveat", "file": WITH_UMLAUTS}]), encoding="utf-8")
    assert FontLibrary.scan(small_dir).fonts[0].name == "My Caveat"


def test_scan_is_recursive_and_accepts_woff2(tmp_path):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    font = TTFont(str(TTF / WITH_UMLAUTS))
    font.flavor = "woff2"
    font.save(str(nested / "caveat.woff2"))
    lib = FontLibrary.scan(tmp_path)
    assert [f.path.name for f in lib] == ["caveat.woff2"]
    assert lib.covering("Grüße")


def test_broken_font_is_skipped_with_a_warning(small_dir):
    (small_dir / "x.ttf").write_bytes(b"this is not a font" * 20)
    with pytest.warns(UserWarning, match=r"x\.ttf.*cannot load font"):
        lib = FontLibrary.scan(small_dir)
    assert len(lib) == 3 and "x.ttf" not in [f.path.name for f in lib]

    reported = []
    FontLibrary.scan(small_dir, on_error=lambda path, reason: reported.append((path.name, reason)))
    assert [name for name, _ in reported] == ["x.ttf"] and reported[0][1]


def test_missing_empty_or_all_broken_directory_is_an_error(tmp_path):
    with pytest.raises(HwlearnError, match="not found"):
        FontLibrary.scan(tmp_path / "nope")
    with pytest.raises(HwlearnError, match="no font files"):
        FontLibrary.scan(tmp_path)
    (tmp_path / "x.ttf").write_bytes(b"\0" * 100)
    with pytest.warns(UserWarning), pytest.raises(HwlearnError, match="none of the 1 font files"):
        FontLibrary.scan(tmp_path)


# ---- coverage queries -----------------------------------------------------------------------


def test_covering_picks_only_fonts_with_every_character(small_dir):
    lib = FontLibrary.scan(small_dir)
    assert [f.path.name for f in lib.covering("Grüße")] == [WITH_UMLAUTS]
    assert len(lib.covering("Grusse")) == 3
    assert len(lib.covering("New York")) == 3  # the space is in every cmap
    assert lib.covering("漢字") == []
    # NFC: 'u' + combining diaeresis is the precomposed ü
    assert [f.path.name for f in lib.covering("u\u0308")] == [WITH_UMLAUTS]


def test_charset_and_coverage(small_dir):
    lib = FontLibrary.scan(small_dir)
    one, all_three = lib.charset(min_fonts=1), lib.charset(min_fonts=3)
    assert "ä" in one and "ä" not in all_three
    assert "a" in all_three and " " in all_three
    assert all(ch.isprintable() for ch in one.symbols)
    with pytest.raises(HwlearnError):
        lib.charset(min_fonts=4)
    missing = {f.path.name: m for f, m in lib.coverage(Charset("aäöüß"))}
    assert missing[WITH_UMLAUTS] == ""
    for name in WITHOUT_UMLAUTS:
        assert missing[name] == "äöüß"


def test_split_by_fraction_and_by_name(bundled):
    kept, held = bundled.split(0.2, seed=3)
    assert len(held) == round(0.2 * len(bundled)) and len(kept) + len(held) == len(bundled)
    assert not {f.path for f in kept} & {f.path for f in held}
    assert bundled.split(0.2, seed=3)[1].names == held.names  # deterministic
    assert bundled.split(0.2, seed=4)[1].names != held.names
    kept, held = bundled.split(["Caveat", "zeyada"])  # family name or file stem, any case
    assert sorted(f.path.name for f in held) == ["caveat.ttf", "zeyada.ttf"]
    assert len(kept) == len(bundled) - 2
    with pytest.raises(HwlearnError, match="no such font"):
        bundled.split(["No Such Font"])
    with pytest.raises(HwlearnError):
        bundled.split(1.5)


# ---- hwlearn fonts --------------------------------------------------------------------------


def test_fonts_cli_table_and_preview(small_dir, tmp_path):
    (small_dir / "x.ttf").write_bytes(b"garbage" * 50)
    preview = tmp_path / "out" / "sheet.png"
    result = CliRunner().invoke(
        main, ["fonts", "--fonts", str(small_dir), "--charset", "abcäß", "--preview", str(preview)])
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert "Caveat" in err and "Edu SA Beginner" in err and "Nanum Pen" in err
    assert "5/5" in err and "3/5" in err and "äß" in err  # Caveat full, the others miss ä and ß
    assert "x.ttf" in err and "warning" in err
    with Image.open(preview) as sheet:
        pixels = np.asarray(sheet.convert("L"))
    assert pixels.shape[0] >= 48 and pixels.shape[1] >= 3 * 10 * 48  # three fonts, one row
    cells = [pixels[6:54, x + 6:x + 6 + 480] for x in (0, 486, 972)]
    assert all(cell.min() < 60 and cell.max() == 255 for cell in cells)  # each font drew ink on paper


def test_fonts_cli_charset_from_file(small_dir, tmp_path):
    charset_file = tmp_path / "chars.txt"
    charset_file.write_text("xyz\nö\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["fonts", "--fonts", str(small_dir), "--charset", str(charset_file)])
    assert result.exit_code == 0, result.output
    assert "4/4" in result.stderr and "3/4" in result.stderr


@pytest.mark.parametrize("make_empty", [True, False])
def test_fonts_cli_bad_directory_is_one_line_error(tmp_path, make_empty):
    target = tmp_path / "fonts"
    if make_empty:
        target.mkdir()
    result = CliRunner().invoke(main, ["fonts", "--fonts", str(target)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(target) in lines[0]
    assert "Traceback" not in result.output
