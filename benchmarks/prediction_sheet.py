"""A picture of predictions before and after adaptation, from a real_accuracy.py run directory.

    python benchmarks/prediction_sheet.py RUN_DIR -o docs/gw_predictions.png [--n 24] [--seed 0]
        [--before synthetic_only] [--after label_free] [--cols 4] [--cell-width 300]

Reads ``RUN/eval/<before>.csv`` and ``RUN/eval/<after>.csv`` (one row per test image, written by
``hwlearn evaluate --csv``) and draws ``--n`` test images chosen at random with ``--seed`` (not
picked by hand), each labeled ``reference | prediction before → prediction after``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hwlearn.data import load_image  # noqa: E402
from hwlearn.render import contact_sheet  # noqa: E402


def read_rows(path: Path) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return {row["image"]: row for row in csv.DictReader(f)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--before", default="synthetic_only")
    ap.add_argument("--after", default="label_free")
    ap.add_argument("--cols", type=int, default=4)
    ap.add_argument("--cell-width", type=int, default=300, help="pixels per column (long labels need more)")
    args = ap.parse_args()

    before = read_rows(args.run_dir / "eval" / f"{args.before}.csv")
    after = read_rows(args.run_dir / "eval" / f"{args.after}.csv")
    images = sorted(set(before) & set(after))
    pick = np.random.default_rng(args.seed).choice(len(images), size=min(args.n, len(images)), replace=False)
    tiles, labels = [], []
    for i in sorted(pick):
        path = images[i]
        tiles.append(load_image(path))
        labels.append(f"{before[path]['reference']} | {before[path]['prediction']} → {after[path]['prediction']}")
    sheet = contact_sheet(tiles, labels, cols=args.cols, cell_height=48, cell_width=args.cell_width,
                          label_chars=args.cell_width // 6)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}: {len(tiles)} test images, label = reference | {args.before} → {args.after}")


if __name__ == "__main__":
    main()
