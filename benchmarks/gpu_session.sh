#!/usr/bin/env bash
# The real-accuracy benchmark's `gpu` profile on a lent device machine, prepared ahead so that a
# lease (one H200, 16 cores, Python 3.12 with torch; 15 minutes of device time, at most 10 a call)
# goes to the runs. Two halves:
#
#   bash benchmarks/gpu_session.sh prepare     # here, before asking for the machine (~2 minutes)
#       packs GW and DHSD as grayscale PNGs under runs/packed (benchmarks/pack_dataset.py: the
#       device gets only the working tree, 64 MiB with what it carries; the data stays ignored) into
#       one archive .device/data.tgz, gzips the German word list into .device (its statistics are
#       built there: 7.2 MiB would not fit), downloads the wheels the machine lacks (nltk,
#       editdistance for CPython 3.12) into .whl, records the commit (the tree must be clean:
#       prepare again after each commit) and checks the size of what travels (~59 MiB).
#
#   then one device call, from the repository root:
#       run(command="bash benchmarks/gpu_session.sh", carry=[".whl", ".device"], timeout_s=600)
#
# then, if the lease has time left (status: budget_left_s) and the machine is still warm (30 s), a
# second call continues where the first stopped (finished steps are reused, an interrupted
# pretraining resumes from its last checkpoint, every 1000 steps):
#       run(command="BUDGET_S=<left - 40> bash benchmarks/gpu_session.sh", carry=[".whl", ".device"], ...)
#
# On the machine it installs the wheels, writes the environment to $OUT/env.txt, then runs the
# `gpu` profile on each of DATASETS (default "gw_words dhsd"; label-free on the train images, then
# the supervised bound), each under the time left of BUDGET_S (default 560 s). SMOKE=1 runs a
# smoke benchmark on the GPU first, SPEED=1 the training-speed benchmark; EXTRA_SET="--set K=V"
# changes the profile. Results come back in $OUT (8 files at most): env.txt, session.log (the end
# of each run's output), runs.tgz (every run's log, result JSON, steps, settings, evaluations; no
# weights) and each pretrained model in parts. Copy the JSONs to benchmarks/results/.
#
# The first lease (2026-12-04, H200, at bd21e1e): the base model pretrained at ~1340 images/s
# (batch 64, 14 rendering workers), so GW's 10000 steps alone need ~8.5 minutes, and one lease
# holds about one dataset (benchmarks/README.md, "gpu profile").
#
# A dry run on a CPU (no GPU, no Python 3.12) checks the script itself:
#   DEVICE=cpu PROFILE=smoke DHSD_SET="--set phrase_share=0.5" WHEELS=DIR_OF_CP311_WHEELS \
#       bash benchmarks/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "prepare" ]; then
    set -e
    if [ -n "$(git status --porcelain -- hwlearn benchmarks fonts corpora pyproject.toml)" ]; then
        echo "error: commit first: the device run records the commit it runs" >&2
        exit 1
    fi
    for name in gw_words dhsd; do  # packed once (~1 minute); delete runs/packed to pack again
        [ -f "runs/packed/$name/test.tsv" ] || python benchmarks/pack_dataset.py "../shared/data/$name" "runs/packed/$name"
    done
    # one archive, not ~9600 small files: the device tool counts what travels by more than the bytes
    # inside the files (a tree of 63 MiB of content was refused as over 64)
    rm -rf .device && mkdir -p .device
    tar czf .device/data.tgz -C runs/packed gw_words dhsd
    gzip -9c ../shared/corpora/wordlists/ngerman.txt > .device/ngerman.txt.gz  # its statistics (7.2 MiB) are built there
    rm -rf .whl && mkdir -p .whl
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "nltk==$(python -c 'import nltk; print(nltk.__version__)')" \
        "editdistance==$(python -c 'import importlib.metadata as m; print(m.version("editdistance"))')"
    git rev-parse HEAD > .device/COMMIT
    tracked=$(git ls-files -z | xargs -0 du -cb --apparent-size | tail -n 1 | cut -f1)
    carried=$(du -cb --apparent-size .device .whl | tail -n 1 | cut -f1)
    echo "travels: $(( (tracked + carried) / 1048576 )) MiB of at most 64 (tracked $((tracked / 1048576)), carried $((carried / 1048576)))"
    [ $((tracked + carried)) -lt $((60 * 1048576)) ] || { echo "error: too much to carry (kept under 60 MiB: the tool's count is larger)" >&2; exit 1; }
    exit 0
fi

OUT=${OUT:-runs/gpu_session_out}
DEVICE=${DEVICE:-cuda}
PROFILE=${PROFILE:-gpu}
WHEELS=${WHEELS:-.whl}
# DHSD's `cpu` command's settings, with 4000 pretraining steps rather than 7000: its phrases are about twice GW's
# words' width (mean rendered width at height 64: 331 vs 155 pixels), so 4000 steps should take about as long as
# GW's 8000 (an estimate: DHSD has not run on a GPU yet); the profile's 6 rounds rather than the `cpu` command's 8,
# and no student (the `gpu` profile has none), for the lease's time
DHSD_SET=${DHSD_SET:---set pretrain_steps=4000 --set phrase_share=0.5 --set max_len=32 --set char_floor=0.01}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export HWLEARN_COMMIT=$(cat .device/COMMIT 2>/dev/null || echo unknown)
deadline=$((SECONDS + ${BUDGET_S:-560}))

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    || { echo "error: could not install the carried wheels ($WHEELS: run 'prepare' here first)"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD

{
    echo "commit $HWLEARN_COMMIT"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 - <<'EOF'
import os, platform
import numpy, PIL, PIL.features, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "-", "bf16", torch.cuda.is_bf16_supported())
print("numpy", numpy.__version__, "pillow", PIL.__version__, "raqm", PIL.features.check("raqm"), "cpus", os.cpu_count())
EOF
} 2>&1 | tee "$OUT/env.txt"
mkdir -p runs/real_accuracy

left() { echo $((deadline - SECONDS)); }  # seconds of BUDGET_S left

if [ ! -f .device/data/dhsd/test.tsv ] && [ -f .device/data.tgz ]; then  # unpacked once per machine (~2 s)
    mkdir -p .device/data && tar xzf .device/data.tgz -C .device/data \
        || { echo "error: could not unpack .device/data.tgz"; exit 1; }
fi

if [ ! -f runs/corpora/de_ngerman.json ]; then  # DHSD's corpus, as benchmarks/README.md builds it (~5 s)
    mkdir -p runs/corpora
    gunzip -c .device/ngerman.txt.gz > /tmp/ngerman.txt && python3 -m hwlearn corpus --wordlist /tmp/ngerman.txt -o runs/corpora/de_ngerman.json > /tmp/corpus.log 2>&1 \
        || { tail -n 5 /tmp/corpus.log; echo "error: could not build the German corpus statistics"; exit 1; }
fi

# 1. optional (SMOKE=1): the GPU code paths at once (pretraining, adaptation, fine-tuning, evaluation, with enough
#    images that the search workers start: inference.PARALLEL_MIN_SEARCHES; ~1 minute). Off by default since
#    they all ran on an H200 at bd21e1e (2026-12-04); turn it on after changes to GPU code.
if [ "${SMOKE:-0}" = 1 ]; then
    timeout "$(left)" python3 benchmarks/real_accuracy.py .device/data/gw_words --profile smoke --device "$DEVICE" \
        --lexicon corpora/en_default.json --adapt-lexicon --out-dir "runs/real_accuracy/gw_words-smoke-$DEVICE" \
        --set max_train_images=100 --set max_test_images=150 \
        --json "runs/real_accuracy/gw_words-smoke-$DEVICE.json" > runs/real_accuracy/smoke.log 2>&1
    rc=$?
    tail -n 25 runs/real_accuracy/smoke.log | tee -a "$OUT/session.log"
    if [ $rc -ne 0 ]; then
        cp runs/real_accuracy/smoke.log "$OUT/"
        echo "error: the smoke run failed on $DEVICE (rc $rc): $OUT/smoke.log"
        exit $rc
    fi
fi

# 2. optional (SPEED=1): training and recognition speed per preset (rendering excluded; ~1 minute; measured on an
#    H200 at bd21e1e: benchmarks/results/train_speed-cuda-h200-2026-12-04.json)
if [ "${SPEED:-0}" = 1 ] && [ "$(left)" -gt 60 ]; then  # (timeout 0 would mean no limit)
    timeout "$(left)" python3 benchmarks/train_speed.py --devices "$DEVICE" --presets small,base --batch-size 32 --steps 30 \
        --out runs/real_accuracy/train_speed.json 2>&1 | tail -n 12 | tee -a "$OUT/session.log"
fi

# 3. the `gpu` profile on each of DATASETS in turn (default: GW, then DHSD; each continues where an earlier call on
#    the same machine stopped). The pretrained model comes back too, in parts of 15 MiB (files back are at most
#    16 MiB; `cat PARTS | tar x` joins them), so that a CPU session can adapt it (--skip-pretrain) whatever the
#    lease had left for the rest.
for name in ${DATASETS:-gw_words dhsd}; do
    [ "$(left)" -gt 60 ] || { echo "no time left for $name" | tee -a "$OUT/session.log"; break; }
    case $name in
        gw_words) args="--lexicon corpora/en_default.json --adapt-lexicon --set style=historical --set break_share=0.02" ;;
        dhsd) args="--corpus runs/corpora/de_ngerman.json $DHSD_SET" ;;
        *) echo "error: unknown dataset $name (gw_words, dhsd)"; exit 1 ;;
    esac
    run="runs/real_accuracy/$name-$PROFILE"
    timeout "$(($(left) - 20))" python3 benchmarks/real_accuracy.py ".device/data/$name" --profile "$PROFILE" \
        --device "$DEVICE" $args ${EXTRA_SET:-} --systems label_free,supervised --out-dir "$run" \
        --json "$run.json" 2>&1 | grep -v "━" >> "$run.log"
    echo "$name rc ${PIPESTATUS[0]}" | tee -a "$OUT/session.log"; tail -n 20 "$run.log" | tee -a "$OUT/session.log"
    if [ -f "$run/pretrain/best/model.safetensors" ]; then
        tar cf - -C "$run" pretrain/best | split -b 15m - "$OUT/$name-$PROFILE-pretrain-best.tar.part-"
    fi
done
# at most 8 files back: env.txt, session.log, runs.tgz and two checkpoint parts per dataset
tar czf "$OUT/runs.tgz" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.npy' runs/real_accuracy 2>/dev/null
ls -la "$OUT"
