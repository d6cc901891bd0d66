"""The whole label-free loop on bundled data, runnable on a laptop CPU (``hwlearn demo``).

Real scans are not bundled, so the demo makes a target domain the model has never seen:
words rendered with *held-out fonts* and the stronger ``hard`` render style. Then:

1. pretrain a small model on synthetic words from the other fonts (``default`` style);
2. evaluate it on the target domain (its labels are kept aside for scoring only);
3. adapt it to the target images without their labels (``hwlearn adapt``), with the corpus as
   the pseudo-labels' lexicon (``--lexicon``, as recommended for your own scans when a word list
   of their language is at hand);
4. evaluate again and print CER/WER before and after (greedy decoding, no lexicon).

Every step is the same library call the individual commands use; the output directory holds
each step's checkpoints and metrics.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .console import console
from .errors import HwlearnError


@dataclass
class DemoConfig:
    pretrain_steps: int = 1500
    batch_size: int = 32
    target_size: int = 400
    held_out_fraction: float = 0.2
    adapt_rounds: int = 2
    adapt_steps: int = 250
    # steps on the matched fonts' words before round 1 (hwlearn adapt's 2000 would outlast this pretraining)
    adapt_font_steps: int = 250
    workers: int = 2
    seed: int = 0
    device: str = "auto"


@dataclass
class DemoResult:
    before: dict
    after: dict
    chosen: str  # the round (or student) adaptation chose: "round 2", "student"
    seconds: dict = field(default_factory=dict)


def _copy_fonts(library, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for font in library.fonts:
        shutil.copy2(font.path, out / Path(font.path).name)
    return out


def run_demo(out_dir: str | Path, config: DemoConfig = DemoConfig(), fonts_dir=None, corpus=None,
             overwrite: bool = False) -> DemoResult:
    """Run the demo into ``out_dir``; see the module docstring."""
    from .fonts import FontLibrary
    from .paths import default_corpus_path, default_fonts_dir
    from .recipes import adapt_folder, evaluate, pretrain
    from .selftrain import AdaptConfig
    from .synth import build_synthetic, write_dataset
    from .train import TrainConfig

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise HwlearnError(f"{out}: not empty; use --overwrite to replace the previous demo run")
        shutil.rmtree(out)
    seconds: dict = {}
    t0 = time.perf_counter()

    # fonts: most for pretraining, the rest only for the target domain
    library = FontLibrary.scan(fonts_dir or default_fonts_dir())
    source_fonts, target_fonts = library.split(config.held_out_fraction, seed=config.seed)
    source_dir = _copy_fonts(source_fonts, out / "fonts_source")
    target_dir = _copy_fonts(target_fonts, out / "fonts_target")
    console.rule("[bold]1. target domain")
    console.print(f"{len(source_fonts)} fonts for pretraining; {len(target_fonts)} held out for the target domain: "
                  + ", ".join(f.name for f in target_fonts.fonts))

    # the target domain: held-out fonts, hard style, labels kept aside for scoring
    target = build_synthetic(target_dir, corpus, height=64, style="hard", seed=config.seed + 31337,
                             length=config.target_size)
    write_dataset(out / "target", target, n=config.target_size, workers=config.workers or 1, progress=True)
    target_labels = out / "target" / "labels.tsv"
    seconds["target"] = round(time.perf_counter() - t0, 1)

    console.rule("[bold]2. pretrain on synthetic words (source fonts)")
    t = time.perf_counter()
    pretrain(out / "pretrain", preset="small", fonts_dir=source_dir, corpus=corpus, style="default",
             config=TrainConfig(steps=config.pretrain_steps, batch_size=config.batch_size,
                                val_every=max(100, config.pretrain_steps // 5), num_workers=config.workers,
                                seed=config.seed),
             val_size=300, device=config.device)
    seconds["pretrain"] = round(time.perf_counter() - t, 1)

    console.rule("[bold]3. evaluate before adaptation")
    # greedy readings only: the demo compares the model before and after, not decodings
    before = evaluate(out / "pretrain" / "best", target_labels, charlm_source=None,
                      device=config.device)["results"]["greedy"]
    console.print(f"target domain before adaptation: CER {before['cer']:.4f}  WER {before['wer']:.4f}")

    console.rule("[bold]4. adapt to the target images without their labels (corpus words as the lexicon)")
    t = time.perf_counter()
    result = adapt_folder(
        out / "pretrain" / "best", out / "target" / "images", out / "adapt",
        lexicon_source=corpus or default_corpus_path(),
        config=AdaptConfig(rounds=config.adapt_rounds, steps_per_round=config.adapt_steps, batch_size=config.batch_size,
                           font_steps=config.adapt_font_steps, num_workers=config.workers, seed=config.seed),
        device=config.device,
        report=lambda r: console.print(f"{r.name}: selected {r.selected}/{r.labeled}, "
                                       f"mean confidence {r.mean_confidence:.4f}"),
    )
    seconds["adapt"] = round(time.perf_counter() - t, 1)

    console.rule("[bold]5. evaluate after adaptation")
    after = evaluate(result.final_checkpoint, target_labels, charlm_source=None, device=config.device)["results"]["greedy"]
    seconds["total"] = round(time.perf_counter() - t0, 1)
    demo = DemoResult(before, after, result.chosen.name, seconds)
    (out / "demo_result.json").write_text(json.dumps({"config": asdict(config), **asdict(demo)}, indent=2),
                                          encoding="utf-8")
    return demo
