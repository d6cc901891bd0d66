"""Layouts: trimming blank margins of word images, and choosing the layout by model confidence."""

from __future__ import annotations

import json

import numpy as np
import torch
import pytest
from conftest import write_word_images

from hwlearn.checkpoint import load_checkpoint, save_checkpoint
from hwlearn.errors import HwlearnError
from hwlearn.layout import LAYOUTS, Layout, ink_box, light_ink_share, paper_is_dark, synthetic_margins
from hwlearn.recipes import evaluate, synthetic_like
from hwlearn.selftrain import AdaptConfig, choose_layout


def _page(h=60, w=200, box=(20, 39, 50, 129), paper=230, ink=20) -> np.ndarray:
    img = np.full((h, w), paper, np.uint8)
    top, bottom, left, right = box
    img[top : bottom + 1, left : right + 1] = ink
    return img


def test_ink_box_finds_the_ink_and_ignores_a_stray_speck():
    img = _page()
    assert ink_box(img) == (20, 39, 50, 129)
    img[2, 195] = 20  # one dark pixel far away: noise
    assert ink_box(img) == (20, 39, 50, 129)
    lone = np.pad(np.full((1, 1), 20, np.uint8), 5, constant_values=230)
    assert ink_box(lone) == (5, 5, 5, 5)  # a lone pixel, when it is all there is


def test_ink_box_keeps_a_trailing_period():
    img = _page(w=400, box=(20, 39, 50, 329))  # a long word: 5600 ink pixels
    img[36:40, 340:344] = 20  # its period, 16 pixels (0.3 % of the ink) after a gap
    assert ink_box(img)[3] == 343
    assert Layout("trim-sides", left=0.1, right=0.1)(img)[36:40, 6 + 290 : 6 + 294].max() == 20  # still in the image


def test_ink_box_keeps_thin_strokes_at_the_ends():
    img = _page(w=400, box=(20, 39, 50, 329))
    img[30, 330:380] = 20  # a one-pixel-thin tail (a hairline stroke, an underline): part of the word
    img[31, 380] = 20  # touching it diagonally
    assert ink_box(img)[3] == 380
    assert ink_box(np.full((30, 40), 200, np.uint8)) is None


def test_ink_box_leaves_out_form_rules_at_the_ends():
    img = _page(h=64, w=256, box=(24, 40, 60, 200))  # a name in a form's box
    img[2:62, 30] = 20  # the box's left border, one pixel wide, far taller than the name
    img[10:30, 240] = img[33:56, 240] = 120  # a fainter, broken border on the right
    assert ink_box(img) == (24, 40, 60, 200)
    assert Layout("trim-sides", left=0.1, right=0.1)(img).shape == (64, 6 + 141 + 6)
    touching = _page(h=64, w=256, box=(24, 40, 60, 200))
    touching[2:62, 58] = 20  # one blank column from the name: it may be part of the first letter
    assert ink_box(touching)[2] == 58


def test_ink_box_keeps_strokes_that_could_be_letters():
    img = _page(h=64, w=256, box=(24, 40, 60, 200))
    img[20:44, 50] = 20  # a thin "l" apart from the word, but within the word's height
    assert ink_box(img)[2] == 50
    img = _page(h=64, w=256, box=(24, 40, 60, 200))
    img[2:62, 50:53] = 20  # a full-height stroke three pixels wide: a pen, not a rule
    assert ink_box(img)[2] == 50
    img = _page(h=64, w=256, box=(24, 40, 60, 200))
    img[36:44, 204:206] = 20  # a thin trailing comma: short
    assert ink_box(img)[3] == 205


def test_ink_box_keeps_faint_ink_at_the_word_ends():
    # ink 20 on paper 230: grey 145 is ink level 0.4, below INK_THRESHOLD but above FAINT_INK
    img = _page(h=60, w=300, box=(20, 39, 50, 200))
    img[36:46, 208:211] = 145  # a faint comma 7 pixels after the word (0.12 image heights)
    img[30, 30:50] = 145  # a faint lead-in stroke joined to the first letter
    assert ink_box(img)[2:] == (30, 210)
    out = Layout("trim-sides", left=0.1, right=0.1)(img)
    assert out.shape == (60, 6 + 181 + 6) and out[36:46, 6 + 178 : 6 + 181].max() == 145  # the comma is still there


def test_ink_box_leaves_out_faint_ink_away_from_the_word():
    img = _page(h=64, w=256, box=(24, 40, 60, 200))
    img[40, 240:256:3] = 145  # a form's faint dotted line, 40 pixels (0.6 image heights) after the name
    img[38:41, 226:229] = 145  # a faint speck 25 pixels after the name: beyond FAINT_REACH (16 pixels)
    assert ink_box(img) == (24, 40, 60, 200)
    img[2:62, 45] = 145  # a faint form rule 14 pixels before the name: within reach, still a rule
    assert ink_box(img) == (24, 40, 60, 200)


def test_trim_sides_keeps_rows_and_sets_side_margins():
    img = _page()
    out = Layout("trim-sides", left=0.1, right=0.2)(img)
    assert out.shape == (60, 6 + 80 + 12)  # margins in image heights: 0.1 * 60, ink 80 columns, 0.2 * 60
    assert ink_box(out) == (20, 39, 6, 85)
    assert out[0, 0] == 230  # padded with the paper's grey


def test_trim_all_puts_the_ink_on_the_synthetic_share_of_the_height():
    img = _page(h=100, box=(45, 54, 50, 129))  # ink on 10 % of the height
    layout = Layout("trim-all", top=0.2, bottom=0.3, left=0.1, right=0.1)
    out = layout(img)
    assert out.shape == (4 + 10 + 6, 2 + 80 + 2)  # height 10 / (1 - 0.5) = 20 rows
    assert ink_box(out) == (4, 13, 2, 81)


def test_as_is_and_blank_images_are_left_alone():
    img = _page()
    assert Layout()(img) is img
    blank = np.full((30, 40), 200, np.uint8)
    assert Layout("trim-all")(blank) is blank


def test_layout_is_validated_and_round_trips_through_meta():
    with pytest.raises(HwlearnError, match="unknown layout"):
        Layout("crop")
    with pytest.raises(HwlearnError, match="margins"):
        Layout("trim-all", top=0.6, bottom=0.5)
    layout = Layout("trim-sides", left=0.05)
    assert Layout.of({"preprocessing": {"height": 32, "layout": layout.to_dict()}}) == layout
    assert Layout.of({"preprocessing": {"height": 32}}) == Layout("as-is")


def test_synthetic_margins_are_measured_on_rendered_words(tiny_run):
    synthetic = synthetic_like(load_checkpoint(tiny_run / "best"), seed=5)
    margins = synthetic_margins(synthetic[i][0] for i in range(40))
    assert set(margins) == {"top", "bottom", "left", "right"}
    assert all(0.0 <= v <= 0.45 for v in margins.values())
    with pytest.raises(HwlearnError, match="no ink"):
        synthetic_margins([np.full((10, 10), 255, np.uint8)])


def _with_wide_margins(img: np.ndarray) -> np.ndarray:
    """A word as a careless segmentation would crop it: 1.5 heights of paper on each side."""
    pad = int(1.5 * img.shape[0])
    return np.pad(img, ((0, 0), (pad, pad)), constant_values=int(np.percentile(img, 90)))


def test_choose_layout_prefers_trimming_words_cropped_with_wide_margins(tiny_run):
    ckpt = load_checkpoint(tiny_run / "best")
    synthetic = synthetic_like(ckpt, seed=11)
    words = [synthetic[i][0] for i in range(24)]
    wide = [_with_wide_margins(img) for img in words]

    layout, scores, labels = choose_layout(ckpt.model, wide, synthetic, AdaptConfig(), ckpt.charset, ckpt.height,
                                           device="cpu")
    assert set(scores) == set(LAYOUTS)
    assert layout.kind != "as-is" and scores[layout.kind] == max(scores.values())
    assert scores[layout.kind] > scores["as-is"]
    # a named layout is used as is, without trying the others
    named, none_tried, no_labels = choose_layout(ckpt.model, wide, synthetic, AdaptConfig(layout="as-is"),
                                                 ckpt.charset, ckpt.height, device="cpu")
    assert named.kind == "as-is" and none_tried == {} and no_labels is None
    # the labels returned are the chosen layout's: adapt's round 0 reuses them
    assert len(labels) == len(wide)
    assert np.mean([p.confidence for p in labels]) == pytest.approx(scores[layout.kind])
    # more images than the sample: the choice reads a seeded sample of them and labels none of the rest
    sampled, sample_scores, unlabeled = choose_layout(ckpt.model, wide, synthetic, AdaptConfig(), ckpt.charset,
                                                      ckpt.height, device="cpu", sample=12)
    assert sampled.kind == layout.kind and unlabeled is None
    assert sample_scores != scores and set(sample_scores) == set(scores)
    again = choose_layout(ckpt.model, wide, synthetic, AdaptConfig(), ckpt.charset, ckpt.height, device="cpu",
                          sample=12)[1]
    assert again == sample_scores


def test_adapted_checkpoint_reads_images_in_its_layout(tiny_run, tmp_path):
    """The chosen layout is stored with the adapted model, and evaluate applies it."""
    from PIL import Image

    from hwlearn.recipes import adapt_folder

    ckpt = load_checkpoint(tiny_run / "best")
    folder = tmp_path / "wide"
    words = write_word_images(tiny_run / "best", folder, 16, seed=12, transform=_with_wide_margins)
    (tmp_path / "labels.tsv").write_text("".join(f"{folder / f'w{i:02d}.png'}\t{word}\n"
                                                 for i, word in enumerate(words)), encoding="utf-8")

    result = adapt_folder(tiny_run / "best", folder, tmp_path / "adapt", device="cpu",
                          config=AdaptConfig(rounds=1, steps_per_round=2, batch_size=8, num_workers=0, student_steps=0))
    assert result.layout != "as-is"
    meta = json.loads((tmp_path / "adapt" / "final" / "meta.json").read_text())
    assert meta["preprocessing"]["layout"]["kind"] == result.layout
    assert meta["adapt_summary"]["layout"] == result.layout
    round_meta = json.loads((tmp_path / "adapt" / "round1" / "last" / "meta.json").read_text())
    assert round_meta["preprocessing"]["layout"] == meta["preprocessing"]["layout"]

    final = load_checkpoint(tmp_path / "adapt" / "final")
    img = np.asarray(Image.open(folder / "w00.png"))
    assert final.model_input(img).shape[-1] < ckpt.model_input(img).shape[-1]

    # evaluate reads images in a checkpoint's layout: the pretrained weights read the wide crops
    # better once the same checkpoint records the chosen layout
    save_checkpoint(tmp_path / "trimmed", ckpt.model, ckpt.charset,
                    meta={**ckpt.meta, "preprocessing": meta["preprocessing"]})
    as_is = evaluate(tiny_run / "best", tmp_path / "labels.tsv", device="cpu")["results"]["greedy"]["cer"]
    trimmed = evaluate(tmp_path / "trimmed", tmp_path / "labels.tsv", device="cpu")["results"]["greedy"]["cer"]
    assert trimmed < as_is


def test_adapt_labels_every_image_when_the_layout_was_chosen_on_a_sample(tiny_run, tmp_path, monkeypatch):
    """Round 0 reads all the images, not only the layout choice's sample (here without augmented views,
    where round 0 would otherwise reuse the choice's labels)."""
    import hwlearn.selftrain as selftrain
    from hwlearn.recipes import adapt_folder

    folder = tmp_path / "wide"
    write_word_images(tiny_run / "best", folder, 16, seed=13, transform=_with_wide_margins)
    monkeypatch.setattr(selftrain, "LAYOUT_SAMPLE", 6)
    result = adapt_folder(tiny_run / "best", folder, tmp_path / "adapt", device="cpu",
                          config=AdaptConfig(rounds=1, steps_per_round=2, batch_size=8, num_workers=0, views=0,
                                             student_steps=0))
    assert result.layout != "as-is" and set(result.layout_scores) == set(LAYOUTS)
    assert [r.labeled for r in result.rounds] == [16, 16]
    rows = (tmp_path / "adapt" / "round1" / "pseudo_labels.tsv").read_text().splitlines()[1:]
    assert len(rows) == 16 and sum(row.endswith("\t1") for row in rows) == result.rounds[1].selected


def test_polarity_is_voted_by_each_image_and_decided_by_the_collection():
    page = _page()  # dark ink on light paper
    assert paper_is_dark(page) is False and paper_is_dark(255 - page) is True
    assert paper_is_dark(np.full((20, 20), 128, np.uint8)) is None  # blank: no vote
    tight_i = _page(h=30, w=8, box=(0, 29, 1, 6))  # a crop of an "I", mostly ink: a wrong vote
    assert paper_is_dark(tight_i) is True
    assert light_ink_share([page, page, tight_i, np.full((9, 9), 200, np.uint8)]) == pytest.approx(1 / 3)
    assert light_ink_share([255 - page] * 3 + [page]) == 0.75 and light_ink_share([]) == 0.0
    inverted = Layout("trim-sides", invert=True)
    assert np.array_equal(inverted(255 - page), Layout("trim-sides")(page))
    assert np.array_equal(Layout(invert=True)(page), 255 - page)  # as-is: inverted only
    assert "invert" not in Layout("trim-all").to_dict()  # stored as before polarity existed
    assert Layout.from_dict(inverted.to_dict()) == inverted and inverted.describe() == "trim-sides, inverted"


def test_adapting_to_negatives_inverts_them_and_learns_what_the_positives_teach(tiny_run, tmp_path, capsys):
    """Light ink on dark paper is read inverted: the same pseudo-labels, model and CER as the positives give,
    and the choice is stored, so evaluate and recognize read the negatives alike; a model that does not
    invert warns when most images it is given look like negatives."""
    from hwlearn.recipes import adapt_folder, recognize, warn_polarity

    words = write_word_images(tiny_run / "best", tmp_path / "pos", 12, seed=21, transform=_with_wide_margins)
    write_word_images(tiny_run / "best", tmp_path / "neg", 12, seed=21, transform=lambda img: 255 - _with_wide_margins(img))
    config = AdaptConfig(rounds=1, steps_per_round=3, batch_size=8, num_workers=0, student_steps=0, font_steps=0)
    results = {}
    for name in ("pos", "neg"):
        results[name] = adapt_folder(tiny_run / "best", tmp_path / name, tmp_path / f"adapt_{name}", device="cpu",
                                     config=config)
        (tmp_path / f"{name}.tsv").write_text("".join(f"{tmp_path / name / f'w{i:02d}.png'}\t{w}\n"
                                                      for i, w in enumerate(words)), encoding="utf-8")
    assert results["neg"].layout == results["pos"].layout + ", inverted"
    assert results["neg"].layout_scores == results["pos"].layout_scores
    labels = {name: (tmp_path / f"adapt_{name}" / "round1" / "pseudo_labels.tsv").read_text().replace(f"/{name}/", "/")
              for name in ("pos", "neg")}
    assert labels["neg"] == labels["pos"]
    meta = json.loads((tmp_path / "adapt_neg" / "final" / "meta.json").read_text())
    assert meta["preprocessing"]["layout"]["invert"] is True
    models = {name: load_checkpoint(tmp_path / f"adapt_{name}" / "final").model.state_dict() for name in ("pos", "neg")}
    assert all(torch.equal(models["pos"][k], models["neg"][k]) for k in models["pos"])
    cer = {name: evaluate(tmp_path / f"adapt_{name}" / "final", tmp_path / f"{name}.tsv", device="cpu")["results"]
           ["greedy"]["cer"] for name in ("pos", "neg")}
    assert cer["neg"] == cer["pos"] < 0.9
    capsys.readouterr()
    read = recognize(tiny_run / "best", [tmp_path / "neg"], device="cpu")[0]
    assert "look like light ink on dark paper" in " ".join(capsys.readouterr().err.split())
    assert [t for _, t, _ in recognize(tmp_path / "adapt_neg" / "final", [tmp_path / "neg"], device="cpu")[0]] == \
        [t for _, t, _ in recognize(tmp_path / "adapt_pos" / "final", [tmp_path / "pos"], device="cpu")[0]]
    assert "ink" not in capsys.readouterr().err
    assert len(read) == 12 and warn_polarity([_page()] * 5, Layout(invert=True))
    assert not warn_polarity([255 - _page()] * 4, Layout())  # too few to tell
    ckpt = load_checkpoint(tiny_run / "best")
    negatives = [255 - _with_wide_margins(synthetic_like(ckpt, seed=21)[i][0]) for i in range(6)]
    for invert, expected in ((None, True), (False, False), (True, True)):
        layout = choose_layout(ckpt.model, negatives, synthetic_like(ckpt, seed=1), AdaptConfig(invert=invert),
                               ckpt.charset, ckpt.height, device="cpu")[0]
        assert layout.invert is expected


def test_invert_reads_negatives_with_a_model_that_reads_positives(tiny_run, tmp_path):
    """evaluate and recognize --invert read light ink on dark paper as the model reads the positives, without the
    polarity warning; --no-invert reads an inverting model's images as they are."""
    from click.testing import CliRunner

    from hwlearn.cli import main

    words = write_word_images(tiny_run / "best", tmp_path / "pos", 6, seed=22, transform=_with_wide_margins)
    write_word_images(tiny_run / "best", tmp_path / "neg", 6, seed=22, transform=lambda img: 255 - _with_wide_margins(img))
    for name in ("pos", "neg"):
        (tmp_path / f"{name}.tsv").write_text("".join(f"{name}/w{i:02d}.png\t{w}\n" for i, w in enumerate(words)),
                                              encoding="utf-8")
    model = str(tiny_run / "best")

    def lines(args):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        return [line.split("\t", 1)[1] for line in result.stdout.splitlines()], " ".join(result.stderr.split())

    pos, warned = lines(["recognize", str(tmp_path / "pos"), "--model", model, "--char-lm", "none"])
    assert "ink" not in warned
    neg, warned = lines(["recognize", str(tmp_path / "neg"), "--model", model, "--char-lm", "none", "--invert"])
    assert neg == pos and "ink" not in warned
    as_is, warned = lines(["recognize", str(tmp_path / "neg"), "--model", model, "--char-lm", "none"])
    assert as_is != pos and "read them inverted (--invert)" in warned
    cer = {name: evaluate(model, tmp_path / f"{name}.tsv", device="cpu", charlm_source=None,
                          invert=name == "neg")["results"]["greedy"]["cer"] for name in ("pos", "neg")}
    assert cer["neg"] == cer["pos"]
    result = CliRunner().invoke(main, ["evaluate", "--model", model, "--labels", str(tmp_path / "neg.tsv"),
                                       "--char-lm", "none", "--invert"])
    printed = " ".join(result.output.split())  # (the table goes to stderr, with the warnings)
    assert result.exit_code == 0 and f"{cer['neg']:.4f}" in printed and "ink" not in printed
    inverting = tmp_path / "inverting"
    ckpt = load_checkpoint(tiny_run / "best")
    save_checkpoint(inverting, ckpt.model, ckpt.charset,
                    meta={**ckpt.meta, "preprocessing": {**ckpt.meta.get("preprocessing", {}),
                                                         "layout": Layout(invert=True).to_dict()}})
    flipped, _ = lines(["recognize", str(tmp_path / "pos"), "--model", str(inverting), "--char-lm", "none",
                        "--no-invert"])
    assert flipped == pos
