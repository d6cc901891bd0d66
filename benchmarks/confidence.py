"""Does the per-word confidence mean something? CER of the most- vs least-confident half.

    python benchmarks/confidence.py --model runs/pre/best [--n 1000] [--seed 424242] [--style default]
                                    [--lexicon corpora/en_default.json] [--labels real.tsv]

Renders ``--n`` held-out synthetic words made like the checkpoint's training data (same fonts,
corpus, sampler options; a seed the training never used) — or reads a labeled set with
``--labels`` — recognizes them, ranks them by confidence (:func:`hwlearn.decode.sequence_confidence`)
and reports the corpus CER of the most-confident and least-confident halves (and quartiles).
Self-training selects pseudo-labels by exactly this ranking, so the gap is what makes it work.
Writes ``benchmarks/results/confidence-<host>-<date>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hwlearn.checkpoint import load_checkpoint  # noqa: E402
from hwlearn.data import load_image, read_labels, to_model_input  # noqa: E402
from hwlearn.inference import materialize, predict  # noqa: E402
from hwlearn.metrics import cer  # noqa: E402
from hwlearn.recipes import load_lexicon, synthetic_like  # noqa: E402
from hwlearn.train import ModelInputs  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from render_speed import machine  # noqa: E402


def split_report(refs, preds) -> dict:
    order = sorted(range(len(preds)), key=lambda i: -preds[i].confidence)
    n = len(order)

    def part(idx):
        return {"n": len(idx), "cer": cer([refs[i] for i in idx], [preds[i].text for i in idx]),
                "mean_confidence": sum(preds[i].confidence for i in idx) / max(1, len(idx))}

    quarters = [order[k * n // 4:(k + 1) * n // 4] for k in range(4)]
    return {
        "all": part(order),
        "most_confident_half": part(order[: n // 2]),
        "least_confident_half": part(order[n // 2:]),
        "quartiles_most_to_least": [part(q) for q in quarters],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=424242)
    ap.add_argument("--labels", type=Path, default=None, help="use a labeled set instead of synthetic words")
    ap.add_argument("--lexicon", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    ckpt = load_checkpoint(args.model)
    if args.labels:
        items = [(to_model_input(load_image(p), ckpt.height), t) for p, t in read_labels(args.labels)]
        source = str(args.labels)
    else:
        synthetic = synthetic_like(ckpt, seed=args.seed)
        synthetic.length = args.n
        items = materialize(ModelInputs(synthetic, ckpt.height))
        source = f"held-out synthetic words (seed {args.seed})"
    refs = [t for _, t in items]
    lexicon = load_lexicon(args.lexicon, ckpt.charset) if args.lexicon else None
    report = {}
    for method in ("greedy", "lexicon") if lexicon else ("greedy",):
        preds = predict(ckpt.model, items, ckpt.charset, method=method, lexicon=lexicon)
        report[method] = split_report(refs, preds)

    result = {"benchmark": "confidence", "date": date.today().isoformat(), "machine": machine(),
              "command": " ".join(["python"] + sys.argv), "model": str(args.model), "data": source,
              "n": len(items), "results": report}
    out = args.out or REPO / "benchmarks" / "results" / f"confidence-{socket.gethostname()}-{date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"CER by confidence rank: {source}, {len(items)} words")
    for col in ("decoding", "all", "most-confident half", "least-confident half", "quartiles (most → least)"):
        table.add_column(col, justify="right")
    for method, r in report.items():
        table.add_row(method, f"{r['all']['cer']:.4f}", f"{r['most_confident_half']['cer']:.4f}",
                      f"{r['least_confident_half']['cer']:.4f}",
                      " / ".join(f"{q['cer']:.3f}" for q in r["quartiles_most_to_least"]))
    Console().print(table)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
