"""Tests of hwlearn.render: shapes, determinism, font choice, pickling, styles, contact sheets."""

from __future__ import annotations

import dataclasses
import multiprocessing
import pickle
import shutil

import numpy as np
import pytest

from hwlearn.errors import HwlearnError
from hwlearn.fonts import FontLibrary
from hwlearn.paths import default_fonts_dir
from hwlearn.render import PRESETS, Renderer, RenderStyle, contact_sheet

TTF = default_fonts_dir() / "ttf"
SUBSET = ("caveat.ttf", "edu-sa-beginner.ttf", "dancing-script.ttf", "comicneue-bold.otf")
WORDS = ("the", "Grüße", "Washington,", "1790", "I", ".", "well-known", "New York", "Straße")


@pytest.fixture(scope="module")
def fonts(tmp_path_factory) -> FontLibrary:
    directory = tmp_path_factory.mktemp("fonts")
    for name in SUBSET:
        shutil.copy(TTF / name, directory / name)
    return FontLibrary.scan(directory)


@pytest.fixture(scope="module")
def renderer(fonts) -> Renderer:
    return Renderer(fonts, height=32)


def rng(i: int, seed: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, i])


def ink_fraction(img: np.ndarray) -> float:
    return float(np.mean(img < 128))


@pytest.mark.parametrize("style", sorted(PRESETS))
@pytest.mark.parametrize("height", [32, 64])
def test_output_is_uint8_of_fixed_height_with_dark_ink_on_light_paper(fonts, style, height):
    r = Renderer(fonts, height=height, style=RenderStyle.preset(style))
    for i, word in enumerate(WORDS):
        img = r.render(word, rng(i))
        assert img.dtype == np.uint8 and img.ndim == 2 and img.shape[0] == height
        assert img.shape[1] >= height // 4
        assert np.median(img) > img.min() + 30, (style, word)  # paper is lighter than the darkest ink
    long_word, short_word = r.render("Hauptbahnhofstraße", rng(1)), r.render("in", rng(1))
    assert long_word.shape[1] > 2 * short_word.shape[1]  # width follows the aspect ratio


def test_same_seed_same_pixels_different_seed_different_pixels(renderer):
    for i, word in enumerate(WORDS[:5]):
        a, b = renderer.render(word, rng(i)), renderer.render(word, rng(i))
        assert a.shape == b.shape and np.array_equal(a, b)
    c, d = renderer.render("morning", rng(0, seed=1)), renderer.render("morning", rng(0, seed=2))
    assert c.shape != d.shape or not np.array_equal(c, d)


def test_word_is_only_rendered_with_a_font_that_covers_it(fonts, monkeypatch):
    r = Renderer(fonts, height=32)
    used = []
    original = Renderer.render_with_font
    monkeypatch.setattr(Renderer, "render_with_font",
                        lambda self, word, font, g: used.append(font.path.name) or original(self, word, font, g))
    for i in range(40):
        r.render("Grüße", rng(i))
        r.render("Gruss", rng(i))
    umlaut_uses, plain_uses = used[0::2], used[1::2]
    assert "edu-sa-beginner.ttf" not in umlaut_uses  # it has no ü and no ß
    assert set(plain_uses) == set(SUBSET)  # every font gets used when it can draw the word
    with pytest.raises(HwlearnError, match="cannot draw"):
        r.render_with_font("Grüße", next(f for f in fonts if f.path.name == "edu-sa-beginner.ttf"), rng(0))


def test_uncoverable_or_blank_words(renderer):
    assert renderer.can_render("hello") and renderer.can_render("Grüße")
    assert not renderer.can_render("漢字") and not renderer.can_render("   ") and not renderer.can_render("")
    with pytest.raises(HwlearnError, match="no font covers"):
        renderer.render("a漢", rng(0))
    with pytest.raises(HwlearnError, match="blank"):
        renderer.render(" ", rng(0))


def test_renderer_survives_pickling_and_renders_identically_in_another_process(renderer):
    before = [renderer.render(w, rng(i)) for i, w in enumerate(WORDS[:3])]  # fills the font caches
    blob = pickle.dumps(renderer)
    assert b"FreeTypeFont" not in blob and len(blob) < 200_000
    clone = pickle.loads(blob)
    assert all(np.array_equal(a, clone.render(w, rng(i))) for i, (a, w) in enumerate(zip(before, WORDS)))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        remote = pool.starmap(_render_in_worker, [(renderer, w, i) for i, w in enumerate(WORDS[:3])])
    assert all(np.array_equal(a, b) for a, b in zip(before, remote))


def _render_in_worker(renderer: Renderer, word: str, i: int) -> np.ndarray:
    return renderer.render(word, rng(i))


def test_stroke_width_controls_ink(fonts):
    clean = RenderStyle.preset("clean")
    widths = (0.03, 0.08, 0.16)  # pen width in line heights; the fonts' own are 0.04..0.12
    renderers = [Renderer(fonts, 64, clean.replace(stroke_width=(w, w))) for w in widths]
    for i, font in enumerate(fonts):
        ink = [ink_fraction(r.render_with_font("minimum", font, rng(i))) for r in renderers]
        assert ink[0] <= ink[1] < ink[2] and ink[2] > 1.3 * ink[0], (font.name, ink)


def test_slant_shears_the_ink(fonts):
    """A vertical stroke ('l') leaning right has its top ink right of its bottom ink."""
    base = RenderStyle.preset("clean").replace(margin_y=(0.0, 0.0), line_box=(0.0, 0.0))
    font = next(f for f in fonts if f.path.name == "edu-sa-beginner.ttf")  # an upright print font

    def lean(slant: float) -> float:
        img = Renderer(fonts, 64, base.replace(slant=(slant, slant))).render_with_font("l", font, rng(0))
        ink = img < 128
        cols = np.arange(img.shape[1])
        top, bottom = ink[:16], ink[-16:]
        return (cols * top.sum(0)).sum() / top.sum() - (cols * bottom.sum(0)).sum() / bottom.sum()

    upright = lean(0.0)
    assert lean(30.0) > upright + 10 and lean(-30.0) < upright - 10


def test_trailing_punctuation_may_stand_apart(fonts):
    """mark_gap widens a word that ends in punctuation by the gap before the mark, nothing else."""
    base = RenderStyle.preset("clean")
    apart = Renderer(fonts, 64, base.replace(mark_gap_prob=1.0, mark_gap=(0.6, 0.6)))
    together = Renderer(fonts, 64, base)
    for i, font in enumerate(fonts):
        gap = apart.render_with_font("day,", font, rng(i)).shape[1] - together.render_with_font("day,", font, rng(i)).shape[1]
        assert gap > 0.3 * 64, (font.name, gap)  # 0.6 em at a font size of roughly the output height
        for word in ("day", ",", "e.g"):  # no trailing mark, or nothing before it: drawn as before
            assert np.array_equal(apart.render_with_font(word, font, rng(i)), together.render_with_font(word, font, rng(i)))


def test_long_s_draws_the_first_of_a_double_s_as_an_f(fonts):
    """long_s_prob: a double s is drawn ``fs`` (the label stays the word), each with that chance; a word
    without one is drawn as before. (The clean style's draws change nothing, so the rendering of the
    stand-in spelling is what the long s must give.)"""
    clean = RenderStyle.preset("clean")
    long_s, plain = Renderer(fonts, 32, clean.replace(long_s_prob=1.0)), Renderer(fonts, 32, clean)
    font = next(iter(fonts))
    assert np.array_equal(long_s.render_with_font("necessary", font, rng(0)),
                          plain.render_with_font("necefsary", font, rng(0)))
    assert not np.array_equal(long_s.render_with_font("necessary", font, rng(0)),
                              plain.render_with_font("necessary", font, rng(0)))
    assert np.array_equal(long_s.render_with_font("unlike", font, rng(0)), plain.render_with_font("unlike", font, rng(0)))
    shares = [Renderer(fonts, 32, clean.replace(long_s_prob=0.5)).render_with_font("unless", font, rng(i)).shape[1]
              for i in range(40)]
    assert 2 <= len(set(shares)) and 10 <= shares.count(max(shares, key=shares.count)) <= 30  # about half each
    assert RenderStyle.preset("historical").long_s_prob == 0.5


def ink_rows(img: np.ndarray, cols: slice) -> float:
    """Mean row of the ink in the columns ``cols`` of a clean-style image (0 = top)."""
    ink = 255.0 - img[:, cols].astype(np.float64)
    return float((ink.sum(axis=1) * np.arange(img.shape[0])).sum() / ink.sum())


def test_ordinal_letters_are_drawn_small_and_raised(fonts):
    """superscript_prob: an ordinal's letters are drawn smaller and higher than its digits (GW's ``28ᵗʰ.``);
    a word that is no ordinal is drawn as before, from the same draws."""
    clean = RenderStyle.preset("clean")
    raised, plain = Renderer(fonts, 64, clean.replace(superscript_prob=1.0)), Renderer(fonts, 64, clean)
    for i, font in enumerate(fonts):
        up, flat = raised.render_with_font("28th", font, rng(i)), plain.render_with_font("28th", font, rng(i))
        assert up.shape[1] < flat.shape[1], font.name  # smaller letters
        right = slice(-max(2, up.shape[1] // 5), None)  # the letters' end
        assert ink_rows(up, right) < ink_rows(flat, right) - 4, font.name  # higher
        for word in ("day", "th", "1790", "De-"):
            assert np.array_equal(raised.render_with_font(word, font, rng(i)), plain.render_with_font(word, font, rng(i)))
        # a period after the letters is drawn under them, on the baseline: it hardly widens the word
        assert raised.render_with_font("28th.", font, rng(i)).shape[1] <= up.shape[1] + 0.2 * 64, font.name


def test_line_break_hyphen_is_drawn_on_the_baseline(fonts):
    """low_hyphen_prob: the hyphen that ends a line-break part (``immedi-``) is drawn low, where GW writes it;
    a hyphen inside a word is drawn as before, from the same draws."""
    clean = RenderStyle.preset("clean").replace(mark_gap=(0.2, 0.2))
    low, plain = Renderer(fonts, 64, clean.replace(low_hyphen_prob=1.0)), Renderer(fonts, 64, clean)
    for i, font in enumerate(fonts):
        down, mid = low.render_with_font("immedi-", font, rng(i)), plain.render_with_font("immedi-", font, rng(i))
        hyphen = slice(-max(2, down.shape[1] // 12), None)
        assert ink_rows(down, hyphen) > ink_rows(mid, hyphen) + 4, font.name
        for word in ("well-known", "day", "-"):
            assert np.array_equal(low.render_with_font(word, font, rng(i)), plain.render_with_font(word, font, rng(i)))


def test_style_validation_presets_and_frozen():
    assert RenderStyle.preset("default") == RenderStyle()
    hard, default = RenderStyle.preset("hard"), RenderStyle()
    assert hard.noise[1] > default.noise[1] and hard.slant[1] > default.slant[1]
    with pytest.raises(HwlearnError, match="unknown render style"):
        RenderStyle.preset("fancy")
    with pytest.raises(HwlearnError, match="slant"):
        RenderStyle(slant=(10.0, -10.0))
    with pytest.raises(HwlearnError, match="clutter_prob"):
        RenderStyle(clutter_prob=1.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        default.slant = (0.0, 0.0)
    with pytest.raises(HwlearnError):
        Renderer(FontLibrary([]))


def test_contact_sheet_grid(renderer):
    images = [renderer.render(w, rng(i)) for i, w in enumerate(WORDS)]
    sheet = contact_sheet(images, labels=list(WORDS), cols=4, cell_height=32)
    cols, rows, gap, label = 4, 3, 6, 16
    assert sheet.mode == "L"
    assert sheet.size == (cols * (4 * 32 + gap) + gap, rows * (32 + label + gap) + gap)
    assert contact_sheet(images[:2], cols=2, cell_height=32).size == (2 * (128 + gap) + gap, 32 + 2 * gap)
    with pytest.raises(HwlearnError):
        contact_sheet([])
