"""How fast hwlearn renders synthetic word images, compared with trdg on the same words and fonts.

    python benchmarks/render_speed.py [--words 2000] [--height 64] [--style default]
                                      [--workers K] [--trdg-python PATH] [--repeats 3]

Measures images/s of ``hwlearn.render.Renderer.render`` at height 64 with the bundled fonts,
in one process and in K worker processes (default: all cores), on one fixed list of words
(sampled from the bundled corpus with a fixed seed; word j rendered with rng ``[seed, j]``).
Then renders the same words with trdg's ``GeneratorFromStrings`` (each word with a font drawn
from the same fonts that cover it), in the same run, and prints the ratios. Each measurement is
repeated ``--repeats`` times, hwlearn and trdg interleaved, and the best run counts (the machine
may be shared). Process start-up and a warm-up are not timed, on either side.

trdg pins old dependencies (Pillow < 10 for ``FreeTypeFont.getsize``, ``arabic-reshaper==2.1.3``
whose metadata recent pip rejects), so it lives in its own virtualenv; this script runs its trdg
half there as a subprocess (``--trdg-python``, ``$TRDG_PYTHON``, or ``.venv-trdg/bin/python``
in the repository, else this interpreter if it imports trdg). See benchmarks/README.md.

Writes ``benchmarks/results/render_speed-<host>-<date>.json`` (machine, versions, commit,
command, results) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHUNK = 50  #: words per task sent to a worker process
#: The files whose code is measured: a run's commit is marked "+dirty" when they differ from it.
MEASURED_FILES = ["hwlearn/render.py", "hwlearn/fonts.py", "hwlearn/corpus.py", "hwlearn/synth.py",
                  "hwlearn/charset.py", "benchmarks/render_speed.py"]

#: trdg settings chosen to match what hwlearn's default style does, as far as trdg can:
#: rotation of a few degrees, a wavy (random-offset) distortion, a noisy paper background,
#: a light random blur, grayscale output of fixed height. trdg has no slant (shear), no stroke
#: width or ink-contrast variation, no elastic distortion and no paper texture beyond noise.
TRDG_SETTINGS = dict(
    skewing_angle=3,
    random_skew=True,
    blur=1,
    random_blur=True,
    background_type=0,  # gaussian noise "paper"
    distorsion_type=3,  # random per-column offsets
    distorsion_orientation=0,  # vertical offsets only
    margins=(4, 4, 4, 4),
    image_mode="L",
)


# -- the trdg half (runs with only the standard library + trdg: it may run in trdg's own venv) --


def _trdg_render(words: list[str], fonts: list[str], size: int) -> int:
    """Render ``words[j]`` with ``fonts[j]`` through trdg; returns how many images came back."""
    import numpy as np
    from trdg.generators import GeneratorFromStrings

    generator = GeneratorFromStrings(words, count=len(words), fonts=fonts, size=size, **TRDG_SETTINGS)
    made = 0
    for image, _label in generator:
        if image is not None:  # trdg drops an image whose ink is too close to the paper
            np.asarray(image)  # the same end product as hwlearn's: a uint8 array
            made += 1
    return made


def _trdg_chunk(args) -> int:
    return _trdg_render(*args)


def _trdg_versions() -> dict:
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        **{pkg: version(pkg) for pkg in ("trdg", "pillow", "numpy", "opencv-python-headless") if _has(pkg)},
    }


def _has(pkg: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(pkg)
        return True
    except PackageNotFoundError:
        return False


def trdg_measure(spec: dict) -> dict:
    """Time trdg on ``spec`` (words, fonts, size, workers): once in this process, once in a pool."""
    words, fonts, size, workers = spec["words"], spec["fonts"], spec["size"], spec["workers"]
    chunks = [(words[i : i + CHUNK], fonts[i : i + CHUNK], size) for i in range(0, len(words), CHUNK)]
    _trdg_render(words[:20], fonts[:20], size)  # warm-up (imports, first font loads)
    with get_context("spawn").Pool(workers) as pool:
        pool.map(_trdg_chunk, chunks[:workers])  # warm-up of every worker
        return {"versions": _trdg_versions(), **_time_both(lambda: _trdg_render(words, fonts, size),
                                                           lambda: sum(pool.map(_trdg_chunk, chunks)))}


def _time_both(single, multi) -> dict:
    """``{"single": {images, seconds}, "multi": {...}}`` of two callables returning image counts."""
    result = {}
    for key, run in (("single", single), ("multi", multi)):
        t = time.perf_counter()
        made = run()
        result[key] = {"images": made, "seconds": round(time.perf_counter() - t, 4)}
    return result


# -- the hwlearn half ---------------------------------------------------------------------------

_RENDERER = None


def _hw_init(renderer) -> None:
    global _RENDERER
    _RENDERER = renderer


def _hw_chunk(args) -> int:
    import numpy as np

    words, seed, start = args
    for j, word in enumerate(words, start):
        _RENDERER.render(word, np.random.default_rng([seed, j]))
    return len(words)


def measure(renderer, words: list[str], seed: int, workers: int, repeats: int, trdg=None) -> tuple[list, list]:
    """``repeats`` timings of hwlearn on ``words`` (one process, then ``workers`` processes),
    each followed by one of ``trdg()`` when given, so both see the same machine load."""
    _hw_init(renderer)
    _hw_chunk((words[:20], seed, 0))  # warm-up (font cache)
    chunks = [(words[i : i + CHUNK], seed, i) for i in range(0, len(words), CHUNK)]
    hw_runs, trdg_runs = [], []
    with get_context("spawn").Pool(workers, initializer=_hw_init, initargs=(renderer,)) as pool:
        pool.map(_hw_chunk, chunks[:workers])  # warm-up of every worker
        for _ in range(repeats):
            hw_runs.append(_time_both(lambda: _hw_chunk((words, seed, 0)),
                                      lambda: sum(pool.map(_hw_chunk, chunks))))
            if trdg is not None:
                trdg_runs.append(trdg())
    return hw_runs, trdg_runs


def _paired_median(hw_runs: list[dict], trdg_runs: list[dict], key: str) -> float:
    """Median over repeats of hwlearn / trdg images/s, each pair measured back to back."""
    import statistics

    def rate(run: dict) -> float:
        return run[key]["images"] / run[key]["seconds"]

    return statistics.median(rate(h) / rate(t) for h, t in zip(hw_runs, trdg_runs))


def _best_rate(runs: list[dict], key: str) -> float:
    """The best images/s of ``runs[*][key]`` (best, not mean: other load only slows a run down)."""
    return max(r[key]["images"] / r[key]["seconds"] for r in runs)


# -- running trdg somewhere ---------------------------------------------------------------------


def find_trdg_python(explicit: str | None) -> str | None:
    """An interpreter that imports trdg: ``explicit``, ``$TRDG_PYTHON``, ``.venv-trdg``, or this one."""
    candidates = [explicit, os.environ.get("TRDG_PYTHON"), str(REPO / ".venv-trdg" / "bin" / "python"), sys.executable]
    for python in candidates:
        if python and Path(python).exists():
            ok = subprocess.run([python, "-c", "import trdg.generators"], capture_output=True).returncode == 0
            if ok:
                return python
            if python == explicit:
                sys.exit(f"error: {python} cannot import trdg")
    return None


def run_trdg(python: str, spec: dict) -> dict:
    """Run :func:`trdg_measure` on ``spec`` with interpreter ``python`` (a subprocess)."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        done = subprocess.run(
            [python, str(Path(__file__).resolve()), "--trdg-worker", str(spec_path)],
            capture_output=True, text=True,
        )
    if done.returncode != 0:
        raise RuntimeError(f"trdg run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- machine description ------------------------------------------------------------------------


def code_state(paths) -> tuple[str, bool]:
    """``(commit, dirty)``: the commit the code runs at, and whether ``paths`` (git pathspecs) differ from it.
    A device machine's copy of the tree has a stale ``.git``: benchmarks/gpu_session.sh passes the commit in
    ``HWLEARN_COMMIT`` (its ``prepare`` checks the tree is clean)."""
    if os.environ.get("HWLEARN_COMMIT"):
        return os.environ["HWLEARN_COMMIT"], False

    def git(*cmd):
        return subprocess.run(["git", "-C", str(REPO), *cmd], capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "HEAD") or "unknown", bool(git("status", "--porcelain", "--", *paths))


def machine() -> dict:
    from importlib.metadata import version

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit, dirty = code_state(MEASURED_FILES)
    from hwlearn.synth import available_cores

    return {
        "host": socket.gethostname(),
        "cpu": cpu,
        "cores": available_cores(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": version("torch"),
        "pillow": version("pillow"),
        "numpy": version("numpy"),
        "hwlearn": __import__("hwlearn").__version__,  # not version(): a device machine runs the tree uninstalled
        "commit": commit + ("+dirty" if dirty else ""),
    }


# -- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, default=2000, help="number of words rendered per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--style", default="default")
    parser.add_argument("--fonts", default=None, help="fonts dir (default: bundled)")
    parser.add_argument("--corpus", default=None, help="corpus statistics (default: bundled)")
    parser.add_argument("--workers", type=int, default=None, help="processes for the all-cores run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trdg-python", default=None, help="interpreter that imports trdg")
    parser.add_argument("--no-trdg", action="store_true")
    parser.add_argument("--out", default=None, help="JSON result path (default: benchmarks/results/...)")
    parser.add_argument("--trdg-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trdg_worker:  # we are the trdg subprocess
        print(json.dumps(trdg_measure(json.loads(Path(args.trdg_worker).read_text(encoding="utf-8")))))
        return

    import numpy as np
    from rich.table import Table

    from hwlearn.console import console
    from hwlearn.fonts import FontLibrary
    from hwlearn.synth import available_cores, build_synthetic

    workers = args.workers or available_cores()
    dataset = build_synthetic(fonts_dir=args.fonts, corpus=args.corpus, height=args.height, style=args.style,
                              seed=args.seed, length=args.words)
    words = [dataset.word(i) for i in range(args.words)]
    fonts = FontLibrary.scan(dataset.info["fonts"])
    pick = np.random.default_rng(args.seed)
    word_fonts = []
    for word in words:  # trdg: a font that covers the word, drawn like hwlearn draws one
        covering = fonts.covering(word)
        word_fonts.append(str(covering[int(pick.integers(len(covering)))].path))

    trdg_python = None if args.no_trdg else find_trdg_python(args.trdg_python)
    spec = {"words": words, "fonts": word_fonts, "size": args.height, "workers": workers}
    console.print(f"rendering {len(words)} words x {args.repeats} repeats, in 1 and {workers} processes; "
                  + (f"trdg via {trdg_python}" if trdg_python else "trdg not available"))
    hw_runs, trdg_runs = measure(dataset.renderer, words, args.seed, workers, args.repeats,
                                 trdg=(lambda: run_trdg(trdg_python, spec)) if trdg_python else None)

    rates = {("hwlearn", k): _best_rate(hw_runs, k) for k in ("single", "multi")}
    if trdg_runs:
        rates.update({("trdg", k): _best_rate(trdg_runs, k) for k in ("single", "multi")})
    procs = {"single": 1, "multi": workers}
    result = {
        "benchmark": "render_speed",
        "date": date.today().isoformat(),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
        "settings": {
            "words": len(words), "seed": args.seed, "height": args.height, "style": args.style,
            "fonts": dataset.info["fonts"], "num_fonts": dataset.info["num_fonts"],
            "corpus": dataset.info["corpus"], "workers": workers, "repeats": args.repeats,
            "trdg": {**TRDG_SETTINGS, "size": args.height, "python": trdg_python} if trdg_runs else None,
        },
        "trdg_versions": trdg_runs[0].pop("versions") if trdg_runs else "trdg not available",
        "runs": {"hwlearn": hw_runs, "trdg": [{k: r[k] for k in ("single", "multi")} for r in trdg_runs]},
        "images_per_second": {f"{name}_{k}": round(v, 1) for (name, k), v in rates.items()},
        "images_per_second_per_core": {f"{name}_{k}": round(v / procs[k], 1) for (name, k), v in rates.items()},
    }
    if trdg_runs:
        result["speedup_vs_trdg"] = {k: round(rates["hwlearn", k] / rates["trdg", k], 2) for k in ("single", "multi")}
        result["speedup_vs_trdg_paired_median"] = {k: round(_paired_median(hw_runs, trdg_runs, k), 2)
                                                   for k in ("single", "multi")}

    out = Path(args.out) if args.out else (
        REPO / "benchmarks" / "results" / f"render_speed-{_slug(socket.gethostname())}-{result['date']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    table = Table(title=f"render speed: height {args.height}, {len(words)} words, best of {args.repeats}")
    for col in ("renderer", "processes", "images/s", "images/s per core", "hwlearn / trdg"):
        table.add_column(col, justify="left" if col == "renderer" else "right")
    for (name, k), rate in rates.items():
        ratio = f"{rates[name, k] / rates['trdg', k]:.2f}x" if trdg_runs and name == "hwlearn" else ""
        table.add_row(name, str(procs[k]), f"{rate:,.0f}", f"{rate / procs[k]:,.0f}", ratio)
    if not trdg_runs:
        table.add_row("trdg", "-", "not available", "", "")
    console.print(table)
    if trdg_runs:
        paired = result["speedup_vs_trdg_paired_median"]
        console.print(f"hwlearn / trdg, median of back-to-back pairs: {paired['single']:.2f}x in one process, "
                      f"{paired['multi']:.2f}x with {workers}")
    m = result["machine"]
    console.print(f"machine: {m['cpu']}, {m['cores']} cores, load {m['load_average']}; wrote {out}")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)


if __name__ == "__main__":
    main()
