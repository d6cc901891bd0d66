"""Font matching: ranking fonts by how much their words look like a set of images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import write_word_images

from hwlearn.checkpoint import load_checkpoint
from hwlearn.charset import Charset
from hwlearn.data import to_model_input
from hwlearn.errors import HwlearnError
from hwlearn.fontmatch import closest_fonts, look_features, rank_fonts
from hwlearn.fonts import FontInfo, FontLibrary
from hwlearn.recipes import synthetic_like


@pytest.fixture(scope="module")
def tiny(tiny_run):
    ckpt = load_checkpoint(tiny_run / "best")
    return ckpt, synthetic_like(ckpt, seed=21)


def test_look_features_have_one_row_per_image_and_leave_the_mode(tiny):
    ckpt, synthetic = tiny
    tensors = [to_model_input(synthetic[i][0], ckpt.height) for i in range(5)]
    ckpt.model.train()
    features = look_features(ckpt.model, tensors)
    assert ckpt.model.training
    ckpt.model.eval()
    assert features.shape[0] == 5 and features.shape[1] % 2 == 0 and np.isfinite(features).all()
    # a sample's features do not depend on the batch it came with (padding is masked)
    alone = look_features(ckpt.model, tensors[:1])
    assert np.allclose(alone[0], features[0], atol=1e-4)


@pytest.mark.parametrize("target", [0, 2])
def test_words_drawn_in_one_font_rank_that_font_first(tiny, target):
    ckpt, synthetic = tiny
    font = list(synthetic.renderer.fonts)[target]
    real = [to_model_input(synthetic.renderer.render_with_font(synthetic.word(1000 + i), font,
                                                               np.random.default_rng([9, i])), ckpt.height)
            for i in range(40)]
    ranking = rank_fonts(ckpt.model, ckpt.height, real, synthetic, words_per_font=30)
    assert len(ranking) == len(synthetic.renderer.fonts)
    assert ranking[0][0] == font.name
    assert [d for _, d in ranking] == sorted(d for _, d in ranking)
    with pytest.raises(HwlearnError, match="at least 2"):
        rank_fonts(ckpt.model, ckpt.height, real[:1], synthetic)


def test_closest_fonts_add_fonts_for_characters_the_closest_cannot_draw():
    def font(name, chars):
        return FontInfo(path=None, name=name, codepoints=frozenset(map(ord, chars)))

    library = FontLibrary([font("a", "abc"), font("b", "abc"), font("c", "abcä"), font("d", "abcäß")])
    ranking = [("a", 0.1), ("b", 0.2), ("c", 0.3), ("d", 0.4)]
    assert closest_fonts(ranking, library, Charset("abcäß "), 2) == ["a", "b", "c", "d"]
    assert closest_fonts(ranking, library, Charset("abc"), 2) == ["a", "b"]
    assert closest_fonts(ranking, library, Charset("abcß"), 1) == ["a", "d"]


def test_adapt_draws_synthetic_words_from_the_matched_fonts(tiny_run, tmp_path):
    from hwlearn.recipes import adapt_folder
    from hwlearn.selftrain import AdaptConfig

    folder = tmp_path / "words"
    write_word_images(tiny_run / "best", folder, 12, seed=3)
    synthetic = synthetic_like(load_checkpoint(tiny_run / "best"), seed=3)
    result = adapt_folder(tiny_run / "best", folder, tmp_path / "adapt", device="cpu",
                          config=AdaptConfig(rounds=1, steps_per_round=2, batch_size=8, num_workers=0, match_fonts=1,
                                             font_steps=0))
    meta = json.loads((tmp_path / "adapt" / "final" / "meta.json").read_text())
    used = meta["adapt_summary"]["fonts_used"]
    assert 1 <= len(used) <= len(synthetic.renderer.fonts)
    assert set(used) <= set(synthetic.renderer.fonts.names)
    round_meta = json.loads((tmp_path / "adapt" / "round1" / "last" / "meta.json").read_text())
    assert round_meta["adapt"]["fonts_used"] == used and round_meta["adapt"]["match_fonts"] == 1
    assert result.final_checkpoint.exists()
    assert not (tmp_path / "adapt" / "fonts").exists()  # font_steps=0: the rounds start from the pretrained model
    assert meta["adapt_summary"]["rounds"][0]["checkpoint"] == str(tiny_run / "best")


def _weights(checkpoint):
    return {k: v.clone() for k, v in load_checkpoint(checkpoint).model.state_dict().items()}


def test_the_font_stage_trains_on_the_matched_fonts_before_round_one_and_a_resumed_run_reuses_it(tiny_run, tmp_path,
                                                                                                  capsys):
    from hwlearn.recipes import adapt_folder
    from hwlearn.selftrain import AdaptConfig

    folder = tmp_path / "words"
    write_word_images(tiny_run / "best", folder, 12, seed=3)
    config = AdaptConfig(rounds=1, steps_per_round=2, batch_size=8, num_workers=0, match_fonts=1, font_steps=3,
                         student_steps=2, views=0)
    out = tmp_path / "adapt"
    adapt_folder(tiny_run / "best", folder, out, device="cpu", config=config)
    stage = out / "fonts" / "last"
    stage_meta = json.loads((stage / "meta.json").read_text())
    assert stage_meta["training"]["phase"] == "adapt-fonts" and stage_meta["training"]["step"] == 3
    assert stage_meta["adapt"]["fonts_used"] and stage_meta["adapt"]["source"] == str(tiny_run / "best")
    tuned, pretrained = _weights(stage), _weights(tiny_run / "best")
    assert any(not torch.equal(tuned[k], pretrained[k]) for k in tuned if tuned[k].is_floating_point())
    summary = json.loads((out / "final" / "meta.json").read_text())["adapt_summary"]
    assert summary["rounds"][0]["checkpoint"] == str(stage)  # round 0 (and the student's start) is the tuned model
    final_before = _weights(out / "final")
    stamp = (stage / "meta.json").stat().st_mtime_ns

    adapt_folder(tiny_run / "best", folder, out, device="cpu", config=config, resume=True)
    assert (stage / "meta.json").stat().st_mtime_ns == stamp  # loaded, not trained again
    final_after = _weights(out / "final")
    assert all(torch.equal(final_before[k], final_after[k]) for k in final_before)

    # another adaptation of the same pretrained model (here on a copy of the images: another run key) takes this
    # run's matched fonts and, trained with the same settings, its font stage (copied in, not trained again), and
    # ends with the same model; with another seed it takes the fonts but trains its own stage
    shutil.copytree(folder, tmp_path / "copied")
    for name, settings in (("same", config), ("reseeded", AdaptConfig(**{**config.__dict__, "seed": 1}))):
        capsys.readouterr()
        adapt_folder(tiny_run / "best", tmp_path / "copied", tmp_path / name, device="cpu", config=settings,
                     fonts_from=out)
        printed = " ".join(capsys.readouterr().err.split())
        assert "fonts an earlier adaptation matched" in printed and "closest to the images" not in printed
        copy_meta = json.loads((tmp_path / name / "fonts" / "last" / "meta.json").read_text())
        assert copy_meta["adapt"]["fonts_used"] == stage_meta["adapt"]["fonts_used"]
        assert (copy_meta["resume_key"] == stage_meta["resume_key"]) == (name == "same")
        assert ("resuming: the model trained on the matched fonts" in printed) == (name == "same")
        copy = _weights(tmp_path / name / "fonts" / "last")
        assert all(torch.equal(tuned[k], copy[k]) for k in tuned) == (name == "same")
    final_copy = _weights(tmp_path / "same" / "final")
    assert all(torch.equal(final_before[k], final_copy[k]) for k in final_before)
    with pytest.raises(HwlearnError, match="no adaptation with matched fonts here"):
        adapt_folder(tiny_run / "best", folder, tmp_path / "x", device="cpu", config=config, fonts_from=folder)

    # font_capitals (0 by default) reaches the stage: the same run writing every lower-case start as a capital
    # trains on other words, so the stage's weights differ
    adapt_folder(tiny_run / "best", folder, tmp_path / "caps", device="cpu",
                 config=AdaptConfig(**{**config.__dict__, "font_capitals": 1.0, "student_steps": 0}))
    capped = _weights(tmp_path / "caps" / "fonts" / "last")
    assert any(not torch.equal(tuned[k], capped[k]) for k in tuned if tuned[k].is_floating_point())

    # none without matched fonts (all of them in use: nothing nearer the images to train on)
    adapt_folder(tiny_run / "best", folder, tmp_path / "all", device="cpu",
                 config=AdaptConfig(**{**config.__dict__, "match_fonts": 0}))
    assert not (tmp_path / "all" / "fonts").exists()


def test_font_matching_is_skipped_when_there_is_nothing_to_choose(tiny):
    from hwlearn.selftrain import AdaptConfig, match_synthetic_fonts

    ckpt, synthetic = tiny
    inputs = [(to_model_input(synthetic[i][0], ckpt.height), None) for i in range(4)]
    everything = AdaptConfig(match_fonts=len(synthetic.renderer.fonts))
    assert match_synthetic_fonts(ckpt.model, inputs, synthetic, everything, ckpt.charset, ckpt.height,
                                 "cpu") == (synthetic, [])
    plain = [synthetic[i] for i in range(4)]  # a stream that cannot be redrawn with other fonts
    assert match_synthetic_fonts(ckpt.model, inputs, plain, AdaptConfig(match_fonts=1), ckpt.charset, ckpt.height,
                                 "cpu") == (plain, [])
    matched, used = match_synthetic_fonts(ckpt.model, inputs, synthetic, AdaptConfig(match_fonts=1), ckpt.charset,
                                          ckpt.height, "cpu")
    assert 1 <= len(used) < len(synthetic.renderer.fonts) and matched.renderer.fonts.names == used
