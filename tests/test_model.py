"""The recognizer: shapes, lengths, padding invariance, config round trip, and that it can learn."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from hwlearn.errors import HwlearnError
from hwlearn.model import PRESETS, ModelConfig, Recognizer, create_model

TINY = dict(
    height=16,
    channels=(8, 16, 16),
    pools=((2, 2), (2, 2), (2, 1)),
    lstm_hidden=32,
    lstm_layers=1,
    dropout=0.0,
)


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _batch(widths: list[int], height: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ink in each sample's first ``widths[b]`` columns, zero padding after."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(len(widths), 1, height, max(widths))
    for b, w in enumerate(widths):
        images[b, :, :, :w] = torch.rand(1, height, w, generator=g)
    return images, torch.tensor(widths)


def test_presets_sizes_and_strides():
    small = create_model("small", 80)
    base = create_model("base", 80)
    assert small.config.height == 32 and base.config.height == 64
    assert 0.5e6 <= small.num_parameters() <= 1.5e6
    assert 5e6 <= base.num_parameters() <= 10e6
    assert small.width_stride == 4 and base.width_stride == 4
    assert small.min_width // small.width_stride >= 8


def test_output_shapes_and_lengths():
    torch.manual_seed(0)
    model = create_model("small", 30).eval()
    images, widths = _batch([100, 37, 64], 32)
    log_probs, lengths = model(images, widths)
    assert log_probs.dtype == torch.float32
    assert log_probs.shape == (25, 3, 30)
    assert lengths.tolist() == [25, 9, 16] == model.output_lengths(widths).tolist()
    assert lengths.dtype == torch.long
    # log_softmax: each frame's probabilities sum to 1
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(25, 3), atol=1e-5)


def test_narrow_images_get_min_width_frames():
    torch.manual_seed(0)
    model = create_model("small", 30).eval()
    images, widths = _batch([5], 32)  # narrower than min_width and than the stride chain
    log_probs, lengths = model(images, widths)
    assert lengths.tolist() == [model.min_width // model.width_stride]
    assert log_probs.shape[0] == lengths[0]


def test_padding_does_not_change_a_sample():
    torch.manual_seed(0)
    model = create_model("small", 30).eval()
    images, widths = _batch([45, 120, 23], 32, seed=1)
    batched, lengths = model(images, widths)
    for b, w in enumerate(widths.tolist()):
        alone, alone_len = model(images[b : b + 1, :, :, :w], widths[b : b + 1])
        assert alone_len[0] == lengths[b]
        torch.testing.assert_close(alone[:, 0], batched[: lengths[b], b], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layers", [1, 2])
def test_the_cpu_bilstm_on_padded_frames_computes_what_the_packed_one_does(layers):
    # The CPU reads padded sequences with each direction alone (fast oneDNN LSTM); the packed
    # LSTM is the definition: same outputs on every sample's frames, 0 after, same gradients.
    torch.manual_seed(0)
    model = create_model("small", 30, lstm_layers=layers, lstm_hidden=24).train()
    lengths = torch.tensor([17, 3, 1, 17, 9])
    features = torch.randn(17, 5, model.lstm.input_size, requires_grad=True)
    packed = model._bilstm_packed(features, lengths)
    padded = model._bilstm_padded(features, lengths)
    torch.testing.assert_close(padded, packed, atol=1e-5, rtol=1e-4)
    assert padded[3:, 1].abs().max() == 0 and padded[1:, 2].abs().max() == 0
    weights = [model.lstm.weight_hh_l0_reverse, getattr(model.lstm, f"weight_ih_l{layers - 1}")]
    weighting = torch.randn_like(packed)  # any loss of the outputs; padded frames count for nothing
    for a, b in zip(torch.autograd.grad((packed * weighting).sum(), [features, *weights]),
                    torch.autograd.grad((padded * weighting).sum(), [features, *weights])):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_eval_mode_is_deterministic():
    model = create_model("small", 30, dropout=0.5).eval()
    images, widths = _batch([60, 40], 32)
    a, _ = model(images, widths)
    b, _ = model(images, widths)
    assert torch.equal(a, b)


def test_set_dropout_changes_training_not_reading():
    model = create_model("small", 30, dropout=0.0)
    images, widths = _batch([60, 40], 32)
    model.train()
    torch.testing.assert_close(model(images, widths)[0], model(images, widths)[0])  # no dropout: the same twice
    model.set_dropout(0.3)
    assert model.config.dropout == 0.3 and model.dropout.p == 0.3 and model.lstm.dropout == 0.3
    assert not torch.equal(model(images, widths)[0], model(images, widths)[0])  # now it drops units in training
    model.eval()
    assert torch.equal(model(images, widths)[0], model(images, widths)[0])
    with pytest.raises(HwlearnError, match="dropout"):
        model.set_dropout(1.0)
    assert model.config.dropout == 0.3


def test_bad_input_shape_raises():
    model = create_model("small", 30)
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(1, 1, 48, 100), torch.tensor([100]))
    with pytest.raises(ValueError, match="widths"):
        model(torch.zeros(1, 1, 32, 100), torch.tensor([101]))


def test_config_round_trip_and_overrides():
    cfg = PRESETS["base"]
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    model = create_model("small", 12, lstm_layers=3)
    assert model.config.lstm_layers == 3 and model.config.height == 32
    assert isinstance(create_model(ModelConfig(**TINY), 5), Recognizer)
    with pytest.raises(HwlearnError, match="unknown model preset"):
        create_model("huge", 10)
    with pytest.raises(HwlearnError, match="unknown field"):
        create_model("small", 10, lstm_size=3)
    with pytest.raises(HwlearnError, match="unknown field"):
        ModelConfig.from_dict({**cfg.to_dict(), "color": 1})
    with pytest.raises(HwlearnError, match="pooling"):
        ModelConfig(channels=(8, 8), pools=((2, 2),))


def test_tiny_model_overfits_a_few_images():
    torch.manual_seed(0)
    model = create_model(ModelConfig(**TINY), num_classes=6)
    images, widths = _batch([64, 48, 56, 64], 16, seed=3)
    targets = [[1, 2, 3], [4, 4, 5], [2, 1], [5, 3, 1, 2]]
    flat = torch.tensor([c for t in targets for c in t])
    target_lengths = torch.tensor([len(t) for t in targets])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):  # (at 100 steps one seed still merged a doubled letter)
        log_probs, lengths = model(images, widths)
        loss = F.ctc_loss(log_probs, flat, lengths, target_lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    model.eval()
    log_probs, lengths = model(images, widths)
    best = log_probs.argmax(-1).T.tolist()
    decoded = []
    for path, n in zip(best, lengths.tolist()):
        out, prev = [], 0
        for c in path[:n]:
            if c != prev and c != 0:
                out.append(c)
            prev = c
        decoded.append(out)
    assert decoded == targets


def test_autocast_keeps_float32_log_probs():
    model = create_model(ModelConfig(**TINY), num_classes=6)
    images, widths = _batch([40, 24], 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_probs, lengths = model(images, widths)
    assert log_probs.dtype == torch.float32
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(log_probs.shape[:2]), atol=1e-4)
    F.ctc_loss(log_probs, torch.tensor([[1, 2], [3, 3]]), lengths, torch.tensor([2, 2])).backward()
