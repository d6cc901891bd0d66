"""Shared fixtures: a tiny synthetic world (3 fonts, 12 words) and a tiny model trained on it once."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import torch

from hwlearn.corpus import CorpusStats
from hwlearn.paths import REPO_ROOT

TINY_FONTS = ["patrick-hand.ttf", "kalam.ttf", "handlee.ttf"]
TINY_WORDS = "the cat dog sun hat red big run top box map pen " * 5
# a small CNN + 1-layer BiLSTM at height 32: trains in seconds on a CPU
TINY_MODEL = {"channels": (8, 16, 32, 32), "pools": ((2, 2), (2, 2), (2, 1), (4, 1)), "lstm_hidden": 48,
              "lstm_layers": 1, "dropout": 0.0}


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    torch.set_num_threads(1)  # tiny models: a second thread only adds overhead (and oversubscribes a busy CI machine)


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory) -> tuple[Path, Path]:
    """(fonts dir with 3 legible fonts, corpus statistics file with 12 short words)."""
    root = tmp_path_factory.mktemp("tiny_assets")
    fonts = root / "fonts"
    fonts.mkdir()
    for name in TINY_FONTS:
        shutil.copy(REPO_ROOT / "fonts" / "ttf" / name, fonts / name)
    corpus = root / "corpus.json"
    CorpusStats.from_text(TINY_WORDS).save(corpus)
    return fonts, corpus


def tiny_pretrain(out: Path, assets, steps: int, until: int | None = None, resume: bool = False, val_every: int = 100):
    """Pretrain the tiny model on the tiny world (clean style, no punctuation/number extras)."""
    from hwlearn.recipes import pretrain
    from hwlearn.train import TrainConfig

    fonts, corpus = assets
    config = TrainConfig(steps=steps, batch_size=16, lr=1e-2, warmup_steps=20, val_every=val_every, log_every=10,
                         num_workers=0, seed=1)
    return pretrain(out, fonts_dir=fonts, corpus=corpus, style="clean", config=config, val_size=48, device="cpu",
                    resume=resume, model_overrides=TINY_MODEL, progress=False, until=until,
                    sampler_options={"punct_share": 0.0, "number_share": 0.0, "date_share": 0.0, "case_share": 0.0})


def write_word_images(checkpoint: Path, folder: Path, n: int, seed: int, transform=None) -> list[str]:
    """Save ``n`` synthetic words rendered like ``checkpoint``'s pretraining data as ``folder/wNN.png``
    (through ``transform(image)`` when given), as a folder of unlabeled images; returns their words."""
    from PIL import Image

    from hwlearn.checkpoint import load_checkpoint
    from hwlearn.recipes import synthetic_like

    synthetic = synthetic_like(load_checkpoint(checkpoint), seed=seed)
    folder.mkdir(parents=True)
    words = []
    for i in range(n):
        img, word = synthetic[i]
        Image.fromarray(transform(img) if transform else img).save(folder / f"w{i:02d}.png")
        words.append(word)
    return words


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_assets) -> Path:
    """A run directory with a tiny model pretrained for 400 steps (best/, last/, metrics.jsonl).

    (300 steps were enough while batches mixed all widths; sorted by rendered width, a batch of this
    world's 3-letter words holds mostly one font, and the model needs ~400 steps: benchmarks/EXPERIMENTS.md.)"""
    out = tmp_path_factory.mktemp("tiny_run") / "run"
    tiny_pretrain(out, tiny_assets, steps=400)
    return out


def load_benchmark(name: str):
    """The script ``benchmarks/<name>.py`` as a module (benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
