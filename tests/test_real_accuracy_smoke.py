"""benchmarks/real_accuracy.py end to end on a tiny synthetic "dataset" (train.tsv / test.tsv).

The pretrained model is the tiny test model after a few steps (it still reads nothing); adaptation
labels with a lexicon of the tiny world's words, so its pseudo-labels are never empty and every
round trains."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from hwlearn.errors import HwlearnError
from hwlearn.synth import build_synthetic, write_dataset

from conftest import TINY_WORDS, load_benchmark, tiny_pretrain

ra = load_benchmark("real_accuracy")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tiny_assets) -> Path:
    """24 rendered words of the tiny world: 16 in train.tsv, 8 in test.tsv (relative paths)."""
    fonts, corpus = tiny_assets
    words = build_synthetic(fonts, corpus, height=32, style="clean", seed=4242, length=24,
                            punct_share=0.0, number_share=0.0, date_share=0.0, case_share=0.0)
    root = tmp_path_factory.mktemp("tiny_dataset") / "tinyset"
    write_dataset(root, words, workers=0, progress=False)
    lines = (root / "labels.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "train.tsv").write_text("".join(lines[:16]), encoding="utf-8")
    (root / "test.tsv").write_text("".join(lines[16:]), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def barely_trained(tmp_path_factory, tiny_assets) -> Path:
    out = tmp_path_factory.mktemp("barely_trained") / "run"
    tiny_pretrain(out, tiny_assets, steps=4, val_every=4)
    return out / "best"


def test_runs_every_step_then_reuses_them(barely_trained, dataset, tmp_path):
    run_dir, out, lexicon = tmp_path / "run", tmp_path / "result.json", tmp_path / "words.txt"
    lexicon.write_text("\n".join(sorted(set(TINY_WORDS.split()))), encoding="utf-8")
    argv = [dataset, "--profile", "smoke", "--skip-pretrain", barely_trained, "--out-dir", run_dir,
            "--json", out, "--device", "cpu", "--lexicon", lexicon, "--adapt-lexicon",
            "--set", "adapt_steps=3", "--set", "finetune_steps=4", "--speed-check-steps", "2",
            "--set", "budget_minutes=600"]
    first = ra.main(argv)

    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved["results"] == first["results"]
    assert set(saved["results"]) == {"synthetic_only", "label_free", "label_free_train_test", "supervised"}
    assert saved["dataset"]["train_images"] == 16 and saved["dataset"]["test_images"] == 8
    assert saved["profile"]["name"] == "smoke" and saved["profile"]["finetune_steps"] == 4
    assert saved["device"] == "cpu" and saved["commit"] and saved["machine"]["cores"] >= 1
    assert "commit" not in saved["machine"]  # (HEAD at the end of the run, not the run's: see saved["commit"])
    assert "--skip-pretrain" in saved["command"]
    # the host's speed, measured on the profile's model before the run
    speed = saved["host_speed"]
    assert speed["preset"] == "small" and speed["batch_size"] == 8 and speed["steps"] == 2, speed
    assert speed["train_images_per_s"] > 0 and speed["recognize_words_per_s"] > 0
    # every model was scored on the 8 test images, greedy, with the lexicon and with the character
    # model of the pretraining corpus (--char-lm auto)
    for system, res in saved["results"].items():
        assert set(res) == {"greedy", "lexicon", "charlm"}, system
        assert res["greedy"]["n"] == res["lexicon"]["n"] == res["charlm"]["n"] == 8, system
        # (a 4-step model's posteriors are flat: the character model's per-character bonus then makes
        # long readings, CER above 1, so only the lexicon's is bounded here)
        assert 0.0 <= res["lexicon"]["cer"] <= 1.0 and res["charlm"]["cer"] >= 0.0, system
    assert (run_dir / "eval" / "supervised.csv").exists()
    # adaptation saw the train images only, resp. train + test, and trained at least one round
    assert saved["steps"]["adapt_train"]["images"] == 16
    assert saved["steps"]["adapt_train_test"]["images"] == 24
    rounds = saved["adaptation"]["label_free"]["rounds"]
    assert len(rounds) == 3 and rounds[1]["selected"] > 0 and "cer" in rounds[1]["val"]  # round 0, 1, the student
    assert rounds[2]["student"] and (run_dir / "adapt_train" / "student" / "last" / "meta.json").exists()
    assert (run_dir / "adapt_train" / "round1" / "last" / "meta.json").exists()
    assert (run_dir / "finetune" / "last" / "meta.json").exists()
    # the supervised model reads the images in the layout adaptation chose
    adapted_layout = json.loads((run_dir / "adapt_train" / "final" / "meta.json").read_text())["preprocessing"]["layout"]
    finetuned = json.loads((run_dir / "finetune" / "last" / "meta.json").read_text())
    assert finetuned["preprocessing"]["layout"] == adapted_layout
    assert saved["steps"]["finetune"]["layout"] == adapted_layout["kind"]
    # gap_closed follows its definition
    r = saved["results"]
    for key in ("label_free", "label_free_train_test"):
        s, lf, sup = (r[k]["greedy"]["cer"] for k in ("synthetic_only", key, "supervised"))
        expected = round((s - lf) / (s - sup), 4) if s - sup > 0 else None
        assert saved["gap_closed"][key]["greedy"]["cer"] == expected
    assert not any(step["reused"] for name, step in saved["steps"].items() if name != "pretrain")
    # the budget: the train + test adaptation runs last and gets what is left of it as its time limit (here all of
    # its student's steps fit); the train adaptation has none
    names = list(saved["steps"])
    assert names.index("finetune") < names.index("adapt_train_test")
    students = {k: a["student_steps"] for k, a in saved["adaptation"].items()}
    assert students["label_free"] == {"asked": 12, "trained": 12, "time_limit": None}
    assert students["label_free_train_test"]["trained"] == 12
    assert 0 < 36000 - ra.BUDGET_RESERVE_S - students["label_free_train_test"]["time_limit"] < saved["wall_s"]

    # a second run reuses every step and reports the same numbers
    second = ra.main(argv)
    assert all(step["reused"] for step in second["steps"].values())
    assert second["results"] == first["results"]
    assert second["steps"]["finetune"]["wall_s"] == first["steps"]["finetune"]["wall_s"]

    # a run directory made with other settings is refused
    with pytest.raises(SystemExit) as exc:
        ra.main(argv[:-1] + ["finetune_steps=5"])
    assert exc.value.code == 2


def test_gap_closed_is_none_when_supervision_does_not_help():
    def res(cer):
        return {"greedy": {"cer": cer, "wer": cer, "cer_nocase": cer, "wer_nocase": cer}}

    results = {"synthetic_only": res(0.5), "label_free": res(0.4), "supervised": res(0.3)}
    assert ra.gap_closed(results, "label_free")["greedy"]["cer"] == pytest.approx(0.5)
    results["supervised"] = res(0.6)
    assert ra.gap_closed(results, "label_free")["greedy"]["cer"] is None


def test_profile_overrides_are_typed_and_checked():
    p = ra.with_overrides(ra.PROFILES["cpu"], ["pretrain_steps=123", "adapt_lr=0.001", "preset=base"])
    assert (p.pretrain_steps, p.adapt_lr, p.preset) == (123, 0.001, "base")
    with pytest.raises(HwlearnError, match="KEY=VALUE"):
        ra.with_overrides(p, ["no_such_setting=1"])
    with pytest.raises(HwlearnError, match="not a valid int"):
        ra.with_overrides(p, ["pretrain_steps=many"])
    assert ra.with_overrides(p, ["adapt_rare_chars=1"]).adapt_rare_chars is True
    assert ra.with_overrides(p, ["adapt_rare_chars=false"]).adapt_rare_chars is False  # not bool("false")
    with pytest.raises(HwlearnError, match="not a valid bool"):
        ra.with_overrides(p, ["adapt_rare_chars=maybe"])
    assert ra.with_overrides(p, ["adapt_beam_width=10"]).adapt_beam_width == 10  # a setting that may be None
    assert ra.with_overrides(p, ["adapt_beam_width=10", "adapt_beam_width=None"]).adapt_beam_width is None
    with pytest.raises(HwlearnError, match="not a valid int"):
        ra.with_overrides(p, ["adapt_beam_width=wide"])


def test_a_setting_added_since_a_run_counts_as_its_default(tmp_path):
    settings = {"dataset": "d", **{k: v for k, v in ra.asdict(ra.PROFILES["cpu"]).items() if k != "adapt_end_share"}}
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    full = {**settings, "adapt_end_share": ra.PROFILES["cpu"].adapt_end_share}
    ra.check_settings(tmp_path, full)  # the older run used the default: accepted
    with pytest.raises(HwlearnError, match="adapt_end_share"):
        ra.check_settings(tmp_path, {**full, "adapt_end_share": 1.0})


def test_a_step_reused_from_other_code_is_named(tmp_path, capsys):
    old, now = {"commit": "a" * 40, "dirty": False}, {"commit": "b" * 40, "dirty": False}
    ra.StepLog(tmp_path / "steps.json", old).done("adapt_train", 1.0, images=3)
    log = ra.StepLog(tmp_path / "steps.json", now)
    log.reused("adapt_train", tmp_path / "final")
    assert "adapt_train: made by commit aaaaaaaaaa, not by this code" in capsys.readouterr().err
    assert log.steps["adapt_train"]["code"] == old and log.steps["adapt_train"]["images"] == 3
    log.done("finetune", 2.0)
    log.reused("pretrain", tmp_path / "elsewhere", in_run=False, skip_pretrain=True)  # not the run's own output
    ra.StepLog(tmp_path / "steps.json", now).reused("finetune", tmp_path / "last")  # made by this code
    assert "not by this code" not in capsys.readouterr().err
    log.done("adapt_train", 1.0)
    ra.StepLog(tmp_path / "steps.json", {**now, "dirty": True}).reused("adapt_train", tmp_path / "final")
    assert "made by commit bbbbbbbbbb, not by this code" in capsys.readouterr().err  # (uncommitted code now)


def test_systems_limits_the_run_to_the_models_asked_for(barely_trained, dataset, tmp_path):
    run_dir = tmp_path / "run"
    records = set((ra.REPO / "benchmarks" / "results").glob("*"))
    saved = ra.main([dataset, "--profile", "smoke", "--skip-pretrain", barely_trained, "--out-dir", run_dir,
                     "--device", "cpu", "--systems", "label_free", "--set", "adapt_steps=2",
                     "--speed-check-steps", "0"])
    # a partial run is no benchmark record: without --json its result stays in its run directory
    assert json.loads((run_dir / "real_accuracy.json").read_text(encoding="utf-8"))["results"] == saved["results"]
    assert set((ra.REPO / "benchmarks" / "results").glob("*")) == records
    assert set(saved["results"]) == {"synthetic_only", "label_free"}
    assert saved["systems"] == ["label_free"] and saved["gap_closed"] == {}
    assert saved["host_speed"] is None  # --speed-check-steps 0
    assert set(saved["adaptation"]) == {"label_free"}
    assert not (run_dir / "finetune").exists() and not (run_dir / "adapt_train_test").exists()
    with pytest.raises(SystemExit) as exc:
        ra.main([dataset, "--profile", "smoke", "--systems", "label_free,nonsense"])
    assert exc.value.code == 2


def heldout_dataset(root: Path, source: Path) -> Path:
    """The tiny dataset's 16 train words filed under four writers' folders (``w2``, ``w9``, ``w10``, ``w11``, four
    each), their images copied; no test.tsv: a --heldout run must not need one."""
    lines = (source / "train.tsv").read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines):
        rel, text = line.split("\t")
        image = Path(f"images/w{(2, 9, 10, 11)[i // 4]}/{Path(rel).name}")
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / rel, root / image)
        rows.append(f"{image.as_posix()}\t{text}\n")
    (root / "train.tsv").write_text("".join(rows), encoding="utf-8")
    return root


def test_heldout_decides_on_the_train_split_alone(barely_trained, dataset, tmp_path):
    root = heldout_dataset(tmp_path / "byw", dataset)
    adapt, read, record = ra.heldout_split(root, r"w(\d+)/")
    # writers in numeric order (w9 before w10), the first half adapted to, the rest read
    assert record == {"pattern": r"w(\d+)/", "adapt_groups": ["2", "9"], "read_groups": ["10", "11"]}
    assert [p.parent.name for p, _ in adapt] == ["w2"] * 4 + ["w9"] * 4
    assert [p.parent.name for p, _ in read] == ["w10"] * 4 + ["w11"] * 4
    for pattern, problem in ((r"w\d+/", "needs a (group)"), (r"x(\d+)", "has no group"), (r"(w)", "finds 1 group"),
                             (r"w(\d+", "not a regular expression")):
        with pytest.raises(HwlearnError, match=re.escape(problem)):
            ra.heldout_split(root, pattern)

    run_dir = tmp_path / "run"
    saved = ra.main([root, "--profile", "smoke", "--skip-pretrain", barely_trained, "--out-dir", run_dir,
                     "--device", "cpu", "--systems", "label_free", "--set", "adapt_steps=2",
                     "--set", "adapt_student_steps=0", "--speed-check-steps", "0", "--heldout", r"w(\d+)/"])
    assert saved["steps"]["adapt_train"]["images"] == 8
    assert saved["results"]["label_free"]["greedy"]["n"] == 8
    assert saved["dataset"]["heldout"]["read_groups"] == ["10", "11"]
    scored = (run_dir / "data" / "test.tsv").read_text(encoding="utf-8")
    assert scored.count("/w10/") == scored.count("/w11/") == 4 and "/w2/" not in scored
    assert json.loads((run_dir / "real_accuracy.json").read_text(encoding="utf-8"))["results"] == saved["results"]
    # the run directory remembers it was a held-out run
    with pytest.raises(SystemExit):
        ra.main([root, "--profile", "smoke", "--skip-pretrain", barely_trained, "--out-dir", run_dir,
                 "--device", "cpu", "--systems", "label_free", "--set", "adapt_steps=2",
                 "--set", "adapt_student_steps=0", "--speed-check-steps", "0"])


def test_a_spent_budget_leaves_the_last_adaptations_later_rounds_and_student_out(barely_trained, dataset, tmp_path,
                                                                                  capsys):
    run_dir = tmp_path / "run"
    result = ra.main([dataset, "--profile", "smoke", "--skip-pretrain", barely_trained, "--out-dir", run_dir,
                      "--device", "cpu", "--systems", "label_free_train_test", "--set", "adapt_steps=2",
                      "--set", "adapt_rounds=2", "--set", "budget_minutes=0.001", "--speed-check-steps", "0"])
    adaptation = result["adaptation"]["label_free_train_test"]
    assert adaptation["student_steps"] == {"asked": 16, "trained": 0, "time_limit": 1e-3, "left_out_by": "time limit"}
    assert adaptation["rounds_trained"] == {"asked": 2, "trained": 1, "left_out_by": "time limit"}  # the first round always runs
    assert [r["round"] for r in adaptation["rounds"]] == [0, 1]
    out = " ".join(capsys.readouterr().out.split())  # (the table wraps long lines)
    assert "rounds: label-free (train+test images) 1 of 2; student steps: label-free (train+test images) 0 of 16" in out


def test_cpu_full_profile_is_hwlearn_adapts_defaults():
    """cpu-full is documented as hwlearn adapt's defaults: it follows AdaptConfig; cpu is the
    budgeted configuration: a shorter adaptation and fine-tuning (its pretraining may be longer:
    that is where its minutes pay most, benchmarks/EXPERIMENTS.md)."""
    from dataclasses import fields

    from hwlearn.selftrain import AdaptConfig

    full, budget, defaults = ra.PROFILES["cpu-full"], ra.PROFILES["cpu"], AdaptConfig()
    adapt_settings = [f.name for f in fields(ra.Profile) if f.name.startswith("adapt_")]
    assert adapt_settings
    for name in adapt_settings:
        key = {"adapt_steps": "steps_per_round"}.get(name, name.removeprefix("adapt_"))
        assert getattr(full, name) == getattr(defaults, key), name
    assert budget.adapt_rounds * budget.adapt_steps < full.adapt_rounds * full.adapt_steps
    assert budget.adapt_views < full.adapt_views and budget.finetune_steps < full.finetune_steps


def test_the_train_test_adaptation_takes_the_train_adaptations_fonts_and_stage(tmp_path):
    """(What hwlearn adapt does with them: tests/test_fontmatch.py.)"""
    train = tmp_path / "adapt_train"
    assert ra.earlier_adaptation(tmp_path, "adapt_train_test") is None  # no train adaptation (--systems)
    (train / "final").mkdir(parents=True)
    (train / "final" / "meta.json").write_text('{"adapt_summary": {"fonts_used": []}}', encoding="utf-8")
    assert ra.earlier_adaptation(tmp_path, "adapt_train_test") is None  # it matched no fonts
    (train / "fonts" / "last").mkdir(parents=True)
    (train / "fonts" / "last" / "meta.json").write_text('{"adapt": {"fonts_used": ["A"]}}', encoding="utf-8")
    assert ra.earlier_adaptation(tmp_path, "adapt_train_test") == train
    assert ra.earlier_adaptation(tmp_path, "adapt_train") is None
