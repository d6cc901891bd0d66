"""Synthetic datasets: determinism, DataLoader workers, writing to disk, and `hwlearn synth`."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hwlearn.cli import main
from hwlearn.corpus import CorpusStats
from hwlearn.errors import HwlearnError
from hwlearn.paths import REPO_ROOT
from hwlearn.synth import SyntheticWords, build_synthetic, read_meta, write_dataset

FONTS = ["caveat.ttf", "allura.ttf", "architects-daughter.ttf"]
WORDS = "the of and to a in that was her it his with for had you not be as my she which Emma's, 1815."


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> tuple[Path, Path]:
    """A fonts dir with three bundled fonts, and a small corpus statistics file."""
    root = tmp_path_factory.mktemp("assets")
    fonts = root / "fonts"
    fonts.mkdir()
    for name in FONTS:
        shutil.copy(REPO_ROOT / "fonts" / "ttf" / name, fonts / name)
    corpus = root / "corpus.json"
    CorpusStats.from_text(WORDS * 3).save(corpus)
    return fonts, corpus


@pytest.fixture(scope="module")
def dataset(assets) -> SyntheticWords:
    fonts, corpus = assets
    return build_synthetic(fonts_dir=fonts, corpus=corpus, height=24, seed=7, length=40)


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def _items(ds, indices):
    return [ds[i] for i in indices]


def _same(a, b) -> bool:
    return a[1] == b[1] and a[0].shape == b[0].shape and np.array_equal(a[0], b[0])


def test_items_are_uint8_word_images(dataset):
    image, word = dataset[3]
    assert image.dtype == np.uint8 and image.ndim == 2 and image.shape[0] == 24
    assert image.shape[1] >= 6 and image.min() < image.max()
    assert word and dataset.renderer.can_render(word)
    assert dataset.word(3) == word
    assert dataset[-1][1] == dataset[len(dataset) - 1][1]
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_same_seed_same_pixels_other_seed_differs(assets, dataset):
    fonts, corpus = assets
    again = build_synthetic(fonts_dir=fonts, corpus=corpus, height=24, seed=7, length=40)
    other = build_synthetic(fonts_dir=fonts, corpus=corpus, height=24, seed=8, length=40)
    order = [5, 0, 17, 3]
    first = _items(dataset, order)
    assert all(_same(a, b) for a, b in zip(first, _items(again, order[::-1])[::-1]))  # order-independent
    assert all(_same(a, b) for a, b in zip(first, _items(dataset, order)))  # repeatable
    assert not any(_same(a, b) for a, b in zip(first, _items(other, order)))
    assert [dataset.word(i) for i in range(20)] != [other.word(i) for i in range(20)]


def test_pickled_dataset_and_transform(dataset):
    copy = pickle.loads(pickle.dumps(dataset))
    assert all(_same(a, b) for a, b in zip(_items(dataset, range(4)), _items(copy, range(4))))
    inverted = dataset.with_transform(lambda im: 255 - im)
    image, word = inverted[2]
    assert word == dataset[2][1] and np.array_equal(image, 255 - dataset[2][0])
    assert dataset.transform is None  # the original is unchanged


def test_with_capitals_draws_the_same_words_some_with_a_capital(dataset):
    capped = dataset.with_capitals(1.0)
    words = [dataset.word(i) for i in range(40)]
    assert [capped.word(i) for i in range(40)] == [w[0].upper() + w[1:] if w[0].islower() else w for w in words]
    assert capped.info["capital_share"] == 1.0 and dataset.sampler.capital_share == 0.0  # the original is unchanged
    image, word = capped[0]
    assert word == capped.word(0) and image.dtype == np.uint8 and image.shape[0] == 24


def _as_list(batch):
    return batch


def test_dataloader_workers_match_serial(dataset):
    from torch.utils.data import DataLoader

    def load(workers: int):
        loader = DataLoader(dataset, batch_size=5, num_workers=workers, collate_fn=_as_list,
                            multiprocessing_context="spawn" if workers else None)
        return [item for batch in loader for item in batch]

    serial, parallel = load(0), load(2)
    assert len(serial) == len(parallel) == len(dataset)
    assert all(_same(a, b) for a, b in zip(serial, parallel))


def test_write_dataset_with_workers(dataset, tmp_path):
    from hwlearn.data import read_labels

    out = tmp_path / "synth"
    report = write_dataset(out, dataset, 12, workers=2, chunk=5, progress=False)
    assert report.count == 12 and report.images_per_second > 0
    pngs = sorted((out / "images").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:08d}.png" for i in range(12)]
    lines = (out / "labels.tsv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 12
    for i, line in enumerate(lines):
        rel, word = line.split("\t")
        image, expected_word = dataset[i]
        assert rel == f"images/{i:08d}.png" and word == expected_word
        on_disk = _png(out / rel)
        assert on_disk.shape[0] == 24 and np.array_equal(on_disk, image)  # PNG is lossless
    assert [(p, w) for p, w in read_labels(out / "labels.tsv")] == [
        (out / f"images/{i:08d}.png", dataset[i][1]) for i in range(12)]
    meta = read_meta(out)
    assert meta["seed"] == 7 and meta["count"] == 12 and meta["height"] == 24 and meta["style"] == "default"
    assert meta["charset"] and meta["images_per_second"] > 0 and meta["hwlearn_version"]
    assert not list(out.glob("*.tmp"))


def test_write_dataset_serial_equals_parallel(dataset, tmp_path):
    write_dataset(tmp_path / "a", dataset, 6, workers=1, progress=False)
    write_dataset(tmp_path / "b", dataset, 6, workers=2, chunk=2, progress=False)
    assert (tmp_path / "a/labels.tsv").read_bytes() == (tmp_path / "b/labels.tsv").read_bytes()
    for i in range(6):
        name = f"images/{i:08d}.png"
        assert np.array_equal(_png(tmp_path / "a" / name), _png(tmp_path / "b" / name))


def test_write_dataset_refuses_non_empty_dir(dataset, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(HwlearnError, match="not empty"):
        write_dataset(out, dataset, 3, workers=1, progress=False)
    assert not (out / "labels.tsv").exists()
    write_dataset(out, dataset, 5, workers=1, progress=False, overwrite=True)
    write_dataset(out, dataset, 2, workers=1, progress=False, overwrite=True)  # fewer: old images go
    assert len(list((out / "images").glob("*.png"))) == 2
    assert len((out / "labels.tsv").read_text().splitlines()) == 2
    assert (out / "notes.txt").read_text() == "mine"  # files that are not the dataset's stay
    with pytest.raises(HwlearnError):
        write_dataset(tmp_path / "big", dataset, len(dataset) + 1, progress=False)


def test_cli_synth_end_to_end(assets, tmp_path):
    fonts, corpus = assets
    out, sheet = tmp_path / "ds", tmp_path / "sheet.png"
    args = ["synth", "--fonts", str(fonts), "--corpus", str(corpus), "-n", "6", "-o", str(out),
            "--height", "24", "--workers", "1", "--seed", "3", "--preview", str(sheet)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert len(list((out / "images").glob("*.png"))) == 6
    assert len((out / "labels.tsv").read_text().splitlines()) == 6
    assert read_meta(out)["seed"] == 3
    assert read_meta(out)["sampler_options"] == {"max_len": 20, "phrase_share": 0.0, "char_floor": 0.0, "break_share": 0.0}
    assert _png(sheet).shape[1] > 100
    assert "images/s" in result.output

    again = CliRunner().invoke(main, args)  # the directory is now a dataset: refused
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert CliRunner().invoke(main, args + ["--overwrite"]).exit_code == 0

    only_sheet = tmp_path / "only.png"
    result = CliRunner().invoke(main, ["synth", "--fonts", str(fonts), "--corpus", str(corpus), "-n", "0",
                                       "--height", "24", "--preview", str(only_sheet)])
    assert result.exit_code == 0, result.output
    assert only_sheet.exists()

    # the word mix options reach the sampler and are recorded with the dataset
    mixed = tmp_path / "mixed"
    result = CliRunner().invoke(main, ["synth", "--fonts", str(fonts), "--corpus", str(corpus), "-n", "12",
                                       "-o", str(mixed), "--height", "24", "--workers", "1", "--max-len", "30",
                                       "--phrase-share", "1", "--char-floor", "0.05"])
    assert result.exit_code == 0, result.output
    assert read_meta(mixed)["sampler_options"] == {"max_len": 30, "phrase_share": 1.0, "char_floor": 0.05,
                                                     "break_share": 0.0}
    assert "char_floor 0.05" in " ".join(result.output.split())
    words = [line.split("\t")[1] for line in (mixed / "labels.tsv").read_text(encoding="utf-8").splitlines()]
    assert sum(" " in w or "-" in w for w in words) >= 6  # phrases (punctuation may crowd out a joiner)


@pytest.mark.parametrize("broken", ["fonts", "corpus"])
def test_cli_synth_bad_input(assets, tmp_path, broken):
    fonts, corpus = assets
    if broken == "fonts":
        fonts = tmp_path / "no-such-fonts"
    else:
        corpus = tmp_path / "no-such-corpus.json"
    result = CliRunner().invoke(main, ["synth", "--fonts", str(fonts), "--corpus", str(corpus),
                                       "-n", "2", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(fonts if broken == "fonts" else corpus) in lines[0]
    assert not (tmp_path / "out").exists()


def test_synthetic_like_finds_fonts_and_corpus_that_moved(tiny_run, tiny_assets, tmp_path, monkeypatch):
    """A checkpoint copied to another machine records fonts and corpus paths that are not there: the
    synthetic words come from HWLEARN_FONTS and the corpus file of the same name found there, and
    fonts that are not as many as the model was pretrained with are an error naming both."""
    from hwlearn.checkpoint import load_checkpoint
    from hwlearn.recipes import synthetic_like

    fonts, corpus = tiny_assets
    ckpt = load_checkpoint(tiny_run / "best")
    moved = tmp_path / "elsewhere"
    ckpt.meta["synthetic"] = {**ckpt.meta["synthetic"], "fonts": str(moved / "fonts"),
                              "corpus": str(moved / corpus.name)}
    monkeypatch.setenv("HWLEARN_FONTS", str(fonts))
    monkeypatch.setenv("HWLEARN_CORPUS", str(corpus))
    words = synthetic_like(ckpt, seed=3)
    assert words.info["fonts"] == str(fonts.resolve()) and words.info["corpus"] == str(corpus.resolve())
    assert words[0][1] == synthetic_like(load_checkpoint(tiny_run / "best"), seed=3)[0][1]  # the same stream
    monkeypatch.delenv("HWLEARN_FONTS")  # the bundled 65 fonts are not the model's 3
    with pytest.raises(HwlearnError, match=r"65 fonts, but the model was pretrained with 3 in .*elsewhere"):
        synthetic_like(ckpt, seed=3)
    monkeypatch.delenv("HWLEARN_CORPUS")  # and no corpus of that name is bundled
    with pytest.raises(HwlearnError, match=r"corpus.json: not found.*HWLEARN_CORPUS"):
        synthetic_like(ckpt, seed=3)
