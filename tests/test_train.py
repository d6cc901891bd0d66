"""The training loop: learning, determinism of batches, resume, non-finite losses, checkpoints."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from hwlearn.charset import Charset
from hwlearn.checkpoint import load_checkpoint
from hwlearn.errors import HwlearnError
from hwlearn.model import create_model
from hwlearn.data import collate
from hwlearn.train import (BatchParts, Source, StepBatches, Trainer, TrainConfig, _allocate, batch_parts,
                           ctc_losses, lr_lambda)

from conftest import TINY_MODEL, tiny_pretrain


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_tiny_model_cer_falls_on_its_synthetic_words(tiny_run):
    records = _records(tiny_run)
    cers = [r["synth_val_cer"] for r in records if "synth_val_cer" in r]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(cers) == 4  # steps 100, 200, 300, 400
    assert cers[-1] < 0.3, cers  # an untrained model's CER is ~1.0
    assert cers[-1] < cers[0]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:3]) / 3, losses
    meta = json.loads((tiny_run / "best" / "meta.json").read_text())
    assert meta["training"]["phase"] == "pretrain" and meta["training"]["precision"] in ("float32", "bfloat16")
    assert meta["metrics"]["synth_val_cer"] == pytest.approx(min(cers), abs=1e-5)
    assert (tiny_run / "curve.png").stat().st_size > 1000
    assert (tiny_run / "last" / "train_state.pt").exists()


def test_resume_continues_step_count_and_loss_curve(tmp_path, tiny_assets):
    straight = tmp_path / "straight"
    tiny_pretrain(straight, tiny_assets, steps=40, val_every=20)
    pieces = tmp_path / "pieces"
    tiny_pretrain(pieces, tiny_assets, steps=40, until=20, val_every=20)
    assert json.loads((pieces / "last" / "meta.json").read_text())["training"]["step"] == 20
    result = tiny_pretrain(pieces, tiny_assets, steps=40, resume=True, val_every=20)
    assert result.step == 40

    def losses(run):
        return {r["step"]: r["loss"] for r in _records(run) if "loss" in r}

    a, b = losses(straight), losses(pieces)
    for step in (30, 40):
        assert b[step] == pytest.approx(a[step], rel=1e-4), (step, a, b)
    wa = load_checkpoint(straight / "last").model.state_dict()
    wb = load_checkpoint(pieces / "last").model.state_dict()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), k


def test_existing_run_is_not_overwritten_without_resume(tiny_run, tiny_assets):
    with pytest.raises(HwlearnError, match="already holds a run"):
        tiny_pretrain(tiny_run, tiny_assets, steps=10)


def test_resume_without_state_is_refused(tmp_path, tiny_assets):
    with pytest.raises(HwlearnError, match="nothing to resume"):
        tiny_pretrain(tmp_path / "empty", tiny_assets, steps=10, resume=True)


class _Fixed(torch.utils.data.Dataset):
    """Images too narrow for their labels: CTC has no valid alignment -> infinite loss."""

    def __init__(self, n, width, text):
        self.n, self.width, self.text = n, width, text

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.rand(1, 32, self.width), self.text


def test_nonfinite_losses_are_skipped_and_counted(tmp_path):
    charset = Charset("abc")
    model = create_model("small", charset.num_classes, **TINY_MODEL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(steps=3, batch_size=4, val_every=100, num_workers=0)
    trainer = Trainer(model, charset, [Source(_Fixed(8, 32, "abcabcabcabcabc"))], tmp_path, config, device="cpu")
    result = trainer.fit(progress=False)
    assert result.skipped_steps == 3 and result.nonfinite_samples == 12
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" not in k and "num_batches" not in k)


class _Mixed(torch.utils.data.Dataset):
    """Half the samples can be aligned, half are too narrow for their label."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return (torch.rand(1, 32, 32), "ab" if i % 2 else "abcabcabcabcabc")  # 8 frames: 2 letters fit, 15 do not


def test_impossible_samples_are_dropped_without_spoiling_the_step(tmp_path):
    charset = Charset("abc")
    torch.manual_seed(0)
    model = create_model("small", charset.num_classes, **TINY_MODEL)
    before = {k: v.clone() for k, v in model.named_parameters()}
    config = TrainConfig(steps=2, batch_size=8, val_every=100, num_workers=0)
    result = Trainer(model, charset, [Source(_Mixed())], tmp_path, config, device="cpu").fit(progress=False)
    assert result.skipped_steps == 0 and result.nonfinite_samples == 8  # 4 impossible samples per step
    after = dict(model.named_parameters())
    assert all(torch.isfinite(p).all() for p in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the possible samples trained


def test_frames_needed_counts_blanks_between_repeats():
    from hwlearn.train import ctc_frames_needed

    assert ctc_frames_needed([1, 2, 3]) == 3
    assert ctc_frames_needed([1, 1, 2, 2, 2]) == 8
    assert ctc_frames_needed([]) == 0


def test_step_keys_are_deterministic_mixed_and_cover_each_epoch():
    a = Source(_Fixed(10, 40, "a"), share=0.75, name="a")
    b = Source(_Fixed(10**6, 40, "b"), share=0.25, infinite=True, name="b")
    batches = StepBatches([a, b], batch_size=8, seed=3, window=4)
    again = StepBatches([a, b], batch_size=8, seed=3, window=4)
    steps = [batches.keys(s) for s in range(8)]
    assert steps == [again.keys(s) for s in range(8)]
    assert all(sum(1 for k, _, _ in keys if k == 0) == 6 for keys in steps)
    # finite source: every index exactly once per epoch (10 samples = 10/6 steps ...): first 10 draws of 'a'
    drawn = sorted(i for keys in steps[:4] for k, i, salt in keys if k == 0 and salt == 0)
    assert set(drawn) == set(range(10))
    # the infinite source is read at consecutive indices
    inf = sorted(i for keys in steps[:4] for k, i, _ in keys if k == 1)
    assert inf == list(range(8))
    assert StepBatches([a, b], batch_size=8, seed=4).keys(0) != batches.keys(0)


def test_a_window_is_cut_into_batches_of_similar_width():
    batches = StepBatches([Source(_Fixed(10, 40, "a"))], batch_size=4, seed=1, window=3)
    widths = [37, 5, 90, 12, 64, 5, 33, 71, 8, 50, 21, 44]
    samples = [(torch.zeros(1, 32, w), f"w{i}") for i, w in enumerate(widths)]
    arranged = batches.arrange(2, samples)
    assert arranged == batches.arrange(2, samples)  # deterministic
    assert sorted(t for batch in arranged for _, t in batch) == sorted(t for _, t in samples)  # each sample once
    assert [len(batch) for batch in arranged] == [4, 4, 4]
    spans = sorted((min(x.shape[-1] for x, _ in b), max(x.shape[-1] for x, _ in b)) for b in arranged)
    assert spans == [(5, 12), (21, 44), (50, 90)]  # sorted by width, then cut
    orders = {tuple(min(x.shape[-1] for x, _ in b) for b in batches.arrange(w, samples)) for w in range(8)}
    assert len(orders) > 1  # the batches' order within a window is shuffled, per window


class _VaryingWidths(torch.utils.data.Dataset):
    """Sample ``i``: width 8..97 px, a label of 1-3 letters (module level: loader workers may pickle it)."""

    def __len__(self):
        return 10**6

    def __getitem__(self, i):
        return torch.full((1, 32, 8 + (i * 37) % 90), float(i % 7) / 7), "ab"[i % 2] * (1 + i % 3)


def test_training_sees_the_same_batches_with_and_without_loader_workers(tmp_path):
    """Each window's samples are sorted by their width once read: workers or not, resumed or not,
    every step trains on the same batch."""
    charset = Charset("ab")
    seen = {}
    for name, workers, start in (("main", 0, 0), ("workers", 2, 0), ("resumed", 0, 5)):
        trainer = Trainer(create_model("small", charset.num_classes, **TINY_MODEL), charset,
                          [Source(_VaryingWidths(), infinite=True)], tmp_path / name,
                          TrainConfig(steps=20, batch_size=4, val_every=100, num_workers=workers), device="cpu")
        trainer.step = start
        seen[name] = {start + s: (tuple(w.tolist()), tuple(t)) for s, (_, w, t) in enumerate(trainer._batches(20))}
    assert seen["main"] == seen["workers"]
    assert {s: seen["main"][s] for s in range(5, 20)} == seen["resumed"]
    assert len(seen["main"]) == 20
    assert all(max(w) - min(w) < 30 for w, _ in seen["main"].values())  # widths spread over 8..97


class _ThreadsSeen(_VaryingWidths):
    """Records torch's thread count whenever a sample is read (in the main process: no workers)."""

    def __init__(self):
        self.threads = set()

    def __getitem__(self, i):
        self.threads.add(torch.get_num_threads())
        return super().__getitem__(i)


def test_training_threads_last_only_as_long_as_the_training(tmp_path):
    """fit runs torch with the configured threads (the cores the loader's workers leave) and gives
    the caller's count back: reading after training (adaptation's labeling) uses every core again."""
    charset, data = Charset("ab"), _ThreadsSeen()
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        trainer = Trainer(create_model("small", charset.num_classes, **TINY_MODEL), charset,
                          [Source(data, infinite=True)], tmp_path,
                          TrainConfig(steps=3, batch_size=4, val_every=100, num_workers=0, threads=1), device="cpu")
        assert torch.get_num_threads() == 3  # building a trainer changes nothing
        trainer.fit(progress=False)
        assert data.threads == {1} and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_allocation_and_schedule():
    assert _allocate([0.7, 0.3], 32) == [22, 10]
    assert sum(_allocate([1, 1, 1], 32)) == 32
    f = lr_lambda(TrainConfig(steps=1000, warmup_steps=100, min_lr_ratio=0.1))
    assert f(0) == pytest.approx(0.01) and f(99) == pytest.approx(1.0)
    assert f(1000) == pytest.approx(0.1) and f(550) == pytest.approx(0.55)


def test_a_batch_in_parts_gets_the_gradient_of_its_parts(tmp_path):
    """Computed in parts (in threads), a batch's gradient is that of its mean loss over the parts'
    samples, each part normalized by BatchNorm on its own; the running statistics are the parts' mean.
    The parts see the model as it is at each step: after an in-place update (as the optimizer's), the
    next gradient is that of the updated model."""
    charset = Charset("ab")
    torch.manual_seed(0)
    model = create_model("small", charset.num_classes, **TINY_MODEL)
    images, widths, texts = collate([_VaryingWidths()[i] for i in range(8)])
    parts = BatchParts(model, 2, seed=0)
    try:
        for step in range(2):
            references = [copy.deepcopy(model).train() for _ in range(2)]
            total, count = 0.0, 0
            for reference, part in zip(references, (slice(0, 4), slice(4, 8))):
                w = widths[part]
                log_probs, lengths = reference(images[part][..., : int(w.max())], w)
                losses = ctc_losses(log_probs, lengths, texts[part], charset)
                losses[torch.isfinite(losses)].sum().backward()
                total += float(losses[torch.isfinite(losses)].sum().detach())
                count += int(torch.isfinite(losses).sum())
            got, finite, bad = parts.gradients(images, widths, texts, charset, step=step)
            assert (finite, bad) == (count, 8 - count) and float(got) == pytest.approx(total, rel=1e-5)
            for name, p, q, r in zip(dict(model.named_parameters()), model.parameters(),
                                     references[0].parameters(), references[1].parameters()):
                assert torch.allclose(p.grad, (q.grad + r.grad) / count, atol=1e-6), (step, name)
            for (name, buffer), q, r in zip(model.named_buffers(), references[0].buffers(), references[1].buffers()):
                expected = (q + r) / 2 if buffer.is_floating_point() else q
                assert torch.allclose(buffer, expected, atol=1e-6), (step, name)
            with torch.no_grad():
                for p in model.parameters():
                    p.sub_(0.5 * p.grad.sign())
    finally:
        parts.close()


def test_a_cpu_step_updates_as_plain_adamw_does(tmp_path):
    """The CPU trainer's fused AdamW, fed the parts' gradients, moves every weight as the unfused one
    would from the same (clipped) gradients: a gradient in another memory layout than its weight (a
    channels_last convolution) would silently update the wrong elements."""
    charset = Charset("ab")
    torch.manual_seed(0)
    model = create_model("small", charset.num_classes, **TINY_MODEL)
    trainer = Trainer(model, charset, [Source(_VaryingWidths(), infinite=True)], tmp_path,
                      TrainConfig(steps=10, batch_size=16, num_workers=0, parts=2, warmup_steps=1), device="cpu")
    assert trainer.optimizer.defaults["fused"]
    images, widths, texts = collate([_VaryingWidths()[i] for i in range(16)])
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):  # the second step has the first one's moments
        reference = [torch.nn.Parameter(p.detach().clone()) for p in model.parameters()]
        state = copy.deepcopy(trainer.optimizer.state_dict())
        lr = trainer.optimizer.param_groups[0]["lr"]
        assert trainer.train_step(images, widths, texts) is not None
        plain = torch.optim.AdamW(reference, lr=lr, weight_decay=trainer.config.weight_decay, foreach=False)
        state["param_groups"][0].update(fused=None, foreach=False)
        plain.load_state_dict(state)
        for q, p in zip(reference, model.parameters()):
            q.grad = p.grad.clone()
        plain.step()
        assert any(p.dim() == 4 and p.grad.stride() != p.grad.contiguous().stride() for p in model.parameters())
        for (name, p), q in zip(model.named_parameters(), reference):
            assert torch.allclose(p, q, atol=1e-6), name
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_training_in_parts_with_dropout_repeats_and_leaves_the_global_generator_alone(tmp_path):
    """The parts draw their dropout masks from generators of their own (seed, step, part): two runs
    give the same model bit for bit however the threads interleave."""
    charset = Charset("ab")
    weights = []
    for run in ("a", "b"):
        torch.manual_seed(0)
        model = create_model("small", charset.num_classes, **{**TINY_MODEL, "lstm_layers": 2, "dropout": 0.3})
        trainer = Trainer(model, charset, [Source(_VaryingWidths(), infinite=True)], tmp_path / run,
                          TrainConfig(steps=6, batch_size=16, val_every=100, num_workers=0, parts=2), device="cpu")
        assert trainer.parts == 2
        batches = list(trainer._batches(6))  # (the DataLoader draws its base seed from the global generator)
        state = torch.get_rng_state()
        for images, w, texts in batches:
            trainer.train_step(images, w, texts)
            trainer.step += 1
        assert torch.equal(torch.get_rng_state(), state)
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_batch_parts_by_device_and_batch_size():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert batch_parts(TrainConfig(batch_size=32), cpu) == 2
    assert batch_parts(TrainConfig(batch_size=8), cpu) == 1  # parts of 4 would normalize too few samples
    assert batch_parts(TrainConfig(batch_size=32), cuda) == 1
    assert batch_parts(TrainConfig(batch_size=32, parts=1), cpu) == 1


def test_the_parts_of_a_batch_share_the_training_threads(tmp_path):
    """Each part's thread runs a team of torch threads of its own: together they get the threads
    training may use, not that many each (oversubscribed cores are far slower than idle ones)."""
    charset, data = Charset("ab"), _ThreadsSeen()
    before = torch.get_num_threads()
    try:
        trainer = Trainer(create_model("small", charset.num_classes, **TINY_MODEL), charset,
                          [Source(data, infinite=True)], tmp_path,
                          TrainConfig(steps=2, batch_size=16, val_every=100, num_workers=0, threads=4, parts=2),
                          device="cpu")
        trainer.fit(progress=False)
        assert data.threads == {2} and torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


def test_bf16_on_the_cpu_only_when_asked_and_the_parts_train_in_it(tmp_path):
    """amp "auto" trains in float32 on the CPU and "bf16" in bf16; the batch's parts each run under autocast in
    their own thread: a bf16 gradient is the float32 one up to rounding, the weights and gradients stay
    float32, and a few bf16 steps lower the loss."""
    from hwlearn.train import autocast_dtype

    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "auto") is None and autocast_dtype(cpu, "bf16") is torch.bfloat16
    assert autocast_dtype(cpu, "off") is None and autocast_dtype(cpu, "fp16") is None
    charset = Charset("ab")
    images, widths, texts = collate([_VaryingWidths()[i] for i in range(8)])
    grads = {}
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(0)
        model = create_model("small", charset.num_classes, **TINY_MODEL)
        parts = BatchParts(model, 2, seed=0, amp_dtype=dtype)
        try:
            parts.gradients(images, widths, texts, charset, step=0)
        finally:
            parts.close()
        grads[dtype] = torch.cat([p.grad.flatten() for p in model.parameters()])
        assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    assert torch.cosine_similarity(grads[None], grads[torch.bfloat16], dim=0) > 0.98
    assert not torch.equal(grads[None], grads[torch.bfloat16])  # (it did run in bf16)
    torch.manual_seed(0)
    trainer = Trainer(create_model("small", charset.num_classes, **TINY_MODEL), charset,
                      [Source(_VaryingWidths(), infinite=True)], tmp_path,
                      TrainConfig(steps=40, batch_size=16, val_every=100, num_workers=0, parts=2, amp="bf16",
                                  warmup_steps=5), device="cpu")
    assert trainer.amp_dtype is torch.bfloat16 and trainer.precision == "bfloat16"
    losses = [trainer.train_step(*batch) for batch in trainer._batches(40)]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
