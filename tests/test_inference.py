"""Batched recognition, also from several views of each image (the image and augmented copies)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hwlearn.checkpoint import load_checkpoint
from hwlearn.data import augment_real, collate, to_model_input
from hwlearn.charlm import CharLM
from hwlearn.corpus import CorpusStats
from hwlearn.decode import Lexicon
from hwlearn.errors import HwlearnError
from hwlearn.inference import (MODEL_DIR_PREFIX, PARALLEL_MIN_SEARCHES, AugmentedCopy, SearchPool, model_outputs,
                               augmented_copies, predict, predict_views, predictions_by_method, search_workers)
from hwlearn.synth import available_cores, build_synthetic


@pytest.fixture(scope="module")
def words(tiny_run, tiny_assets):
    fonts, corpus = tiny_assets
    ckpt = load_checkpoint(tiny_run / "best")
    height = int(ckpt.meta["preprocessing"]["height"])
    ds = build_synthetic(fonts, corpus, height=height, style="clean", seed=5, length=12,
                         punct_share=0.0, number_share=0.0, date_share=0.0, case_share=0.0)
    images = [ds[i][0] for i in range(len(ds))]
    return ckpt, height, images


def test_predict_views_of_one_view_or_identical_copies_is_predict(words):
    ckpt, height, images = words
    inputs = [(to_model_input(img, height), None) for img in images]
    plain = predict(ckpt.model, inputs, ckpt.charset)
    assert predict_views(ckpt.model, [inputs], ckpt.charset) == plain
    same = predict_views(ckpt.model, [inputs, list(inputs), list(inputs)], ckpt.charset)
    assert [p.text for p in same] == [p.text for p in plain]
    assert [p.confidence for p in same] == pytest.approx([p.confidence for p in plain], abs=1e-5)


def test_a_copy_that_does_not_support_the_reading_lowers_its_confidence(words):
    ckpt, height, images = words
    inputs = [(to_model_input(img, height), None) for img in images]
    plain = predict(ckpt.model, inputs, ckpt.charset)
    blank = [(to_model_input(np.full_like(img, 255), height), None) for img in images]
    blank_plain = predict(ckpt.model, blank, ckpt.charset)  # a tiny model may still see a word there
    views = predict_views(ckpt.model, [inputs, blank], ckpt.charset)
    kept = 0
    for p, b, v in zip(plain, blank_plain, views):
        if p.text and p.text != b.text:
            assert v.text in {p.text, b.text} - {""}
            if v.text == p.text:  # the blank copy gives it little probability: the average falls
                kept += 1
                assert v.confidence < p.confidence
    assert kept >= len(images) // 2
    # augmented copies: each reading is one of the views' readings
    copies = [(to_model_input(augment_real(img, np.random.default_rng(i)), height), None) for i, img in enumerate(images)]
    copy_plain = predict(ckpt.model, copies, ckpt.charset)
    both = predict_views(ckpt.model, [inputs, copies], ckpt.charset)
    assert any(p.text != c.text for p, c in zip(plain, copy_plain))  # the copies do read differently
    for p, c, b in zip(plain, copy_plain, both):
        assert b.text in {p.text, c.text} - {""} or not (p.text or c.text)


def test_several_decodings_of_one_model_run_equal_one_run_each(words, tiny_assets):
    ckpt, height, images = words
    words_of_corpus = CorpusStats.load(tiny_assets[1]).word_counts
    lexicon, lm = Lexicon(words_of_corpus, ckpt.charset), CharLM(words_of_corpus)
    inputs = [(to_model_input(img, height), None) for img in images]
    methods = ("greedy", "beam", "lexicon", "charlm")
    for views in ([inputs], [inputs] + augmented_copies(images, 2, height, seed=1)):
        together = predictions_by_method(ckpt.model, views, ckpt.charset, methods, batch_size=5, lexicon=lexicon,
                                         charlm=lm)
        assert list(together) == list(methods)
        for m in methods:
            alone = predict_views(ckpt.model, views, ckpt.charset, method=m, batch_size=5, lexicon=lexicon, charlm=lm)
            assert together[m] == alone
        assert together["greedy"] != together["lexicon"]  # the decodings do differ


def test_searches_in_worker_processes_read_as_one_process_does(words, tiny_assets):
    ckpt, height, images = words
    words_of_corpus = CorpusStats.load(tiny_assets[1]).word_counts
    lexicon, lm = Lexicon(words_of_corpus, ckpt.charset), CharLM(words_of_corpus)
    views = [[(to_model_input(img, height), None) for img in images]] + augmented_copies(images, 1, height, seed=1)
    methods = ("greedy", "beam", "lexicon", "charlm")
    threads = torch.get_num_threads()
    alone = predictions_by_method(ckpt.model, views, ckpt.charset, methods, batch_size=3, lexicon=lexicon, charlm=lm,
                                  workers=1)
    pooled = predictions_by_method(ckpt.model, views, ckpt.charset, methods, batch_size=3, lexicon=lexicon, charlm=lm,
                                   workers=2)
    assert pooled == alone
    assert torch.get_num_threads() == threads  # the model read on one thread meanwhile, the count given back
    with SearchPool(ckpt.charset, lexicon, lm, 10, workers=2) as pool:  # one pool for several calls
        for _ in range(2):
            assert predictions_by_method(ckpt.model, views, ckpt.charset, methods, batch_size=3, lexicon=lexicon,
                                         charlm=lm, pool=pool) == alone
        assert (predict(ckpt.model, views[0], ckpt.charset, method="charlm", charlm=lm, lexicon=lexicon, pool=pool)
                == predict(ckpt.model, views[0], ckpt.charset, method="charlm", charlm=lm, lexicon=lexicon))
        with pytest.raises(ValueError, match="another charset, lexicon, character model"):
            predictions_by_method(ckpt.model, views, ckpt.charset, methods, lexicon=lexicon, pool=pool)
    assert search_workers(PARALLEL_MIN_SEARCHES - 1) == 1 and search_workers(PARALLEL_MIN_SEARCHES) == available_cores()
    with pytest.raises(HwlearnError, match="needs a lexicon"):  # a worker's error reaches the caller
        predictions_by_method(ckpt.model, views, ckpt.charset, ("lexicon",), batch_size=3, workers=2)


def test_spawned_search_workers_get_the_lexicon_and_character_model(words, tiny_assets):
    # macOS and Windows spawn the workers: what they search with must survive pickling
    ckpt, height, images = words
    words_of_corpus = CorpusStats.load(tiny_assets[1]).word_counts
    lexicon, lm = Lexicon(words_of_corpus, ckpt.charset), CharLM(words_of_corpus)
    with torch.no_grad():
        log_probs, lengths = ckpt.model(*collate([(to_model_input(img, height), None) for img in images])[:2])
    with SearchPool(ckpt.charset, lexicon, lm, 5, workers=1) as here, \
            SearchPool(ckpt.charset, lexicon, lm, 5, workers=2, start_method="spawn") as spawned:
        for method in ("lexicon", "charlm"):
            assert spawned.submit(method, log_probs, lengths).result() == here.submit(method, log_probs, lengths).result()


def test_augmented_copies_depend_on_the_image_not_on_its_neighbours(words):
    _, height, images = words
    together = augmented_copies(images, 2, height, seed=3)
    alone = augmented_copies(images[4:5], 2, height, seed=3)
    assert len(together) == 2 and all(len(view) == len(images) for view in together)
    for v in range(2):
        assert torch.equal(together[v][4][0], alone[v][0][0])
    assert not torch.equal(together[0][4][0], together[1][4][0])  # two copies differ from each other ...
    assert not torch.equal(together[0][4][0], augmented_copies(images[4:5], 1, height, seed=4)[0][0][0])  # ... and by seed


def test_copies_are_made_a_batch_at_a_time_as_the_model_reads_them(words):
    ckpt, height, images = words
    made: list[int] = []

    def seeds(i, _img):
        made.append(i)
        return [7, i]

    copy = AugmentedCopy(images, height, seeds)
    assert made == []  # nothing is made before it is read
    inputs = [(to_model_input(img, height), None) for img in images]
    batches = model_outputs(ckpt.model, [inputs, copy], "cpu", batch_size=4)
    idx, _ = next(batches)
    assert sorted(made) == sorted(idx)  # the first batch's copies only, not the folder's
    rest = [j for later, _ in batches for j in later]
    assert sorted(made) == list(range(len(images))) and len(rest) == len(images) - len(idx)
    again = copy[3][0]  # made again when read again, the same
    assert torch.equal(again, to_model_input(augment_real(images[3], np.random.default_rng([7, 3])), height))

    # with worker processes the copies are made by them, a few batches ahead of the model, and the same
    made.clear()
    with SearchPool(ckpt.charset, workers=2) as pool:
        batches = model_outputs(ckpt.model, [inputs, copy], "cpu", batch_size=2, pool=pool)
        idx, outputs = next(batches)
        assert len(images) > 6 and len(made) == 2 * (1 + pool.workers)  # this batch and the next two only
        with torch.no_grad():
            assert torch.equal(outputs[1][0], ckpt.model(*collate(copy.items(idx))[:2])[0])  # (in eval mode now)


def test_workers_read_the_copies_with_the_model_as_it_is_at_each_call(words):
    # self-training keeps one pool over its rounds while the model learns: every reading uses the model of its call
    ckpt, height, images = words
    model = ckpt.model
    views = [[(to_model_input(img, height), None) for img in images]] + augmented_copies(images, 2, height, seed=1)
    here_before = predict_views(model, views, ckpt.charset, batch_size=4)
    with SearchPool(ckpt.charset, workers=2) as pool:
        assert predict_views(model, views, ckpt.charset, batch_size=4, pool=pool) == here_before
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        try:
            with torch.no_grad():
                model.head.bias[1:] += torch.linspace(-3, 3, model.head.bias.numel() - 1)  # another model
            here_after = predict_views(model, views, ckpt.charset, batch_size=4)
            assert here_after != here_before
            assert predict_views(model, views, ckpt.charset, batch_size=4, pool=pool) == here_after
        finally:
            model.load_state_dict(saved)
        model_dir = pool.model_dir
        assert model_dir is not None and len(list(Path(model_dir).iterdir())) == 1  # the last one only
    assert not Path(model_dir).exists()  # the pool's snapshots go with it


@pytest.mark.skipif(os.name != "posix", reason="the sweep asks the OS about pids (POSIX only)")
def test_a_pool_removes_the_model_folders_of_processes_that_are_gone(words, tmp_path, monkeypatch):
    # a process killed outright cannot remove its model snapshots; the next pool that shares a model does
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = tmp_path / f"{MODEL_DIR_PREFIX}{gone.pid}-abc"
    alive = tmp_path / f"{MODEL_DIR_PREFIX}{os.getpid()}-def"  # a running process's (this one's)
    unnamed = tmp_path / f"{MODEL_DIR_PREFIX}notapid-ghi"
    for folder in (orphan, alive, unnamed):
        folder.mkdir()
        (folder / "model-1.pt").write_bytes(b"x" * 10)
    ckpt, _, _ = words
    with SearchPool(ckpt.charset, workers=2) as pool:
        pool.share_model(ckpt.model)
        assert Path(pool.model_dir).parent == tmp_path and Path(pool.model_dir).name.startswith(
            f"{MODEL_DIR_PREFIX}{os.getpid()}-")
        assert not orphan.exists() and alive.exists() and unnamed.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, unnamed.name])

