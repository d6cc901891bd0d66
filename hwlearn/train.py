"""The one training loop, for every phase: synthetic pretraining, supervised fine-tuning and the
training part of each self-training round.

What it does, in order of a step:

1. :class:`StepBatches` says which samples make up step ``s``. The choice depends only on
   ``(seed, s)``: a run resumed at step ``s`` sees exactly the batches it would have seen, with no
   data-loader state to save. Samples come from one or more :class:`Source` s mixed by share
   (e.g. pseudo-labeled real images + synthetic words); the samples of a window of steps, once
   read, are sorted by width and cut into batches, so a batch holds images of similar width.
2. Forward under autocast (bf16 on CUDA when supported, else fp16 with a grad scaler; on the CPU
   float32 unless bf16 is asked for, :func:`autocast_dtype`), CTC loss in float32, per sample; samples whose
   loss is NaN/inf are dropped and counted, a step with no finite loss is skipped and counted. On
   the CPU the batch is computed in two halves at once, one thread each (:class:`BatchParts`: one
   thread cannot keep a second core busy with this model).
3. Gradient clipping, AdamW (fused on the CPU), a warmup + cosine schedule.
4. Every ``val_every`` steps: CER/WER on each validation set, a line in ``metrics.jsonl``, the
   ``last`` checkpoint (with optimizer/scheduler/RNG state for ``--resume``) and ``best`` when
   the first validation set's CER improved; ``curve.png`` is redrawn. Ctrl-C saves ``last``
   before stopping, so an interrupted run loses nothing.
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .charset import Charset
from .checkpoint import load_checkpoint, load_train_state, save_checkpoint
from .console import console
from .data import collate, to_model_input
from .errors import HwlearnError
from .inference import materialize, predictions_by_method, torch_threads
from .metrics import score
from .model import Recognizer
from .synth import available_cores

# --------------------------------------------------------------------------------------------
# device and precision


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise HwlearnError(f"unknown device {name!r} ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HwlearnError(f"device {name!r} requested but CUDA is not available")
    return device


def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype for ``amp`` in ``auto|bf16|fp16|off`` (None: float32). ``auto``: on CUDA bf16
    where supported, else fp16; float32 elsewhere. ``bf16`` on the CPU is bf16 autocast, asked for only: on
    a 2-core Xeon with bf16 matrix units (AMX) GW's `cpu` profile pretrained at float32's steps per second and
    adapted in the same minutes, and its one pretrained model read real words worse than any float32 draw
    (benchmarks/EXPERIMENTS.md, session 70); without those units bf16 is emulated and slower. ``fp16`` is
    CUDA's only."""
    if amp == "off":
        return None
    if device.type == "cpu":
        return torch.bfloat16 if amp == "bf16" else None
    if device.type != "cuda":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device_type: str, dtype: torch.dtype | None):
    """The autocast context of :func:`autocast_dtype`'s ``dtype`` (None: off, float32). Autocast holds per
    thread, so each thread that runs the model's forward pass enters it."""
    return torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None)


# --------------------------------------------------------------------------------------------
# what goes into each step


@dataclass
class Source:
    """A training set and its share of each batch.

    ``dataset[i]`` returns ``(tensor (1, H, W), text)``. ``infinite`` sources (the synthetic stream)
    are read at consecutive indices, finite ones in a fresh permutation each epoch. If the dataset
    has ``sample(i, salt)`` it is called instead, with a salt that differs each time the sample is
    drawn (augmentation of a re-used real image differs per epoch).
    """

    dataset: Dataset
    share: float = 1.0
    infinite: bool = False
    name: str = "train"


def _allocate(shares: Sequence[float], batch_size: int) -> list[int]:
    """Split ``batch_size`` over sources in proportion to ``shares`` (largest remainder)."""
    total = sum(shares)
    raw = [s / total * batch_size for s in shares]
    counts = [int(math.floor(r)) for r in raw]
    for k in sorted(range(len(raw)), key=lambda k: raw[k] - counts[k], reverse=True)[: batch_size - sum(counts)]:
        counts[k] += 1
    return counts


class StepBatches:
    """Which samples make up each step, and how a window of steps is cut into batches.

    :meth:`keys` is the list of ``(source, index, salt)`` keys drawn for step ``s``: ``counts[k]``
    from each source, derived from ``(seed, s)`` only. Steps are grouped in windows of ``window``
    steps; the samples of a window, once read (rendered, augmented), are sorted by their actual
    width and cut into batches whose order within the window is shuffled (:meth:`arrange`), so a
    batch holds images of similar width and little padding is computed. Sorting the read images,
    not a guess made before reading, matters for synthetic words: a word's length says little about
    its rendered width (fonts differ ~2x): batches bucketed by length were ~45 % padding, sorted by
    width ~10 % (GW-like English words: mean padded width 137 vs 84 for a mean width of 76; a CPU
    step 0.205 vs 0.141 s, benchmarks/EXPERIMENTS.md).
    """

    def __init__(self, sources: Sequence[Source], batch_size: int, seed: int = 0, window: int = 16):
        if not sources:
            raise HwlearnError("no training data")
        for s in sources:
            if not s.infinite and len(s.dataset) == 0:
                raise HwlearnError(f"training set {s.name!r} is empty")
        self.sources = list(sources)
        self.batch_size = batch_size
        self.seed = seed
        self.window = window
        self.counts = _allocate([s.share for s in sources], batch_size)

    def _key(self, k: int, position: int) -> tuple[int, int, int]:
        source = self.sources[k]
        if source.infinite:
            return (k, position, 0)
        n = len(source.dataset)
        epoch, offset = divmod(position, n)
        perm = np.random.default_rng([self.seed, k, epoch]).permutation(n)
        return (k, int(perm[offset]), epoch)

    def keys(self, step: int) -> list[tuple[int, int, int]]:
        """The samples drawn for ``step``: ``counts[k]`` consecutive draws of each source ``k``."""
        return [self._key(k, step * count + j) for k, count in enumerate(self.counts) for j in range(count)]

    def arrange(self, w: int, samples: Sequence) -> list[list]:
        """Window ``w``'s samples (``(tensor (1, H, W), text)``, in the order of its steps' keys) as
        its batches: sorted by width (stably), cut into ``batch_size`` pieces, in a shuffled order
        derived from ``(seed, w)``."""
        ordered = sorted(samples, key=lambda sample: sample[0].shape[-1])
        batches = [ordered[i : i + self.batch_size] for i in range(0, len(ordered), self.batch_size)]
        order = np.random.default_rng([self.seed, 1_000_003, w]).permutation(len(batches))
        return [batches[i] for i in order]


class _WindowKeys:
    """DataLoader ``batch_sampler``: the keys of each step of windows ``first..last`` (one list per
    step; the loader reads them, the trainer sorts each window's samples into batches)."""

    def __init__(self, batches: StepBatches, first: int, last: int):
        self.batches, self.first, self.last = batches, first, last

    def __iter__(self):
        for step in range(self.first * self.batches.window, (self.last + 1) * self.batches.window):
            yield self.batches.keys(step)

    def __len__(self):
        return max(0, self.last + 1 - self.first) * self.batches.window


class ModelInputs(Dataset):
    """Wraps a dataset of ``(uint8 image, text)`` so it yields ``(model input tensor, text)``."""

    def __init__(self, dataset, height: int):
        self.dataset = dataset
        self.height = height

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        image, text = self.dataset[i]
        return to_model_input(image, self.height), text


class _Mixed(Dataset):
    """Reads a ``(source, index, salt)`` key from the right source."""

    def __init__(self, sources: Sequence[Source]):
        self.datasets = [s.dataset for s in sources]

    def __len__(self):
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, key):
        k, i, salt = key
        dataset = self.datasets[k]
        sample = getattr(dataset, "sample", None)
        return sample(i, salt) if sample is not None else dataset[i]


def _as_arrays(samples: list) -> list:
    """A step's samples with numpy images, as the DataLoader's workers send them: pickled arrays
    cross the process boundary ~10x faster than tensors, each of which torch moves to its own shared
    memory segment (32 samples of 32 x 170: 1.2 vs 13 ms of the training process's time per step)."""
    return [(image.numpy(), x) for image, x in samples]


def _as_tensors(samples: list) -> list:
    """Inverse of :func:`_as_arrays` (no copy)."""
    return [(torch.from_numpy(image), x) for image, x in samples]


# --------------------------------------------------------------------------------------------
# the loop


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (stored in the checkpoint's metadata)."""

    steps: int = 3000
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0
    val_every: int = 250
    log_every: int = 10
    amp: str = "auto"
    num_workers: int = 2
    seed: int = 0
    phase: str = "pretrain"
    lexicon_for_val: bool = False
    threads: int | None = None  # CPU threads for torch; None = cores left over by the data workers
    parts: int | None = None  # a batch computed in this many parts at once (BatchParts); None = batch_parts()


def cpu_threads(config: TrainConfig) -> int:
    """Torch threads for CPU training: the cores the DataLoader workers leave free (at least 1),
    and never more than torch is already allowed (``torch.set_num_threads`` / ``OMP_NUM_THREADS``).

    Oversubscribing the cores with torch's own threads is far worse than leaving one idle: with two
    torch threads and two busy rendering workers on 2 cores, a step took ~40x the CPU time
    (measured). The parts of a batch (:class:`BatchParts`) share these threads: each part's thread
    gets ``threads // parts`` of them (at least 1)."""
    if config.threads:
        return config.threads
    return max(1, min(torch.get_num_threads(), available_cores() - config.num_workers))


#: On the CPU a training batch is computed in this many parts at once (:class:`BatchParts`).
CPU_BATCH_PARTS = 2

#: ... when every part gets at least this many samples (BatchNorm normalizes each part alone).
MIN_PART_SIZE = 8


def batch_parts(config: TrainConfig, device: torch.device) -> int:
    """How many parts a training batch is computed in: ``config.parts`` when set, else
    :data:`CPU_BATCH_PARTS` on the CPU (fewer when a part would hold under :data:`MIN_PART_SIZE`
    samples) and 1 elsewhere. It depends on the device, never on the number of cores, so the same
    seed gives the same model on any CPU."""
    if device.type != "cpu":
        return 1
    if config.parts is not None:
        return max(1, int(config.parts))
    return max(1, min(CPU_BATCH_PARTS, config.batch_size // MIN_PART_SIZE))


class BatchParts:
    """The loss gradient of a training batch computed in ``n`` parts at once, each on a copy of the
    model in a thread of its own (CPU training). The copies use the model's parameter tensors
    (:func:`share_parameters`) and their own buffers.

    One thread runs this model's training step at about the speed of torch's whole thread pool on
    2 cores (its small convolutions and LSTM do not spread across cores), so the second core idles;
    two threads each computing half of the batch take ~0.5x the time (forward + backward, small
    preset, batch 32, 2-core VM; benchmarks/EXPERIMENTS.md, session 33). The parts' gradients
    add up to the batch's (the loss is the mean over its finite samples); BatchNorm normalizes
    each part over its own samples and the running statistics are the parts' mean. Each part
    draws its dropout masks from a generator seeded by ``(seed, step, part)``: the same seed gives
    the same model, and a resumed run continues as the uninterrupted one would — except that, now
    and then, a float32 rounding differs: two 15000-step GW pretrainings agreed to the last digit
    for 11810 steps, then drifted apart (benchmarks/EXPERIMENTS.md, session 34; cause not found)."""

    def __init__(self, model: Recognizer, n: int, seed: int, amp_dtype: torch.dtype | None = None):
        import copy
        from concurrent.futures import ThreadPoolExecutor

        self.model = model
        self.replicas = [copy.deepcopy(model) for _ in range(n)]
        for replica in self.replicas:
            share_parameters(replica, model)
        self.seed = seed
        self.amp_dtype = amp_dtype  # (each part enters autocast in its own thread)
        self.pool = ThreadPoolExecutor(n, thread_name_prefix="hwlearn-batch-part")

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def _sync(self, replica: torch.nn.Module) -> None:
        """The model's BatchNorm statistics and dropout into ``replica`` (its parameters are the model's)."""
        with torch.no_grad():
            torch._foreach_copy_(list(replica.buffers()), list(self.model.buffers()))
        replica.config = self.model.config  # set_dropout may have changed the dropout since the copy
        replica.dropout.p, replica.lstm.dropout = self.model.dropout.p, self.model.lstm.dropout
        replica.train()

    def gradients(self, images: torch.Tensor, widths: torch.Tensor, texts: Sequence[str], charset: Charset,
                  step: int) -> tuple[torch.Tensor, int, int]:
        """Sets the model's ``.grad`` to the gradient of the batch's mean finite loss and its BatchNorm
        statistics to the parts' mean; returns ``(summed finite loss, finite samples, non-finite
        samples)`` (no gradient is set when no sample is finite)."""
        bounds = np.linspace(0, len(texts), len(self.replicas) + 1).round().astype(int)
        parts = [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]
        for k in range(len(parts)):
            self._sync(self.replicas[k])
            self.replicas[k].dropout_generator = torch.Generator().manual_seed(
                int(np.random.SeedSequence([self.seed, step, k]).generate_state(1)[0]))
        futures = [self.pool.submit(self._part, self.replicas[k], images[a:b], widths[a:b], texts[a:b], charset,
                                    self.amp_dtype)
                   for k, (a, b) in enumerate(parts)]
        results = [f.result() for f in futures]
        finite = sum(r[1] for r in results)
        bad = sum(r[2] for r in results)
        total = sum(r[0] for r in results)
        if finite:
            for param, *grads in zip(self.model.parameters(), *(r[3] for r in results if r[3] is not None)):
                grads = [g for g in grads if g is not None]
                param.grad = None
                if grads:  # summed in place into the first part's gradient (fresh tensors from autograd.grad)
                    for g in grads[1:]:
                        grads[0].add_(g)
                    param.grad = grads[0].div_(finite)
        with torch.no_grad():
            used = self.replicas[: len(parts)]
            for buffer, *theirs in zip(self.model.buffers(), *(r.buffers() for r in used)):
                if buffer.is_floating_point():
                    buffer.copy_(torch.stack(theirs).mean(0))
                else:
                    buffer.copy_(theirs[0])
        for r in used:
            r.dropout_generator = None
        return total, finite, bad

    @staticmethod
    def _part(replica, images, widths, texts, charset, amp_dtype):
        images = images[..., : max(int(widths.max()), 1)]  # this part's own padding only
        with autocast("cpu", amp_dtype):
            log_probs, lengths = replica(images, widths)
        losses = ctc_losses(log_probs, lengths, texts, charset)
        finite = torch.isfinite(losses)
        n = int(finite.sum())
        if n == 0:
            return torch.zeros(()), 0, len(texts), None
        total = losses[finite].sum()
        grads = torch.autograd.grad(total, list(replica.parameters()), allow_unused=True)
        return total.detach(), n, len(texts) - n, grads


def share_parameters(replica: torch.nn.Module, model: torch.nn.Module) -> None:
    """Makes ``replica`` (a deep copy of ``model``) use ``model``'s parameter tensors: the optimizer's
    in-place updates reach it with no copy, and what each runs stays apart (its own buffers, graph,
    dropout). Gradients must then be taken with ``torch.autograd.grad``, not accumulated in ``.grad``."""
    for (name, _), param in zip(replica.named_parameters(), model.parameters(), strict=True):
        owner, _, leaf = name.rpartition(".")
        setattr(replica.get_submodule(owner), leaf, param)  # (nn.LSTM's setattr updates its flat weight list)


def gradients_in_parameter_layout(parameters) -> None:
    """Gives each ``.grad`` its parameter's strides. A fused optimizer needs them equal: on the CPU,
    fused AdamW updates a channels_last convolution weight whose gradient is contiguous wrongly and
    says nothing (torch 2.14; on CUDA it raises). Gradients from ``backward`` already have them;
    these make sure of it for gradients set by hand (``BatchParts``)."""
    for p in parameters:
        if p.grad is not None and p.grad.stride() != p.stride():
            p.grad = torch.empty_like(p).copy_(p.grad)


@dataclass
class ValSet:
    """A validation set: a dataset of ``(tensor, text)`` evaluated every ``val_every`` steps."""

    name: str
    dataset: Dataset


@dataclass
class TrainResult:
    step: int
    best_cer: float | None
    last_metrics: dict = field(default_factory=dict)
    skipped_steps: int = 0
    nonfinite_samples: int = 0
    seconds: float = 0.0


def lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    """Linear warmup to 1, then cosine decay to ``min_lr_ratio`` at ``steps``."""

    def f(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / max(1, config.warmup_steps)
        t = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        t = min(1.0, t)
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def ctc_frames_needed(ids: Sequence[int]) -> int:
    """Frames CTC needs to emit ``ids``: one per symbol plus a blank between repeated symbols."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


def ctc_losses(log_probs: torch.Tensor, lengths: torch.Tensor, texts: Sequence[str], charset: Charset) -> torch.Tensor:
    """Per-sample CTC loss divided by target length, float32; ``inf`` for a sample whose image has
    too few frames for its text (no alignment exists), NaN if the model produced NaN.

    The loss is computed with ``zero_infinity=True`` so that an impossible sample contributes a zero
    gradient (without it, its NaN gradient would poison the whole batch) and marked ``inf`` here."""
    targets = [charset.encode(t) for t in texts]
    target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    flat = torch.tensor([i for t in targets for i in t], dtype=torch.long)
    losses = F.ctc_loss(
        log_probs.float(), flat.to(log_probs.device), lengths, target_lengths.to(lengths.device),
        blank=0, reduction="none", zero_infinity=True,
    )
    needed = torch.tensor([ctc_frames_needed(t) for t in targets], dtype=torch.long)
    impossible = (lengths.cpu() < needed).to(losses.device)
    losses = losses / target_lengths.clamp(min=1).to(losses.device)
    return torch.where(impossible, torch.full_like(losses, float("inf")), losses)


class Trainer:
    """Trains ``model`` on ``sources`` and validates on ``val_sets``, checkpointing into ``out_dir``.

    ``meta`` is merged into every checkpoint's metadata (e.g. the fonts and corpus used).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        charset: Charset,
        sources: Sequence[Source],
        out_dir: str | Path,
        config: TrainConfig,
        val_sets: Sequence[ValSet] = (),
        device: str | torch.device = "auto",
        meta: dict | None = None,
        lexicon=None,
    ):
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model = model.to(self.device)
        self.charset = charset
        self.sources = list(sources)
        self.out_dir = Path(out_dir)
        self.config = config
        # validation sets are small: hold them in memory once instead of re-reading them every time
        self.val_sets = [ValSet(v.name, materialize(v.dataset)) for v in val_sets]
        self.meta = dict(meta or {})
        self.lexicon = lexicon
        self.batches = StepBatches(self.sources, config.batch_size, seed=config.seed)
        # fused on the CPU: one kernel for all the tensors instead of a dozen ops each (small model: ~1.1 against
        # ~3.4 ms a step, ~6 % of a 2-core training step; benchmarks/EXPERIMENTS.md, session 71)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                           fused=True if self.device.type == "cpu" else None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config))
        self.amp_dtype = autocast_dtype(self.device, config.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.parts = batch_parts(config, self.device) if isinstance(model, Recognizer) else 1
        self._batch_parts: BatchParts | None = None  # made when the first step needs it
        self.step = 0
        self.best_cer: float | None = None
        self.skipped_steps = 0
        self.nonfinite_samples = 0
        self.seconds = 0.0
        self.history: list[dict] = []
        # dropout and any other global randomness start from the seed (resume() restores the saved state)
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)

    # ---- state ------------------------------------------------------------------------------

    @property
    def precision(self) -> str:
        """What the forward pass runs in: "float32", or the autocast dtype ("bfloat16", "float16")."""
        return str(self.amp_dtype or torch.float32).removeprefix("torch.")

    def _train_state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "best_cer": self.best_cer,
            "skipped_steps": self.skipped_steps,
            "nonfinite_samples": self.nonfinite_samples,
            "seconds": self.seconds,
            "config": asdict(self.config),
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        }

    def resume(self, checkpoint_dir: str | Path) -> None:
        """Continue exactly from a ``last`` checkpoint written by this trainer (model, optimizer, schedule, step, RNG)."""
        ckpt = load_checkpoint(checkpoint_dir, charset=self.charset, device=self.device)
        self.model.load_state_dict(ckpt.model.state_dict())
        state = load_train_state(checkpoint_dir)
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # how to compute is this trainer's choice, not the saved one's
            group.update({k: self.optimizer.defaults[k] for k in ("fused", "foreach")})
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.best_cer = state["best_cer"]
        self.skipped_steps = int(state["skipped_steps"])
        self.nonfinite_samples = int(state["nonfinite_samples"])
        self.seconds = float(state["seconds"])
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def _save(self, name: str, metrics: dict, with_state: bool) -> None:
        meta = {
            **self.meta,
            "training": {
                "phase": self.config.phase,
                "step": self.step,
                "steps": self.config.steps,
                "seconds": round(self.seconds, 1),
                "skipped_steps": self.skipped_steps,
                "nonfinite_samples": self.nonfinite_samples,
                "config": asdict(self.config),
                "device": str(self.device),
                "precision": self.precision,
            },
            "metrics": metrics,
        }
        save_checkpoint(
            self.out_dir / name, self.model, self.charset, meta=meta,
            train_state=self._train_state() if with_state else None,
        )

    # ---- validation -------------------------------------------------------------------------

    def validate(self) -> dict:
        """CER/WER on each validation set (``<name>_cer`` ...), greedy decoding (and lexicon if configured)."""
        out: dict = {}
        for vs in self.val_sets:
            refs = [text for _, text in vs.dataset]
            with_lexicon = self.config.lexicon_for_val and self.lexicon is not None
            by_method = predictions_by_method(self.model, [vs.dataset], self.charset,
                                              ("greedy", "lexicon") if with_lexicon else ("greedy",),
                                              device=self.device, batch_size=64, lexicon=self.lexicon)
            s = score(refs, [p.text for p in by_method["greedy"]])
            out[f"{vs.name}_cer"] = s["cer"]
            out[f"{vs.name}_wer"] = s["wer"]
            if with_lexicon:
                out[f"{vs.name}_lex_cer"] = score(refs, [p.text for p in by_method["lexicon"]])["cer"]
        return out

    # ---- the loop ---------------------------------------------------------------------------

    def _log(self, record: dict) -> None:
        self.history.append(record)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _batches(self, stop: int):
        """The collated batches ``(images, widths, texts)`` of steps ``self.step .. stop - 1``.

        The DataLoader's workers read the samples of every step of the windows these steps fall in
        (from the start of the first window: a run resumed mid-window sorts the same window); each
        window is arranged into batches once all its samples are in (:meth:`StepBatches.arrange`),
        and while its batches train, the next window's samples are taken from the loader one step's
        worth per batch, so the workers keep reading ahead."""
        start = self.step
        if stop <= start:
            return
        window = self.batches.window
        first, last = start // window, (stop - 1) // window
        loader = DataLoader(
            _Mixed(self.sources),
            batch_sampler=_WindowKeys(self.batches, first, last),
            num_workers=self.config.num_workers,
            collate_fn=_as_arrays,  # the samples as read: the trainer sorts and collates a window's batches
            persistent_workers=False,
        )
        chunks = (_as_tensors(chunk) for chunk in loader)
        pending = [next(chunks) for _ in range(window)]
        for w in range(first, last + 1):
            batches = self.batches.arrange(w, [sample for chunk in pending for sample in chunk])
            pending = []
            for i, batch in enumerate(batches):
                if w < last:
                    pending.append(next(chunks))
                if start <= w * window + i < stop:
                    yield collate(batch)

    def _skip_step(self) -> None:
        """Count a step without an update; the schedule still advances so step numbers stay aligned."""
        self.skipped_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()

    def train_step(self, images: torch.Tensor, widths: torch.Tensor, texts: Sequence[str]) -> float | None:
        """One optimizer step; returns the mean finite loss, or None when the step was skipped."""
        self.model.train()
        images = images.to(self.device, non_blocking=True)
        widths = widths.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        if self.parts > 1:
            if self._batch_parts is None:
                self._batch_parts = BatchParts(self.model, self.parts, self.config.seed, self.amp_dtype)
            total, n_finite, n_bad = self._batch_parts.gradients(images, widths, texts, self.charset, self.step)
            self.nonfinite_samples += n_bad
            if n_finite == 0:
                self._skip_step()
                return None
            loss = total / n_finite
        else:
            with autocast(self.device.type, self.amp_dtype):
                log_probs, lengths = self.model(images, widths)
            losses = ctc_losses(log_probs, lengths, texts, self.charset)
            finite = torch.isfinite(losses)
            n_bad = int((~finite).sum())
            self.nonfinite_samples += n_bad
            if n_bad == len(texts):
                self._skip_step()
                return None
            loss = losses[finite].mean()  # dropped samples have a zero gradient (see ctc_losses)
            self.scaler.scale(loss).backward()
        gradients_in_parameter_layout(self.model.parameters())
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if not torch.isfinite(grad_norm):
            self.scaler.update()
            self._skip_step()
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach())

    def fit(self, progress: bool = True, until: int | None = None) -> TrainResult:
        """Train from ``self.step`` to ``config.steps`` (or to step ``until``, e.g. to run in pieces);
        validate and checkpoint every ``val_every`` steps and at the last step."""
        from rich.progress import TextColumn

        from .console import progress_bar

        cfg = self.config
        stop = cfg.steps if until is None else min(until, cfg.steps)
        last_metrics: dict = {}
        losses: list[float] = []
        images_seen = 0
        t_rate = time.perf_counter()
        bar = progress_bar(TextColumn("{task.fields[status]}"))
        if not progress:
            bar.disable = True
        # the training's threads end with it: reading afterwards gets all it had (the loader's workers are gone)
        threads = cpu_threads(cfg) if self.device.type == "cpu" else None
        if threads is not None and self.parts > 1:  # each part's thread runs its own team of torch threads
            threads = max(1, threads // self.parts)
        try:
            with torch_threads(threads), bar:
                task = bar.add_task(cfg.phase, total=cfg.steps, completed=self.step, status="")
                t_step = time.perf_counter()
                for images, widths, texts in self._batches(stop):
                    loss = self.train_step(images, widths, texts)
                    self.step += 1
                    now = time.perf_counter()
                    self.seconds += now - t_step
                    t_step = now
                    images_seen += len(texts)
                    if loss is not None:
                        losses.append(loss)
                    if self.step % cfg.log_every == 0 or self.step == stop:
                        rate = images_seen / max(1e-9, now - t_rate)
                        mean_loss = float(np.mean(losses)) if losses else float("nan")
                        record = {"step": self.step, "loss": mean_loss, "lr": self.scheduler.get_last_lr()[0],
                                  "images_per_s": round(rate, 1)}
                        self._log(record)
                        status = f"loss {mean_loss:.3f}  {rate:.0f} img/s"
                        if last_metrics:
                            k = next(iter(last_metrics))
                            status += f"  {k} {last_metrics[k]:.3f}"
                        bar.update(task, completed=self.step, status=status)
                        losses, images_seen, t_rate = [], 0, time.perf_counter()
                    if self.step % cfg.val_every == 0 or self.step == stop:
                        last_metrics = self._validate_and_checkpoint()
                        t_step = time.perf_counter()
                        t_rate = t_step
                    bar.update(task, completed=self.step)
        except KeyboardInterrupt:
            self._save("last", {"interrupted_at_step": self.step}, with_state=True)
            console.print(f"[yellow]interrupted at step {self.step}; saved {self.out_dir / 'last'} (use --resume)")
            raise
        finally:
            if self._batch_parts is not None:  # its threads and model copies end with the training
                self._batch_parts.close()
                self._batch_parts = None
        return TrainResult(self.step, self.best_cer, last_metrics, self.skipped_steps, self.nonfinite_samples, self.seconds)

    def _validate_and_checkpoint(self) -> dict:
        metrics = self.validate() if self.val_sets else {}
        record = {"step": self.step, **{k: round(v, 5) for k, v in metrics.items()}}
        self._log(record)
        key = f"{self.val_sets[0].name}_cer" if self.val_sets else None
        if key is not None and (self.best_cer is None or metrics[key] < self.best_cer):
            self.best_cer = metrics[key]
            self._save("best", metrics, with_state=False)
        self._save("last", metrics, with_state=True)
        plot_curve(self.out_dir / "metrics.jsonl", self.out_dir / "curve.png")
        return metrics


def plot_curve(metrics_path: Path, png_path: Path) -> None:
    """Draw training loss and validation CER over steps from ``metrics.jsonl`` into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    loss_rows = [r for r in rows if "loss" in r and r["loss"] == r["loss"]]
    ax1.plot([r["step"] for r in loss_rows], [r["loss"] for r in loss_rows], color="tab:blue", lw=1)
    ax1.set_xlabel("step")
    ax1.set_ylabel("CTC loss / char", color="tab:blue")
    ax2 = ax1.twinx()
    cer_keys = sorted({k for r in rows for k in r if k.endswith("_cer")})
    for k in cer_keys:
        pts = [(r["step"], r[k]) for r in rows if k in r]
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=k)
    ax2.set_ylabel("CER")
    if cer_keys:
        ax2.legend(loc="upper right")
    fig.tight_layout()
    tmp = png_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(png_path)
