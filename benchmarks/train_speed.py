"""How fast hwlearn trains and recognizes, per model preset, on the machine at hand.

    python benchmarks/train_speed.py [--presets small,base] [--batch-size 32] [--steps 30]
                                     [--devices cpu,cuda] [--threads N] [--amps auto,off]

For each preset and device: renders 512 synthetic words (bundled fonts and corpus, default
style) at the preset's height once, then times

* training: forward + CTC loss + backward + AdamW step, through ``Trainer.train_step`` (the code
  every training command runs), on batches of ``--batch-size`` width-bucketed images, after a
  few warm-up steps; with each of ``--amps`` (``TrainConfig.amp``: ``auto`` is bf16 autocast on CUDA and
  float32 on the CPU, ``bf16`` bf16 autocast on either, ``off`` float32). ``Trainer.fit`` gives each of a
  CPU batch's two parts half the training's torch threads; here each part gets ``--threads``, so on 2
  cores ``--threads 1`` is what training does;
* recognition: forward + greedy decoding with confidence (``inference.predict``), batch 64.

Rendering is excluded (see render_speed.py; it runs in DataLoader workers in parallel).
Writes ``benchmarks/results/train_speed-<host>-<date>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hwlearn.data import collate  # noqa: E402
from hwlearn.inference import materialize, predict  # noqa: E402
from hwlearn.model import PRESETS, create_model  # noqa: E402
from hwlearn.synth import build_synthetic  # noqa: E402
from hwlearn.train import ModelInputs, Source, Trainer, TrainConfig  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from render_speed import machine  # noqa: E402  (one description of the machine for every benchmark)


def bench(preset: str, device: str, batch_size: int, steps: int, threads: int | None, amp: str = "auto") -> dict:
    height = PRESETS[preset].height
    synthetic = build_synthetic(height=height, seed=123, length=512)
    items = materialize(ModelInputs(synthetic, height))
    charset_string = synthetic.info["charset"]
    from hwlearn.charset import Charset

    charset = Charset.from_string(charset_string)
    torch.manual_seed(0)
    if threads:  # TrainConfig.threads only acts in Trainer.fit; this benchmark calls train_step directly
        torch.set_num_threads(threads)
    model = create_model(preset, charset.num_classes)
    config = TrainConfig(steps=10**6, batch_size=batch_size, num_workers=0, warmup_steps=1, amp=amp)
    trainer = Trainer(model, charset, [Source(items)], "/tmp/hwlearn-train-speed", config, device=device)
    # width-bucketed batches, as in training
    order = sorted(range(len(items)), key=lambda i: items[i][0].shape[-1])
    batches = [collate([items[i] for i in order[s:s + batch_size]]) for s in range(0, len(order), batch_size)]
    rng = np.random.default_rng(0)
    warmup = 3
    sequence = [batches[int(rng.integers(len(batches)))] for _ in range(steps + warmup)]
    for images, widths, texts in sequence[:warmup]:
        trainer.train_step(images, widths, texts)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    n = 0
    for images, widths, texts in sequence[warmup:]:
        trainer.train_step(images, widths, texts)
        n += len(texts)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    train_rate = n / (time.perf_counter() - t)
    predict(trainer.model, items[:64], charset, device=trainer.device)
    t = time.perf_counter()
    predict(trainer.model, items, charset, device=trainer.device, batch_size=64)
    recog_rate = len(items) / (time.perf_counter() - t)
    widths = [it[0].shape[-1] for it in items]
    return {
        "preset": preset,
        "device": str(trainer.device),
        "threads": torch.get_num_threads(),
        "amp": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "off",
        "params": sum(p.numel() for p in model.parameters()),
        "height": height,
        "mean_width": round(float(np.mean(widths)), 1),
        "batch_size": batch_size,
        "train_images_per_s": round(train_rate, 1),
        "recognize_words_per_s": round(recog_rate, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="small,base")
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    ap.add_argument("--amps", default="auto", help="TrainConfig.amp values to time, e.g. off,bf16")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    rows = []
    for device in args.devices.split(","):
        for preset in args.presets.split(","):
            for amp in args.amps.split(","):
                threads = args.threads or len(__import__("os").sched_getaffinity(0))
                rows.append(bench(preset, device, args.batch_size, args.steps, threads if device == "cpu" else None, amp))
                print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "train_speed", "date": date.today().isoformat(), "machine": machine(),
              "command": " ".join(["python"] + sys.argv), "results": rows}
    out = args.out or REPO / "benchmarks" / "results" / f"train_speed-{socket.gethostname()}-{date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"training / recognition speed ({result['machine']['cpu']}, {result['machine']['cores']} cores)")
    for col in ("preset", "device", "threads", "amp", "params", "input (h x mean w)", "batch", "train img/s", "recognize words/s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["preset"], r["device"], str(r["threads"]), r["amp"], f"{r['params'] / 1e6:.2f} M",
                      f"{r['height']} x {r['mean_width']}", str(r["batch_size"]), f"{r['train_images_per_s']:.0f}",
                      f"{r['recognize_words_per_s']:.0f}")
    Console().print(table)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
