"""Copy a labeled dataset as the grayscale images hwlearn reads, to carry it to a device machine.

    python benchmarks/pack_dataset.py ../shared/data/dhsd .device/data/dhsd [--splits train,test]

A device machine gets only the repository's working tree (at most 64 MiB with what it carries), and
the real datasets live outside it (``../shared/data``, never committed). This writes each image of
``DATASET/<split>.tsv`` as the 8-bit grayscale PNG that ``hwlearn.data.load_image`` makes of it
(transparency laid on white paper, colour to luminance), at the same relative path, and copies the
label files unchanged; every written image is read back and compared pixel for pixel with what
``load_image`` gives for the original, so a benchmark on the copy sees the same inputs.
DHSD (RGBA, 80 MB) becomes ~21 MiB, GW (already grayscale) ~27 MiB.

Write the copy under a folder git ignores (``.device/`` is in ``.gitignore``): the datasets are
never committed. ``benchmarks/gpu_session.sh`` says how a device call carries it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hwlearn.data import load_image, read_labels  # noqa: E402
from hwlearn.errors import HwlearnError  # noqa: E402


def pack(dataset: Path, out: Path, splits: list[str]) -> tuple[int, int]:
    """Writes the packed copy; returns ``(images, bytes written)``."""
    dataset, out = dataset.resolve(), out.resolve()
    if out == dataset:
        raise HwlearnError(f"{out}: the copy must go to another folder than the dataset")
    done: set[Path] = set()
    written = 0
    for split in splits:
        labels = dataset / f"{split}.tsv"
        if not labels.is_file():
            raise HwlearnError(f"{labels}: no such label file")
        for image, _ in read_labels(labels, format="tsv"):
            image = image.resolve()
            if image in done:
                continue
            try:
                rel = image.relative_to(dataset)
            except ValueError:
                raise HwlearnError(f"{labels}: {image} lies outside the dataset folder") from None
            if image.suffix.lower() != ".png":
                raise HwlearnError(f"{image}: only PNG images are packed (the label files keep their paths)")
            pixels = load_image(image)  # raises HwlearnError naming the file for a missing/corrupt image
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(target, format="PNG", optimize=True)
            if not np.array_equal(load_image(target), pixels):
                raise HwlearnError(f"{target}: reads back different from {image}")
            written += target.stat().st_size
            done.add(image)
        shutil.copyfile(labels, out / labels.name)
    return len(done), written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1] if __doc__ else None,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path, help="folder with train.tsv / test.tsv (relative image paths)")
    ap.add_argument("out", type=Path, help="folder for the grayscale copy (under a git-ignored folder)")
    ap.add_argument("--splits", default="train,test", help="label files to pack (default: train,test)")
    args = ap.parse_args(argv)
    try:
        n, size = pack(args.dataset, args.out, [s for s in args.splits.split(",") if s])
    except HwlearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.out}: {n} images, {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
