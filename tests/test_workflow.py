"""The label-free loop from the command line: adapt, evaluate, recognize, train, demo."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hwlearn.charlm import MixedCharLM
from hwlearn.checkpoint import load_checkpoint
from hwlearn.cli import main
from hwlearn.recipes import load_charlm
from hwlearn.selftrain import STUDENT_STEPS_PER_ROUND_STEP
from hwlearn.errors import HwlearnError
from hwlearn.synth import build_synthetic

MODES = ["L", "RGBA", "P", "I;16", "CMYK", "LA", "1"]


@pytest.fixture(scope="module")
def word_folder(tmp_path_factory, tiny_assets) -> tuple[Path, Path]:
    """14 word images in odd modes and formats, plus a corrupt and an empty file; and their labels."""
    fonts, corpus = tiny_assets
    ds = build_synthetic(fonts, corpus, height=32, style="clean", seed=99, length=14,
                         punct_share=0.0, number_share=0.0, date_share=0.0, case_share=0.0)
    root = tmp_path_factory.mktemp("words")
    folder = root / "images"
    (folder / "sub").mkdir(parents=True)
    labels = []
    for i in range(len(ds)):
        img, word = ds[i]
        mode = MODES[i % len(MODES)]
        im = Image.fromarray(img)
        if mode == "I;16":
            im = Image.fromarray(img.astype(np.uint16) * 257)
        elif mode == "CMYK":
            im = im.convert("CMYK")
        elif mode != "L":
            im = im.convert(mode)
        ext = {"CMYK": "tif", "1": "bmp"}.get(mode, "png")
        name = f"{'sub/' if i % 2 else ''}w{i:02d}.{ext}"
        im.save(folder / name)
        labels.append(f"images/{name}\t{word}\n")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "sub" / "empty.jpg").write_bytes(b"")
    (root / "labels.tsv").write_text("".join(labels), encoding="utf-8")
    return folder, root / "labels.tsv"


def _invoke(args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def test_adapt_says_what_left_the_rounds_out_when_the_readings_run_empty(tiny_run, word_folder, tmp_path,
                                                                          monkeypatch):
    """Rounds that stop for want of a usable pseudo-label are not blamed on the time limit."""
    import hwlearn.selftrain as selftrain

    calls = []
    real = selftrain.select_by_rank

    def first_round_only(*args, **kwargs):  # (round 2's readings all empty, as if the model read nothing)
        calls.append(1)
        return real(*args, **kwargs) if len(calls) == 1 else []

    monkeypatch.setattr(selftrain, "select_by_rank", first_round_only)
    folder, _ = word_folder
    out = tmp_path / "adapt"
    result = _invoke(["adapt", "--from", tiny_run / "best", "--unlabeled", folder, "-o", out, "--rounds", "2",
                      "--steps-per-round", "2", "--batch-size", "8", "--workers", "0", "--device", "cpu",
                      "--views", "0", "--font-steps", "0", "--time-limit", "600"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "round 2: no usable pseudo-label" in text
    assert "1 of the 2 rounds ran (no usable pseudo-label)" in text and "time limit left" not in text
    assert "gave the student" not in text
    summary = json.loads((out / "final" / "meta.json").read_text())["adapt_summary"]
    assert summary["rounds_trained"] == {"asked": 2, "trained": 1, "left_out_by": "no usable pseudo-label"}
    assert summary["student_steps"]["trained"] == 0


def test_adapt_runs_a_round_and_reports_unreadable_files(tiny_run, word_folder, tmp_path):
    folder, labels = word_folder
    out = tmp_path / "adapt"
    result = _invoke(["adapt", "--from", tiny_run / "best", "--unlabeled", folder, "-o", out, "--rounds", "1",
                      "--steps-per-round", "5", "--batch-size", "8", "--workers", "0", "--device", "cpu",
                      "--val", labels, "--time-limit", "600"])
    assert result.exit_code == 0, result.output
    out_text = result.output
    assert "skipped 2 unreadable file(s)" in out_text
    assert "broken.png" in out_text and "empty.jpg" in out_text
    assert "labeled 14" in out_text  # every readable image, whatever its mode
    assert "cer lm" in out_text and "wer lm" in out_text, out_text  # the val columns of the table
    assert (out / "final" / "model.safetensors").exists()
    assert (out / "round1" / "last" / "meta.json").exists()
    meta = json.loads((out / "final" / "meta.json").read_text())
    summary = meta["adapt_summary"]
    # round 0 (the pretrained model), round 1, and the student trained from the pretrained weights after the rounds
    # for STUDENT_STEPS_PER_ROUND_STEP times as many steps as the rounds together (1 x 5) on round 1's readings
    assert summary["chosen_round"] in (0, 1, 2) and len(summary["rounds"]) == 3
    assert summary["rounds"][1]["selected"] >= 1 and summary["rounds"][2]["student"]
    assert summary["chosen"] == ("student" if summary["chosen_round"] == 2 else f"round {summary['chosen_round']}")
    student_meta = json.loads((out / "student" / "last" / "meta.json").read_text())
    assert student_meta["training"]["phase"] == "adapt-student"
    assert student_meta["training"]["step"] == STUDENT_STEPS_PER_ROUND_STEP * 5
    # --time-limit in minutes; 600 leave the student all its steps
    assert summary["student_steps"] == {"asked": STUDENT_STEPS_PER_ROUND_STEP * 5,
                                        "trained": STUDENT_STEPS_PER_ROUND_STEP * 5, "time_limit": 36000.0}
    assert "student: labeled 14" in out_text
    # where each round's time went: round 0 only read; round 1 trained, labeled and read the --val labels
    assert set(summary["rounds"][0]["seconds"]) == {"labeling", "report"}
    assert list(summary["rounds"][1]["seconds"]) == ["training", "labeling", "report"]
    assert summary["rounds"][1]["seconds"]["training"] > 0 and min(summary["rounds"][1]["seconds"].values()) >= 0
    assert "training " in out_text and " s, labeling " in out_text
    assert summary["lexicon"] is None
    # no --lexicon: pseudo-labels guided by a character model of the pretraining corpus (--char-lm auto)
    assert summary["charlm"]["words"] == 12 and "cer_lm" in out_text
    # labels were only reported: the round's training set is the pseudo-labeled selection
    round_meta = json.loads((out / "round1" / "last" / "meta.json").read_text())
    assert round_meta["adapt"]["selected"] == summary["rounds"][1]["selected"]
    assert round_meta["training"]["phase"] == "adapt-round-1" and round_meta["training"]["step"] == 5
    assert round_meta["adapt"]["views"] == 4  # the pseudo-label: the reading the image and its 4 copies agree on
    # the tiny model was pretrained without dropout; adaptation trains with --dropout's default and says so
    assert json.loads((tiny_run / "best" / "meta.json").read_text())["model_config"]["dropout"] == 0.0
    assert round_meta["adapt"]["dropout"] == 0.2 and round_meta["model_config"]["dropout"] == 0.2
    # what the round trained on: every readable image, most confident first, the selection marked
    rows = (out / "round1" / "pseudo_labels.tsv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "image\tpseudo_label\tconfidence\tselected"
    fields = [r.split("\t") for r in rows[1:]]
    assert len(fields) == 14 and all(len(f) == 4 and Path(f[0]).exists() for f in fields)
    confidences = [float(f[2]) for f in fields]
    assert confidences == sorted(confidences, reverse=True)
    assert sum(int(f[3]) for f in fields) == summary["rounds"][1]["selected"]
    # the final model carries the readings its round trained on, with their counts (none for round 0)
    chosen = {0: None, 1: out / "round1", 2: out / "student"}[summary["chosen_round"]]
    chosen_rows = (chosen / "pseudo_labels.tsv").read_text(encoding="utf-8").splitlines()[1:] if chosen else []
    expected = dict(Counter(f[1] for f in (r.split("\t") for r in chosen_rows) if f[3] == "1"))
    assert meta["domain_words"] == expected
    lm = load_charlm("auto", load_checkpoint(out / "final"))
    assert isinstance(lm, MixedCharLM) == bool(expected)


def test_adapt_refuses_a_folder_without_images(tiny_run, tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["adapt", "--from", str(tiny_run / "best"), "--unlabeled",
                                       str(tmp_path / "empty"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("Error:") and "empty" in result.output
    assert "Traceback" not in result.output


def test_evaluate_writes_csv_and_json_that_agree(tiny_run, word_folder, tmp_path):
    _, labels = word_folder
    csv_path, json_path = tmp_path / "rows.csv", tmp_path / "summary.json"
    result = _invoke(["evaluate", "--model", tiny_run / "best", "--labels", labels, "--csv", csv_path,
                      "--json", json_path, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(csv_path, encoding="utf-8")))
    assert len(rows) == 14
    assert set(rows[0]) == {"image", "reference", "prediction", "confidence", "edit_distance"}
    summary = json.loads(json_path.read_text())
    total_ref = sum(len(r["reference"]) for r in rows)
    total_ed = sum(int(r["edit_distance"]) for r in rows)
    # the CSV holds the decoding recognize uses: without a lexicon, the character model's
    assert summary["csv_decoding"] == "charlm"
    assert summary["results"]["charlm"]["cer"] == pytest.approx(total_ed / total_ref)
    assert summary["results"]["greedy"]["cer"] < 0.5  # the tiny model reads its own kind of words
    assert "CER" in result.output


def test_evaluate_with_lexicon_reports_both_decodings(tiny_run, word_folder, tmp_path, tiny_assets):
    from hwlearn.decode import ARCHIVE_LM_WEIGHT, LENGTH_BONUS, PRIOR_WEIGHT

    _, labels = word_folder
    words = tmp_path / "words.txt"
    words.write_text("the\ncat\ndog\nsun\nhat\nred\nbig\nrun\ntop\nbox\nmap\npen\n", encoding="utf-8")
    json_path = tmp_path / "s.json"
    result = _invoke(["evaluate", "--model", tiny_run / "best", "--labels", labels, "--lexicon", words,
                      "--json", json_path, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads(json_path.read_text())
    res = summary["results"]
    assert set(res) == {"greedy", "lexicon", "charlm"}  # the character model: --char-lm auto by default
    assert res["lexicon"]["cer"] <= res["greedy"]["cer"] + 1e-9
    assert summary["reading"] == {"layout": "as-is", "lexicon": str(words), "lexicon_weight": PRIOR_WEIGHT,
                                  "length_bonus": LENGTH_BONUS, "char_lm": "auto", "lm_weight": ARCHIVE_LM_WEIGHT}


def test_char_lm_decoding_in_evaluate_and_recognize(tiny_run, word_folder, tmp_path):
    folder, labels = word_folder
    json_path = tmp_path / "s.json"
    result = _invoke(["evaluate", "--model", tiny_run / "best", "--labels", labels, "--json", json_path, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    res = json.loads(json_path.read_text())["results"]
    assert set(res) == {"greedy", "charlm"} and res["charlm"]["cer"] < 0.5  # --char-lm auto by default
    result = _invoke(["evaluate", "--model", tiny_run / "best", "--labels", labels, "--json", json_path,
                      "--char-lm", "none", "--device", "cpu"])
    assert set(json.loads(json_path.read_text())["results"]) == {"greedy"}

    def read(*options):
        result = _invoke(["recognize", "--model", tiny_run / "best", folder, "--json", "--device", "cpu", *options])
        assert result.exit_code == 0, result.output
        return {r["image"]: r["text"] for r in map(json.loads, filter(None, result.stdout.splitlines()))}

    guided, greedy, beam = read(), read("--char-lm", "none"), read("--beam")
    assert len(guided) == len(greedy) == len(beam) == 14
    result = CliRunner().invoke(main, ["recognize", "--model", str(tiny_run / "best"), str(folder), "--beam",
                                       "--char-lm", "auto"])
    assert result.exit_code == 2 and "--beam and --char-lm exclude each other" in result.output
    # a file that is neither corpus statistics nor a word list: one line naming it, nothing written
    (tmp_path / "bad.json").write_text('{"format": "something else"}', encoding="utf-8")
    result = CliRunner().invoke(main, ["evaluate", "--model", str(tiny_run / "best"), "--labels", str(labels),
                                       "--char-lm", str(tmp_path / "bad.json"), "--json", str(tmp_path / "x.json")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "bad.json: not a hwlearn corpus statistics file" in result.output and not (tmp_path / "x.json").exists()


def _read_with_lexicon(model, folder, words, *options) -> list[str]:
    """What ``hwlearn recognize`` reads in ``folder`` decoding with the lexicon ``words`` alone."""
    result = _invoke(["recognize", "--model", model, folder, "--json", "--device", "cpu", "--lexicon", words,
                      "--char-lm", "none", *options])
    assert result.exit_code == 0, result.output
    return [json.loads(line)["text"] for line in result.stdout.splitlines() if line.startswith("{")]


def test_lexicon_weight_sets_how_much_word_counts_decide(tiny_run, word_folder, tmp_path):
    from hwlearn.cli.options import LEXICON_WEIGHT
    from hwlearn.decode import PRIOR_WEIGHT

    assert LEXICON_WEIGHT == PRIOR_WEIGHT  # the CLI default is the library's
    folder, _ = word_folder
    words = tmp_path / "counted.txt"  # "the" is a million times more frequent than the other words
    words.write_text("the\t1000000\n" + "".join(f"{w}\t1\n" for w in "cat dog sun hat red big run top box".split()),
                     encoding="utf-8")
    image_only, with_prior = (_read_with_lexicon(tiny_run / "best", folder, words, "--lexicon-weight", weight)
                              for weight in (0, 3))
    assert len(image_only) == len(with_prior) == 14
    assert with_prior.count("the") > image_only.count("the")
    assert set(image_only) - {"the"}  # without the prior the images decide


def test_length_bonus_sets_how_much_longer_words_are_favoured(tiny_run, word_folder, tmp_path):
    from hwlearn.cli.options import LENGTH_BONUS
    from hwlearn.decode import LENGTH_BONUS as LIBRARY_BONUS

    assert LENGTH_BONUS == LIBRARY_BONUS  # the CLI default is the library's
    folder, _ = word_folder
    words = tmp_path / "words.txt"  # words of one to three letters, no counts
    words.write_text("\n".join("a i o at in on it to the and".split()), encoding="utf-8")
    plain, favoured = (_read_with_lexicon(tiny_run / "best", folder, words, "--length-bonus", bonus)
                       for bonus in (0, 100))
    assert len(plain) == len(favoured) == 14
    assert sum(map(len, favoured)) > sum(map(len, plain))
    assert sum(len(w) == 1 for w in favoured) < sum(len(w) == 1 for w in plain)  # fewer single letters


def test_recognize_prints_path_text_confidence(tiny_run, word_folder):
    folder, _ = word_folder
    result = _invoke(["recognize", "--model", tiny_run / "best", folder, "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 14
    for rec in lines:
        assert set(rec) == {"image", "text", "confidence"}
        assert 0.0 <= rec["confidence"] <= 1.0 and Path(rec["image"]).exists()
    assert "broken.png" in result.stderr and "2 skipped" in result.stderr


def test_recognize_in_chunks_reads_as_all_at_once(tiny_run, word_folder, tmp_path):
    from hwlearn.recipes import iter_recognize, recognize

    folder, _ = word_folder
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"nope")
    inputs = [folder, only_bad / "x.png", sorted(folder.glob("w*.png"))[0]]
    for views, charlm in ((0, "auto"), (2, None)):
        whole, whole_skipped = recognize(tiny_run / "best", inputs, device="cpu", views=views, charlm_source=charlm)
        chunks = list(iter_recognize(tiny_run / "best", inputs, device="cpu", views=views, charlm_source=charlm, chunk=4))
        assert [len(r) + len(s) for r, s in chunks] == [2 + 4, 4, 4, 4]  # the scan's 2 unreadable come first
        assert [x for r, _ in chunks for x in r] == whole and len(whole) == 15
        assert [x for _, s in chunks for x in s] == whole_skipped and len(whole_skipped) == 3
    with pytest.raises(HwlearnError, match="none of the 2 image files can be read"):
        list(iter_recognize(tiny_run / "best", [only_bad / "x.png", folder / "broken.png"], device="cpu", chunk=1))


def test_views_read_augmented_copies_and_an_image_reads_the_same_alone(tiny_run, word_folder, tmp_path):
    folder, labels = word_folder

    def read(*inputs):
        result = _invoke(["recognize", "--model", tiny_run / "best", *inputs, "--json", "--device", "cpu",
                          "--char-lm", "none", "--views", "2"])
        assert result.exit_code == 0, result.output
        return {r["image"]: (r["text"], r["confidence"]) for r in map(json.loads, filter(None, result.stdout.splitlines()))}

    in_folder = read(folder)
    assert len(in_folder) == 14
    one = sorted(in_folder)[3]
    assert read(one) == {one: in_folder[one]}  # each copy depends on the image alone, not its neighbours
    json_path = tmp_path / "s.json"
    result = _invoke(["evaluate", "--model", tiny_run / "best", "--labels", labels, "--json", json_path,
                      "--char-lm", "none", "--views", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads(json_path.read_text())
    assert summary["views"] == 2 and summary["results"]["greedy"]["cer"] < 0.5


def test_recognize_missing_input_is_a_one_line_error(tiny_run, tmp_path):
    result = CliRunner().invoke(main, ["recognize", "--model", str(tiny_run / "best"), str(tmp_path / "nope.png")])
    assert result.exit_code == 2 and "nope.png" in result.output and "Traceback" not in result.output


def test_recognize_skips_unreadable_files_and_fails_when_none_can_be_read(tiny_run, word_folder, tmp_path):
    folder, _ = word_folder
    broken, good = folder / "broken.png", sorted(folder.glob("w*.png"))[0]
    result = _invoke(["recognize", "--model", tiny_run / "best", good, broken, "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["image"] for line in result.stdout.splitlines()] == [str(good)]
    assert f"{broken}: not a recognized image format" in " ".join(result.stderr.split())  # the path once
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"nope")
    result = _invoke(["recognize", "--model", tiny_run / "best", folder, only_bad, "--json", "--device", "cpu"])
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 14  # a folder of unreadable files too
    assert "x.png" in result.stderr and "3 skipped" in result.stderr
    for inputs, message in (([broken], f"Error: {broken}: cannot read image (not a recognized image format)"),
                            ([broken, only_bad], "Error: none of the 2 image files can be read (e.g. ")):
        result = CliRunner().invoke(main, ["recognize", "--model", str(tiny_run / "best"), *map(str, inputs)])
        assert result.exit_code == 2 and result.output.startswith(message), result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_checkpoint_with_unknown_format_is_refused(tmp_path, word_folder):
    bad = tmp_path / "ckpt"
    bad.mkdir()
    (bad / "meta.json").write_text('{"format": "something-else"}')
    _, labels = word_folder
    result = CliRunner().invoke(main, ["evaluate", "--model", str(bad), "--labels", str(labels)])
    assert result.exit_code == 2 and result.output.startswith("Error:")


def test_supervised_train_on_labels(tiny_run, word_folder, tmp_path):
    _, labels = word_folder
    out = tmp_path / "ft"
    result = _invoke(["train", "--from", tiny_run / "best", "--labeled", labels, "-o", out, "--steps", "6",
                      "--batch-size", "4", "--val", labels, "--val-every", "3", "--workers", "0", "--device", "cpu",
                      "--dropout", "0.1"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "best" / "meta.json").read_text())
    assert meta["training"]["phase"] == "finetune" and "real_val_cer" in meta["metrics"]
    # trained with the asked dropout (the tiny model was built without), and rebuilt with it
    assert meta["finetune"]["dropout"] == 0.1 and meta["model_config"]["dropout"] == 0.1
    assert load_checkpoint(out / "best").model.dropout.p == 0.1


def test_a_label_file_with_unreadable_images_stops_evaluate_train_and_adapt_before_they_start(
        tiny_run, word_folder, tmp_path):
    folder, labels = word_folder
    bad_labels = tmp_path / "bad.tsv"
    good_lines = labels.read_text(encoding="utf-8").splitlines()
    bad_lines = [f"{folder / 'broken.png'}\tx", f"{folder / 'sub' / 'empty.jpg'}\ty", f"{tmp_path / 'gone.png'}\tz"]
    bad_lines += [f"{folder.parent / line}" for line in good_lines]
    bad_labels.write_text("\n".join(bad_lines[:2] + bad_lines[3:6] + bad_lines[2:3]) + "\n", encoding="utf-8")
    message = (f"Error: {bad_labels}: 3 of 6 labeled images cannot be read: {folder / 'broken.png'} (not a recognized "
               f"image format), {folder / 'sub' / 'empty.jpg'} (empty file), {tmp_path / 'gone.png'} (no such file) "
               "(fix them or remove their lines)")
    ft = tmp_path / "ft"  # a finished run that --overwrite with a bad file must leave as it was
    assert _invoke(["train", "--from", tiny_run / "best", "--labeled", labels, "-o", ft, "--steps", "2",
                    "--batch-size", "4", "--workers", "0", "--device", "cpu"]).exit_code == 0
    before = sorted(p.name for p in ft.iterdir())
    assert "metrics.jsonl" in before
    for args in (["evaluate", "--model", tiny_run / "best", "--labels", bad_labels, "--device", "cpu"],
                 ["train", "--from", tiny_run / "best", "--labeled", bad_labels, "-o", tmp_path / "ft2", "--steps", "2",
                  "--workers", "1", "--device", "cpu"],
                 ["train", "--from", tiny_run / "best", "--labeled", labels, "--val", bad_labels, "-o", ft,
                  "--overwrite", "--steps", "2", "--workers", "0", "--device", "cpu"],
                 ["adapt", "--from", tiny_run / "best", "--unlabeled", folder, "--val", bad_labels, "-o",
                  tmp_path / "adapt", "--rounds", "1", "--device", "cpu"]):
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 2 and " ".join(result.output.split()) == message, (args[0], result.output)
    assert not (tmp_path / "ft2").exists() and not (tmp_path / "adapt").exists()
    assert sorted(p.name for p in ft.iterdir()) == before


def test_demo_runs_end_to_end_on_a_tiny_setting(tmp_path):
    out = tmp_path / "demo"
    result = _invoke(["demo", "-o", out, "--pretrain-steps", "3", "--target-size", "12", "--adapt-rounds", "1",
                      "--adapt-steps", "2", "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    res = json.loads((out / "demo_result.json").read_text())
    assert {"cer", "wer"} <= set(res["before"]) and {"cer", "wer"} <= set(res["after"])
    assert "adapted without labels" in result.output


def test_pretrain_cli_records_sampler_options_and_rejects_a_floor_of_one(tmp_path, tiny_assets):
    from hwlearn.checkpoint import read_meta

    fonts, corpus = tiny_assets
    out = tmp_path / "pre"
    result = _invoke(["pretrain", "-o", out, "--fonts", fonts, "--corpus", corpus, "--steps", "2", "--batch-size", "4",
                      "--val-every", "2", "--val-size", "4", "--workers", "0", "--device", "cpu", "--max-len", "9",
                      "--phrase-share", "0.3", "--char-floor", "0.05", "--break-share", "0.02"])
    assert result.exit_code == 0, result.output
    options = read_meta(out / "best")["synthetic"]["sampler_options"]
    assert options == {"max_len": 9, "phrase_share": 0.3, "char_floor": 0.05, "break_share": 0.02}
    result = _invoke(["pretrain", "-o", tmp_path / "bad", "--fonts", fonts, "--corpus", corpus, "--char-floor", "1"])
    assert result.exit_code == 2 and "--char-floor" in result.output and not (tmp_path / "bad").exists()
