"""Self-training's selection schedule, and resuming an interrupted adaptation."""

from __future__ import annotations

import json
import shutil

import numpy as np

import pytest

from conftest import write_word_images
from hwlearn.selftrain import AdaptConfig


def test_share_ramps_then_holds_at_the_end_share():
    config = AdaptConfig(rounds=7, ramp_rounds=5, start_share=0.4, end_share=0.8)
    assert [config.share(r) for r in range(1, 8)] == pytest.approx([0.4, 0.5, 0.6, 0.7, 0.8, 0.8, 0.8])


def test_fewer_rounds_than_the_ramp_still_reach_the_end_share():
    assert [AdaptConfig(rounds=3, ramp_rounds=5, end_share=0.8).share(r) for r in (1, 2, 3)] == pytest.approx(
        [0.4, 0.6, 0.8])
    assert AdaptConfig(rounds=1).share(1) == pytest.approx(0.9)
    assert AdaptConfig(rounds=4, ramp_rounds=1).share(1) == pytest.approx(0.9)


def test_adapt_command_defaults_are_the_library_defaults():
    from hwlearn.cli.adapt_cmd import adapt  # the CLI spells its defaults out (it starts without torch)

    defaults = {p.name: p.default for p in adapt.params}
    config = AdaptConfig()
    for name in ("rounds", "ramp_rounds", "steps_per_round", "start_share", "end_share", "synthetic_share",
                 "batch_size", "lr", "layout", "match_fonts", "views", "augment", "dropout", "rare_chars", "hold_marks",
                 "mark_doubt", "beam_width", "student_steps", "amp"):
        assert defaults[name] == getattr(config, name), name


def test_train_command_dropout_is_the_library_default():
    from hwlearn.cli.train_cmd import train
    from hwlearn.recipes import FINETUNE_DROPOUT

    assert {p.name: p.default for p in train.params}["dropout"] == FINETUNE_DROPOUT


def _predictions(items):
    from hwlearn.decode import Prediction
    return [Prediction(text, conf, []) for text, conf in items]


def test_selection_takes_the_most_confident_share_and_skips_empty_readings():
    from hwlearn.charset import Charset
    from hwlearn.selftrain import select_by_rank
    preds = _predictions([("abc", 0.9), ("", 0.99), ("ba", 0.7), ("cab", 0.8), ("cc", 0.6)])
    assert select_by_rank(preds, 0.4, Charset.from_texts(["abc"])) == [0, 3]


def test_rare_characters_get_their_share_of_the_selection():
    from hwlearn.charset import Charset
    from hwlearn.selftrain import select_by_rank
    # 200 common readings, confident or not; three readings with the rare Ä, all unconfident
    preds = _predictions([("ab", 0.9 - i * 0.004) for i in range(200)] + [("Äb", 0.05), ("Äa", 0.04), ("bÄ", 0.03)])
    charset = Charset.from_texts(["abÄ"])
    plain = select_by_rank(preds, 0.5, charset)
    assert len(plain) == 102 and not any("Ä" in preds[i].text for i in plain)
    fair = select_by_rank(preds, 0.5, charset, rare_chars=True)
    assert set(fair) - set(plain) == {200, 201}  # round(0.5 x 3) = 2 of the Ä readings, the most confident
    # a common character gets no quota however unconfident its readings are
    preds = _predictions([("ab", 0.9)] * 100 + [("cd", 0.1)] * 100)
    assert select_by_rank(preds, 0.5, Charset.from_texts(["abcd"]), rare_chars=True) == list(range(100))


def test_pseudo_labels_with_a_rare_character_are_repeated_up_to_the_floor():
    from hwlearn.selftrain import RARE_CHAR_COPIES, repeat_rare
    items = [(i, "ab") for i in range(300)] + [(300, "Äb"), (301, "Xa"), (302, "Xb")]
    out = repeat_rare(items)
    assert out.count((300, "Äb")) == 4  # ceil(0.01 x 303 / 1): Ä in ~1 % of the items
    assert out.count((301, "Xa")) == out.count((302, "Xb")) == 2
    assert [x for x in out if x[1] == "ab"] == items[:300]  # common items once, in order
    lone = [(i, "ab") for i in range(5000)] + [(5000, "Ä")]
    assert repeat_rare(lone).count((5000, "Ä")) == RARE_CHAR_COPIES  # capped


class _Stop(Exception):
    pass


def test_an_interrupted_adaptation_resumes_after_its_last_finished_round(tiny_run, tmp_path, monkeypatch):
    """Stopped after round 2 of 3 and resumed, adaptation reuses rounds 1-2 and trains round 3 to the
    weights and scores of the uninterrupted run, without reading the images again but with round 3's model
    (from rounds saved without their readings: reading them again). Without --resume or --overwrite the unfinished run is
    refused; resuming with other settings is refused; overwrite starts over."""
    import torch

    from hwlearn.checkpoint import load_checkpoint
    from hwlearn.errors import HwlearnError
    from hwlearn import selftrain
    from hwlearn.inference import predict_views
    from hwlearn.recipes import adapt_folder
    from hwlearn.selftrain import READINGS

    folder = tmp_path / "images"
    write_word_images(tiny_run / "best", folder, 16, seed=21)
    config = AdaptConfig(rounds=3, ramp_rounds=2, steps_per_round=3, batch_size=8, num_workers=0, views=1,
                         student_steps=0)

    whole = adapt_folder(tiny_run / "best", folder, tmp_path / "whole", device="cpu", config=config)

    def stop_after_round_2(row):
        if row.round == 2:
            raise _Stop

    with pytest.raises(_Stop):
        adapt_folder(tiny_run / "best", folder, tmp_path / "resumed", device="cpu", config=config,
                     report=stop_after_round_2)
    assert not (tmp_path / "resumed" / "round3").exists()
    round1 = (tmp_path / "resumed" / "round1" / "last" / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(HwlearnError, match="unfinished adaptation run; use --resume"):
        adapt_folder(tiny_run / "best", folder, tmp_path / "resumed", device="cpu", config=config)
    # a copy without the saved readings, as an older hwlearn left its rounds: resumed by reading the images again
    shutil.copytree(tmp_path / "resumed", tmp_path / "unsaved")
    for path in (tmp_path / "unsaved").glob(f"round*/{READINGS}"):
        path.unlink()
    readings = []  # the reading passes over every image (the image and its copies)
    monkeypatch.setattr(selftrain, "predict_views", lambda *a, **k: readings.append(1) or predict_views(*a, **k))
    for name, passes in (("resumed", 1), ("unsaved", 3)):
        seen, readings[:] = [], []
        resumed = adapt_folder(tiny_run / "best", folder, tmp_path / name, device="cpu", config=config,
                               report=lambda row: seen.append(row.round), resume=True)
        assert seen == [0, 1, 2, 3]
        assert len(readings) == passes  # round 3's model; without the saved readings round 0's and round 2's too
        assert [r.mean_confidence for r in resumed.rounds] == [r.mean_confidence for r in whole.rounds]
        assert resumed.chosen_round == whole.chosen_round
        for part in ("round3/last", "final"):
            a = load_checkpoint(tmp_path / "whole" / part).model.state_dict()
            b = load_checkpoint(tmp_path / name / part).model.state_dict()
            assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "resumed" / "round1" / "last" / "model.safetensors").stat().st_mtime_ns == round1  # reused

    # other settings are another run: resuming it is refused, overwrite starts over (round 1 trained again, 4 steps)
    with pytest.raises(_Stop):
        adapt_folder(tiny_run / "best", folder, tmp_path / "other", device="cpu", config=config,
                     report=stop_after_round_2)
    other = AdaptConfig(rounds=2, ramp_rounds=2, steps_per_round=4, batch_size=8, num_workers=0, views=1)
    with pytest.raises(HwlearnError, match="other settings; use --overwrite"):
        adapt_folder(tiny_run / "best", folder, tmp_path / "other", device="cpu", config=other, resume=True)
    adapt_folder(tiny_run / "best", folder, tmp_path / "other", device="cpu", config=other, overwrite=True)
    assert json.loads((tmp_path / "other" / "round1" / "last" / "meta.json").read_text())["training"]["step"] == 4


def test_a_student_starts_from_the_pretrained_weights_and_competes_for_the_final_model(tiny_run, tmp_path,
                                                                                         monkeypatch):
    """With student_steps, a fresh model is trained after the rounds from the pretrained weights (not the last
    round's) on the last round's pseudo-labels, into OUT/student; the final model is the most confident of the
    rounds and it. Adding a student to a finished run reuses its rounds; other student steps train it again."""
    import torch

    from hwlearn import selftrain
    from hwlearn.checkpoint import load_checkpoint
    from hwlearn.recipes import adapt_folder

    folder = tmp_path / "images"
    write_word_images(tiny_run / "best", folder, 16, seed=22)
    config = AdaptConfig(rounds=2, ramp_rounds=2, steps_per_round=3, batch_size=8, num_workers=0, views=1,
                         student_steps=0)
    adapt_folder(tiny_run / "best", folder, tmp_path / "run", device="cpu", config=config)
    round2 = (tmp_path / "run" / "round2" / "last" / "model.safetensors").stat().st_mtime_ns

    started = {}  # phase -> the weights its training started from

    class RecordingTrainer(selftrain.Trainer):
        def fit(self):
            started[self.config.phase] = {k: v.clone() for k, v in self.model.state_dict().items()}
            return super().fit()

    monkeypatch.setattr(selftrain, "Trainer", RecordingTrainer)
    with_student = AdaptConfig(**{**config.__dict__, "student_steps": 4})
    result = adapt_folder(tiny_run / "best", folder, tmp_path / "run", device="cpu", config=with_student,
                          resume=True)
    assert list(started) == ["adapt-student"]  # the rounds were reused
    assert (tmp_path / "run" / "round2" / "last" / "model.safetensors").stat().st_mtime_ns == round2
    pretrained = load_checkpoint(tiny_run / "best").model.state_dict()
    assert all(torch.equal(started["adapt-student"][k], pretrained[k]) for k in pretrained)
    student = result.rounds[-1]
    assert (student.round, student.student, student.name) == (3, True, "student")
    meta = json.loads((tmp_path / "run" / "student" / "last" / "meta.json").read_text())
    assert meta["training"] == {**meta["training"], "phase": "adapt-student", "step": 4}
    labels = (tmp_path / "run" / "student" / selftrain.PSEUDO_LABELS).read_text().splitlines()[1:]
    round2_labels = (tmp_path / "run" / "round2" / selftrain.PSEUDO_LABELS).read_text().splitlines()[1:]
    assert len(labels) == len(round2_labels) == 16
    best = max(result.rounds, key=lambda r: (r.mean_confidence, -r.round))
    assert result.chosen_round == best.round and result.chosen is best
    summary = json.loads((tmp_path / "run" / "final" / "meta.json").read_text())["adapt_summary"]
    assert summary["chosen"] == best.name

    started.clear()  # the same student again: nothing trained; another number of steps: the student only
    adapt_folder(tiny_run / "best", folder, tmp_path / "run", device="cpu", config=with_student, resume=True)
    assert started == {}
    adapt_folder(tiny_run / "best", folder, tmp_path / "run", device="cpu", resume=True,
                 config=AdaptConfig(**{**config.__dict__, "student_steps": 2}))
    assert list(started) == ["adapt-student"]
    assert json.loads((tmp_path / "run" / "student" / "last" / "meta.json").read_text())["training"]["step"] == 2


def test_the_student_gets_the_steps_that_fit_in_the_time_left_at_the_rounds_pace():
    from hwlearn.selftrain import RoundReport, student_steps_in_time

    def row(r, training=None, labeling=5.0):
        return RoundReport(round=r, labeled=10, selected=5, share=0.5, mean_confidence=0.5, selected_confidence=0.5,
                           seconds={**({"training": training} if training is not None else {}), "labeling": labeling})

    config = AdaptConfig(rounds=2, steps_per_round=100, student_steps=800)
    rounds = [row(0), row(1, 10.0), row(2, 30.0, labeling=7.0)]  # 0.2 s a step; the student's reading 7 s
    assert student_steps_in_time(config, rounds, 1000.0) == 800  # all fit
    assert student_steps_in_time(config, rounds, 107.0) == 500
    assert student_steps_in_time(config, rounds, 27.0) == 100  # one round's steps: the least a student gets
    assert student_steps_in_time(config, rounds, 26.9) == 0
    assert student_steps_in_time(config, rounds, -50.0) == 0
    assert student_steps_in_time(config, [row(0)], 1.0) == 800  # no round trained: no pace to go by


def test_a_time_limit_cuts_the_student_and_a_resumed_run_keeps_the_cut_one(tiny_run, tmp_path, monkeypatch):
    """With a time limit the student trains the steps that fit (here 2 of 4), records both counts, and a resumed
    run with the same settings reuses it (one without a limit trains it again); with no time left it is left out
    and the rounds' model is final."""
    from hwlearn import selftrain
    from hwlearn.recipes import adapt_folder

    folder = tmp_path / "images"
    write_word_images(tiny_run / "best", folder, 12, seed=23)
    config = AdaptConfig(rounds=1, steps_per_round=2, batch_size=8, num_workers=0, views=0, font_steps=0,
                         student_steps=4, time_limit=3600.0)
    monkeypatch.setattr(selftrain, "student_steps_in_time", lambda config, rounds, left: 2)
    adapt_folder(tiny_run / "best", folder, tmp_path / "run", device="cpu", config=config)
    meta = json.loads((tmp_path / "run" / "student" / "last" / "meta.json").read_text())
    assert meta["training"]["step"] == 2
    assert (meta["adapt"]["student_steps"], meta["adapt"]["student_steps_asked"]) == (2, 4)
    summary = json.loads((tmp_path / "run" / "final" / "meta.json").read_text())["adapt_summary"]
    assert summary["student_steps"] == {"asked": 4, "trained": 2, "time_limit": 3600.0}

    trained = []
    monkeypatch.setattr(selftrain.Trainer, "fit", lambda self: trained.append(self.config.phase))
    adapt_folder(tiny_run / "best", folder, tmp_path / "run", device="cpu", config=config, resume=True)
    assert trained == []  # the cut student counts as the one asked for
    adapt_folder(tiny_run / "best", folder, tmp_path / "run", device="cpu", resume=True,
                 config=AdaptConfig(**{**config.__dict__, "time_limit": None}))
    assert trained == ["adapt-student"]  # without a limit the student is trained again, for all its steps

    monkeypatch.undo()
    result = adapt_folder(tiny_run / "best", folder, tmp_path / "none", device="cpu",
                          config=AdaptConfig(**{**config.__dict__, "time_limit": 1e-6}))
    summary = json.loads((tmp_path / "none" / "final" / "meta.json").read_text())["adapt_summary"]
    assert summary["student_steps"] == {"asked": 4, "trained": 0, "time_limit": 1e-6, "left_out_by": "time limit"}
    assert result.student_steps == summary["student_steps"]
    assert [r["round"] for r in summary["rounds"]] == [0, 1] and not (tmp_path / "none" / "student").exists()


def test_a_round_starts_only_when_it_fits_at_the_pace_of_the_rounds_before():
    from hwlearn.selftrain import RoundReport, round_fits_in_time

    def row(r, student=False, **seconds):
        return RoundReport(round=r, labeled=10, selected=5, share=0.5, mean_confidence=0.5, selected_confidence=0.5,
                           seconds=seconds, student=student)

    assert round_fits_in_time([row(0, labeling=500.0)], -1.0)  # no round trained yet: the first always runs
    rounds = [row(0, labeling=500.0), row(1, training=10.0, labeling=5.0),
              row(2, marks=3.0, training=30.0, labeling=7.0, report=5.0)]  # 15 s and 45 s: the slowest, 45 s
    assert round_fits_in_time(rounds, 45.0) and not round_fits_in_time(rounds, 44.9)
    assert round_fits_in_time(rounds + [row(3, student=True, training=900.0)], 45.0)  # (the student is not a round)


def test_a_time_limit_leaves_out_the_rounds_that_do_not_fit_and_a_resumed_run_goes_on(tiny_run, tmp_path, capsys):
    """With no time left after the first round, the later rounds and the student are left out, the first round's
    model is final (or round 0's), and the summary says how many rounds ran; resumed without the limit, the run
    goes on with the rounds left out, as an interrupted one would."""
    from hwlearn.recipes import adapt_folder

    folder = tmp_path / "images"
    write_word_images(tiny_run / "best", folder, 12, seed=29)
    config = AdaptConfig(rounds=3, steps_per_round=2, batch_size=8, num_workers=0, views=0, font_steps=0,
                         student_steps=2, time_limit=1e-6)
    result = adapt_folder(tiny_run / "best", folder, tmp_path / "run", device="cpu", config=config)
    assert [r.round for r in result.rounds] == [0, 1] and result.chosen_round in (0, 1)
    assert result.rounds_trained == {"asked": 3, "trained": 1, "left_out_by": "time limit"}
    assert not (tmp_path / "run" / "round2").exists() and not (tmp_path / "run" / "student").exists()
    summary = json.loads((tmp_path / "run" / "final" / "meta.json").read_text())["adapt_summary"]
    assert summary["rounds_trained"] == {"asked": 3, "trained": 1, "left_out_by": "time limit"}
    assert summary["student_steps"]["trained"] == 0 and summary["student_steps"]["left_out_by"] == "time limit"
    assert "rounds 2-3 and the student left out" in " ".join(capsys.readouterr().err.split())

    result = adapt_folder(tiny_run / "best", folder, tmp_path / "run", device="cpu", resume=True,
                          config=AdaptConfig(**{**config.__dict__, "time_limit": None}))
    assert [(r.round, r.student) for r in result.rounds] == [(0, False), (1, False), (2, False), (3, False),
                                                            (4, True)]
    assert result.rounds_trained == {"asked": 3, "trained": 3}
    assert "resuming: round 1 was finished" in " ".join(capsys.readouterr().err.split())


def test_the_pseudo_labels_beam_is_wider_with_a_lexicon(tiny_run, tmp_path, tiny_assets):
    """Unless set, the pseudo-labels' search keeps LEXICON_BEAM prefixes with a lexicon (its words' first
    letters) and CHARLM_BEAM without; each round records the beam it used, and keeps every image's reading."""
    from hwlearn.recipes import adapt_folder
    from hwlearn.selftrain import CHARLM_BEAM, LEXICON_BEAM, READINGS

    assert LEXICON_BEAM > CHARLM_BEAM
    folder = tmp_path / "images"
    write_word_images(tiny_run / "best", folder, 8, seed=3)
    config = AdaptConfig(rounds=1, steps_per_round=1, batch_size=4, num_workers=0, views=0, match_fonts=0)
    for name, lexicon, beam in (("lexicon", tiny_assets[1], LEXICON_BEAM), ("charlm", None, CHARLM_BEAM)):
        adapt_folder(tiny_run / "best", folder, tmp_path / name, device="cpu", config=config, lexicon_source=lexicon)
        meta = json.loads((tmp_path / name / "round1" / "last" / "meta.json").read_text())
        assert meta["adapt"]["beam_width"] == beam, name
        for r in (0, 1):
            assert len(json.loads((tmp_path / name / f"round{r}" / READINGS).read_text())["readings"]) == 8


def test_mark_shares_are_held_by_the_readings_that_gain_or_lose_least():
    import numpy as np

    from hwlearn.charset import Charset
    from hwlearn.decode import Prediction
    from hwlearn.selftrain import HELD_MARKS, hold_mark_shares, mark_changes, mark_shares

    charset = Charset("abdsy,.")
    texts = ["day", "bay", "say", "ab", "ba.", "sa.", "ad."]
    preds = [Prediction(t, 0.5 + i / 100, charset.encode(t)) for i, t in enumerate(texts)]
    gains = np.full((len(texts), len(HELD_MARKS)), -np.inf)
    comma, stop = HELD_MARKS.index(","), HELD_MARKS.index(".")
    gains[:4, comma] = [-1.0, 2.0, -3.0, 0.5]  # adding a comma: "bay" gains most, then "ab"
    gains[4:, stop] = [0.5, -4.0, -2.0]  # what keeping the full stop gains: "sa." is likelier without it
    target = {",": 2 / 7, ".": 2 / 7}
    held, moved = hold_mark_shares(preds, mark_changes(texts, target), gains, charset)
    assert [p.text for p in held] == ["day", "bay,", "say", "ab,", "ba.", "sa", "ad."]
    assert moved == {",": 2, ".": -1, ";": 0, ":": 0, "-": 0}
    assert mark_shares([p.text for p in held])[","] == pytest.approx(2 / 7)
    assert held[1].ids == charset.encode("bay,") and held[1].confidence == preds[1].confidence
    assert mark_changes(texts, mark_shares(texts)) == dict.fromkeys(HELD_MARKS, 0)  # at the target: nothing to move
    assert hold_mark_shares(preds, mark_changes(texts, mark_shares(texts)), gains, charset)[0] == preds


def test_mark_gains_are_the_log_probability_a_mark_adds():
    import torch

    from hwlearn.charset import Charset
    from hwlearn.selftrain import HELD_MARKS, mark_gains

    charset = Charset("ab,.")

    class Frames(torch.nn.Module):  # 4 frames: "a" sure, then "," or blank equally, then blank
        def forward(self, images, widths):
            p = torch.full((4, len(widths), charset.num_classes), 1e-6)
            p[0, :, charset.encode("a")[0]] = 1.0
            p[1, :, charset.encode(",")[0]] = p[1, :, 0] = 0.5
            p[2:, :, 0] = 1.0
            return (p / p.sum(-1, keepdim=True)).log(), torch.full((len(widths),), 4)

    inputs = [(torch.zeros(1, 8, 16), None)] * 3
    gains = mark_gains(Frames(), inputs, ["a", "a,", "a."], charset, "cpu")
    comma, stop = HELD_MARKS.index(","), HELD_MARKS.index(".")
    assert abs(gains[0, comma]) < 0.01 and gains[0, stop] < -10  # "a," as likely as "a"; "a." not
    assert gains[1, comma] == pytest.approx(gains[0, comma], abs=1e-4)  # what keeping the comma gains
    assert gains[2, stop] == pytest.approx(gains[0, stop], abs=1e-4)
    assert np.isneginf(gains[1, stop]) and np.isneginf(gains[2, comma])  # "a,." is not a candidate
    assert np.isneginf(gains[:, HELD_MARKS.index(";")]).all()  # not in the charset
    only_commas = mark_gains(Frames(), inputs, ["a", "a,", "a."], charset, "cpu", marks=[","])
    assert np.array_equal(only_commas[:, comma], gains[:, comma]) and np.isneginf(only_commas[:, stop]).all()


def test_bare_readings_a_mark_would_read_nearly_as_well_are_doubted():
    import torch

    from hwlearn.charset import Charset
    from hwlearn.decode import Prediction
    from hwlearn.selftrain import HELD_MARKS, doubting_marks, mark_doubted

    charset = Charset("ab,.")

    class Frames(torch.nn.Module):  # "a" sure, then "," at 0.1 against blank at 0.9: log P(a,) - log P(a) = -2.2
        def forward(self, images, widths):
            p = torch.full((4, len(widths), charset.num_classes), 1e-6)
            p[0, :, charset.encode("a")[0]] = 1.0
            p[1, :, charset.encode(",")[0]], p[1, :, 0] = 0.1, 0.9
            p[2:, :, 0] = 1.0
            return (p / p.sum(-1, keepdim=True)).log(), torch.full((len(widths),), 4)

    texts = ["a", "a,", "a", "", "a."]
    preds = [Prediction(t, 0.5, charset.encode(t)) for t in texts]
    inputs = [(torch.zeros(1, 8, 16), None)] * len(texts)
    assert mark_doubted(Frames(), inputs, preds, [0, 1, 3, 4], charset, "cpu", doubt=3.0) == [0]  # (2: not selected)
    assert mark_doubted(Frames(), inputs, preds, [0, 1, 2, 3, 4], charset, "cpu", doubt=3.0) == [0, 2]
    assert mark_doubted(Frames(), inputs, preds, [0, 1, 2, 3, 4], charset, "cpu", doubt=2.0) == []  # -2.2 < -2
    assert mark_doubted(Frames(), inputs, preds, [0, 2], charset, "cpu", doubt=0.0) == []  # 0: off
    assert mark_doubted(Frames(), inputs, preds, [0, 2], charset, "cpu", doubt=3.0, marks=["."]) == []
    assert mark_doubted(Frames(), inputs, preds, [0, 2], charset, "cpu", doubt=3.0, marks=[]) == []
    assert doubting_marks({",": 0.05, ".": 0.0011, "-": 0.01}) == [",", "-"]  # (DHSD's "." at 0.11 %: not one)
    # gains read before (holding the marks' shares) are reused for the readings whose text they were read for
    read = np.full((len(texts), len(HELD_MARKS)), -np.inf)
    read[0, 0], read[2, 0] = -9.0, -1.0
    assert mark_doubted(Frames(), inputs, preds, [0, 1, 2], charset, "cpu", doubt=3.0,
                        read=(["a", "a,", "a"], read)) == [2]  # 0: its -9 reused; 2: its -1
    assert mark_doubted(Frames(), inputs, preds, [0, 1, 2], charset, "cpu", doubt=3.0,
                        read=(["a.", "a,", "a"], read)) == [0, 2]  # 0 was "a." when read: read again (-2.2)


def test_doubted_readings_leave_the_selection_and_their_time_counts_as_the_rounds(tiny_run, tmp_path, monkeypatch):
    """With AdaptConfig.mark_doubt, what mark_doubted returns is not trained on (the round's pseudo-label file and
    meta say so), the time it takes counts in the round's ``marks`` seconds (round_fits_in_time reads them), and
    the setting enters the resume key only when on."""
    import hwlearn.selftrain as selftrain
    from hwlearn.layout import Layout
    from hwlearn.recipes import adapt_folder

    folder = tmp_path / "images"
    write_word_images(tiny_run / "best", folder, 8, seed=5)
    asked = []

    def first_two(model, inputs, preds, selected, charset, device, doubt, batch_size=64, read=None, marks=()):
        asked.append((doubt, len(selected)))
        return list(selected)[:2] if doubt > 0 else []

    monkeypatch.setattr(selftrain, "mark_doubted", first_two)
    monkeypatch.setattr(selftrain, "DOUBTING_MARK_SHARE", 0.0)  # (the tiny model's readings may end in no mark)
    config = AdaptConfig(rounds=1, steps_per_round=1, batch_size=4, num_workers=0, views=0, match_fonts=0,
                         student_steps=0, start_share=1.0, end_share=1.0, mark_doubt=4.0)
    result = adapt_folder(tiny_run / "best", folder, tmp_path / "run", device="cpu", config=config)
    [(doubt, selected_before)] = asked
    meta = json.loads((tmp_path / "run" / "round1" / "last" / "meta.json").read_text())["adapt"]
    assert doubt == meta["mark_doubt"] == 4.0 and meta["mark_doubted"] == 2 and selected_before > 2
    assert meta["selected"] == selected_before - 2
    lines = (tmp_path / "run" / "round1" / selftrain.PSEUDO_LABELS).read_text().splitlines()[1:]
    assert sum(line.split("\t")[3] == "1" for line in lines) == meta["selected"] == result.rounds[1].selected
    assert "marks" in result.rounds[1].seconds

    # a model that doubts every reading it selected (barely trained) leaves none out, rather than train on nothing
    monkeypatch.setattr(selftrain, "mark_doubted", lambda *args, **kwargs: list(args[3]))
    result = adapt_folder(tiny_run / "best", folder, tmp_path / "all", device="cpu", config=config)
    meta = json.loads((tmp_path / "all" / "round1" / "last" / "meta.json").read_text())["adapt"]
    assert meta["mark_doubted"] == 0 and meta["selected"] == selected_before == result.rounds[1].selected
    seen = []
    monkeypatch.setattr(selftrain, "_digest", lambda parts: seen.append(parts) or "key")
    for doubt in (0.0, 5.0):
        selftrain.resume_key(tiny_run / "best", {}, [], AdaptConfig(mark_doubt=doubt), "greedy", None, None,
                             Layout(), [])
    assert "mark_doubt" not in seen[0]["config"] and seen[1]["config"]["mark_doubt"] == 5.0


def test_adaptation_trains_in_the_precision_asked_and_keys_it_only_when_asked(tiny_run, tmp_path, monkeypatch):
    """AdaptConfig.amp reaches every training stage (recorded in its checkpoint); "auto", the default, stays out of
    the resume key, so runs from before the field resume, and any other value enters it."""
    import hwlearn.selftrain as selftrain
    from hwlearn.layout import Layout
    from hwlearn.recipes import adapt_folder

    folder = tmp_path / "images"
    write_word_images(tiny_run / "best", folder, 8, seed=4)
    for amp, precision in (("off", "float32"), ("bf16", "bfloat16")):
        config = AdaptConfig(rounds=1, steps_per_round=2, batch_size=4, num_workers=0, views=0, match_fonts=0,
                             student_steps=2, amp=amp)
        adapt_folder(tiny_run / "best", folder, tmp_path / amp, device="cpu", config=config)
        for stage in ("round1", "student"):
            meta = json.loads((tmp_path / amp / stage / "last" / "meta.json").read_text())
            assert meta["training"]["precision"] == precision, (amp, stage)
    seen = []
    monkeypatch.setattr(selftrain, "_digest", lambda parts: seen.append(parts) or "key")
    for amp in ("auto", "off"):
        selftrain.resume_key(tiny_run / "best", {}, [], AdaptConfig(amp=amp), "greedy", None, None, Layout(), [])
    assert "amp" not in seen[0]["config"] and seen[1]["config"]["amp"] == "off"
