"""benchmarks/pack_dataset.py: the grayscale copy of a dataset reads exactly as the original."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hwlearn.data import load_image
from hwlearn.errors import HwlearnError

from conftest import load_benchmark

pack_dataset = load_benchmark("pack_dataset")


def _dataset(root):
    """An RGBA image (ink on transparent paper, as DHSD's), a colour one and a grayscale one."""
    rng = np.random.default_rng(0)
    (root / "images" / "w1").mkdir(parents=True)
    rgba = np.zeros((16, 40, 4), np.uint8)
    rgba[..., 3] = rng.integers(0, 256, (16, 40))  # ink only in the alpha channel
    Image.fromarray(rgba).save(root / "images" / "w1" / "a.png")
    Image.fromarray(rng.integers(0, 256, (16, 30, 3), dtype=np.uint8)).save(root / "images" / "b.png")
    Image.fromarray(rng.integers(0, 256, (16, 20), dtype=np.uint8)).save(root / "images" / "c.png")
    (root / "train.tsv").write_text("images/w1/a.png\tGroß Köris\nimages/b.png\tbe\n", encoding="utf-8")
    (root / "test.tsv").write_text("images/c.png\tsee\nimages/b.png\tbe\n", encoding="utf-8")
    return root


def test_copy_reads_the_same_pixels_and_labels(tmp_path):
    src = _dataset(tmp_path / "src")
    n, size = pack_dataset.pack(src, tmp_path / "out", ["train", "test"])
    assert n == 3 and size > 0  # b.png is in both splits, written once
    for rel in ("images/w1/a.png", "images/b.png", "images/c.png"):
        copy = tmp_path / "out" / rel
        with Image.open(copy) as im:
            assert im.mode == "L"
        assert np.array_equal(load_image(copy), load_image(src / rel))
    for split in ("train", "test"):
        assert (tmp_path / "out" / f"{split}.tsv").read_bytes() == (src / f"{split}.tsv").read_bytes()


def test_bad_input_names_the_file(tmp_path, capsys):
    src = _dataset(tmp_path / "src")
    (src / "images" / "c.png").write_bytes(b"not a png")
    with pytest.raises(HwlearnError, match="c.png"):
        pack_dataset.pack(src, tmp_path / "out", ["train", "test"])
    assert pack_dataset.main([str(src), str(tmp_path / "out2"), "--splits", "nosuch"]) == 1
    assert "nosuch.tsv: no such label file" in capsys.readouterr().err
    with pytest.raises(HwlearnError, match="another folder"):
        pack_dataset.pack(src, src, ["train"])
