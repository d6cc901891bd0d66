"""The recognizer: a CNN + BiLSTM + linear CTC head (the CRNN / PyLaia / SimpleHTR family).

A word image goes in as a float tensor ``(B, 1, H, W)`` with ink = 1 and paper = 0, right-padded
with 0, plus the true width of every sample. The CNN reduces the height to a few rows (which are
flattened into one feature vector per column) and the width by ``width_stride``; a bidirectional
LSTM reads the columns left to right and right to left; a linear layer gives per-frame class scores.
The output is ``(log_probs, lengths)`` in the layout ``torch.nn.functional.ctc_loss`` expects:
``log_probs`` float32 ``(T, B, C)`` after ``log_softmax``, ``lengths`` the number of valid frames of
each sample.

Padding never changes a sample's output: the CNN zeroes the padded columns before every
convolution (so a padded sample sees the same zero border as the unpadded one) and each direction
of the LSTM reads only a sample's own frames (packed sequences on a GPU; on the CPU each direction
runs alone on the padded batch, the reverse one on every sample's frames flipped in place, which
oneDNN does ~3x faster). In eval mode the output of a sample alone equals its output in a batch.

The convolution weights and activations are kept channels-last (NHWC): on the CPU that makes a
training step ~8 % and a reading ~15 % faster than NCHW for this model (oneDNN convolutions and
pooling without layout reorders; small preset, batch 32, 2-core VM; benchmarks/EXPERIMENTS.md).

Configuration is plain data (:class:`ModelConfig`, JSON-friendly via ``to_dict`` / ``from_dict``);
:data:`PRESETS` holds the named sizes and :func:`create_model` builds one with overrides.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .errors import HwlearnError


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a :class:`Recognizer` (everything needed to rebuild it, besides the charset).

    ``channels[i]`` is the output width of CNN block ``i`` (conv 3x3, batch norm, LeakyReLU) and
    ``pools[i] = (ph, pw)`` the max-pooling after it (``(1, 1)``: none). The input height must be
    ``height``; after the blocks ``height // prod(ph)`` rows remain and are flattened into the
    LSTM's input. The width stride of the model is ``prod(pw)``.
    """

    height: int = 32
    channels: tuple[int, ...] = (16, 32, 64, 96, 128)
    pools: tuple[tuple[int, int], ...] = ((2, 2), (2, 2), (2, 1), (1, 1), (2, 1))
    lstm_hidden: int = 128
    lstm_layers: int = 2
    dropout: float = 0.2

    def __post_init__(self) -> None:
        # Normalize lists (e.g. from JSON) into tuples so configs compare and hash as values.
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "pools", tuple((int(ph), int(pw)) for ph, pw in self.pools))
        if len(self.channels) != len(self.pools):
            raise HwlearnError(
                f"model config: {len(self.channels)} channel sizes but {len(self.pools)} pooling steps"
            )
        if not self.channels:
            raise HwlearnError("model config: the CNN needs at least one block")
        if any(c < 1 for c in self.channels) or any(p < 1 for pool in self.pools for p in pool):
            raise HwlearnError("model config: channels and pooling factors must be positive")
        if self.height < 1 or self.feature_rows < 1:
            raise HwlearnError(
                f"model config: height {self.height} is too small for height pooling "
                f"{math.prod(ph for ph, _ in self.pools)}"
            )
        if self.lstm_hidden < 1 or self.lstm_layers < 1:
            raise HwlearnError("model config: lstm_hidden and lstm_layers must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise HwlearnError(f"model config: dropout {self.dropout} is not in [0, 1)")

    @property
    def width_stride(self) -> int:
        """Input columns per output frame."""
        return math.prod(pw for _, pw in self.pools)

    @property
    def feature_rows(self) -> int:
        """Rows left after the CNN's height pooling (flattened into the LSTM input)."""
        rows = self.height
        for ph, _ in self.pools:
            rows //= ph
        return rows

    @property
    def min_width(self) -> int:
        """Narrower inputs are right-padded to this width: a square (``height`` columns), i.e.
        ``height // width_stride`` frames, so even a one-letter word image gets enough frames
        for CTC on short labels."""
        return max(self.height, self.width_stride)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (lists instead of tuples)."""
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        d["pools"] = [list(p) for p in self.pools]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`HwlearnError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise HwlearnError(f"model config: unknown field(s) {', '.join(unknown)}")
        return cls(**d)


#: Named model sizes. ``small``: height 32, ~1.0 M parameters, trains on a laptop CPU.
#: ``base``: height 64, ~6 M parameters, for a GPU. ``small`` has no dropout: its CPU-sized runs never
#: see the same rendering twice and end underfit, and without dropout the `cpu` benchmark's pretraining
#: reached a lower synthetic CER (0.163 -> 0.148) and its adaptation a lower one on GW (benchmarks/EXPERIMENTS.md).
PRESETS: dict[str, ModelConfig] = {
    "small": ModelConfig(
        height=32,
        channels=(16, 32, 64, 96, 128),
        pools=((2, 2), (2, 2), (2, 1), (1, 1), (2, 1)),
        lstm_hidden=128,
        lstm_layers=2,
        dropout=0.0,
    ),
    "base": ModelConfig(
        height=64,
        channels=(32, 64, 128, 128, 256, 256),
        pools=((2, 2), (2, 2), (2, 1), (1, 1), (2, 1), (2, 1)),
        lstm_hidden=256,
        lstm_layers=3,
        dropout=0.3,
    ),
}


def _width_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """``(B, 1, 1, width)`` float mask, 1 on each sample's first ``lengths[b]`` columns."""
    cols = torch.arange(width, device=lengths.device)
    return (cols[None, :] < lengths[:, None]).to(torch.float32)[:, None, None, :]


class _ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, pool: tuple[int, int]):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(cout)
        self.pool = nn.MaxPool2d(pool, pool) if pool != (1, 1) else nn.Identity()
        self.pool_w = pool[1]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x * _width_mask(lengths, x.shape[-1]).to(x.dtype)  # padded columns act like conv padding
        x = F.leaky_relu(self.norm(self.conv(x)), 0.01)
        return self.pool(x), torch.div(lengths, self.pool_w, rounding_mode="floor")


class Recognizer(nn.Module):
    """CNN + BiLSTM + CTC head. ``forward(images, widths) -> (log_probs (T, B, C), lengths (B,))``.

    Attributes: ``config`` (:class:`ModelConfig`), ``num_classes`` (including the blank at 0),
    ``width_stride`` (input columns per frame), ``min_width`` (narrower inputs are padded to it).
    """

    def __init__(self, config: ModelConfig, num_classes: int):
        super().__init__()
        if num_classes < 2:
            raise HwlearnError(f"a recognizer needs at least 2 classes (blank + 1), got {num_classes}")
        self.config = config
        self.num_classes = int(num_classes)
        self.width_stride = config.width_stride
        self.min_width = config.min_width
        cins = (1, *config.channels[:-1])
        self.cnn = nn.ModuleList(
            _ConvBlock(cin, cout, pool) for cin, cout, pool in zip(cins, config.channels, config.pools)
        )
        features = config.channels[-1] * config.feature_rows
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            features,
            config.lstm_hidden,
            num_layers=config.lstm_layers,
            bidirectional=True,
            dropout=config.dropout if config.lstm_layers > 1 else 0.0,
        )
        self.head = nn.Linear(2 * config.lstm_hidden, self.num_classes)
        #: where dropout draws its masks in training: None, torch's global generator; a
        #: ``torch.Generator`` lets a copy of the model trained in a thread of its own draw its own
        #: masks, so concurrent parts of a batch stay reproducible (:class:`hwlearn.train.BatchParts`)
        self.dropout_generator: torch.Generator | None = None
        self.to(memory_format=torch.channels_last)  # see the module docstring; .to(device) keeps it

    def output_lengths(self, widths: torch.Tensor) -> torch.Tensor:
        """Number of output frames for inputs of true width ``widths`` (after padding to ``min_width``)."""
        lengths = torch.as_tensor(widths, dtype=torch.long).clamp(min=self.min_width)
        for _, pw in self.config.pools:
            lengths = torch.div(lengths, pw, rounding_mode="floor")
        return lengths

    def set_dropout(self, p: float) -> None:
        """Train with dropout ``p`` from now on, whatever the model was built with (a later training
        phase may want another amount than pretraining did): before and after the LSTM and between
        its layers. ``config`` records it, so a checkpoint saved afterwards is rebuilt with it."""
        self.config = dataclasses.replace(self.config, dropout=float(p))  # validates p
        self.dropout.p = self.config.dropout
        if self.config.lstm_layers > 1:
            self.lstm.dropout = self.config.dropout

    def _drop(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """Dropout with probability ``p`` in training (masks from :attr:`dropout_generator`)."""
        if self.dropout_generator is None or not self.training or p == 0:
            return F.dropout(x, p, self.training)
        keep = torch.empty_like(x).bernoulli_(1 - p, generator=self.dropout_generator)
        return x * keep / (1 - p)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, images: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images`` float ``(B, 1, height, W)`` (ink 1, paper/padding 0), ``widths`` long ``(B,)``.

        Returns ``log_probs`` float32 ``(T, B, C)`` (log-softmax over classes; frames past a sample's
        length are padding) and ``lengths`` long ``(B,)`` (valid frames per sample, on CPU)."""
        x, lengths = self.conv_features(images, widths)
        b, c, h, t = x.shape
        x = x.reshape(b, c * h, t).permute(2, 0, 1)  # (T, B, features)
        x = self._drop(x, self.dropout.p)

        lengths_cpu = lengths.cpu()
        if x.device.type == "cpu":
            x = self._bilstm_padded(x, lengths_cpu)
        else:
            x = self._bilstm_packed(x, lengths_cpu)
        x = self._drop(x, self.dropout.p)
        logits = self.head(x)
        return logits.float().log_softmax(-1), lengths_cpu

    def _bilstm_packed(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The BiLSTM over packed sequences (``x`` ``(T, B, F)``, ``lengths`` on the CPU): each
        direction reads only a sample's own frames; padded frames come out 0. One fused call,
        which cuDNN runs well; on the CPU see :meth:`_bilstm_padded`."""
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        return pad_packed_sequence(self.lstm(packed)[0], total_length=x.shape[0])[0]

    def _bilstm_padded(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """What :meth:`_bilstm_packed` computes, with the same weights, from padded sequences.

        On the CPU a packed LSTM whose samples differ in length runs on the native cells, ~3x
        slower than oneDNN's LSTM on a padded batch (forward + backward, 100 frames, batch 32;
        benchmarks/EXPERIMENTS.md). So each layer and direction runs alone on the padded batch:
        the forward direction reads the padding only after a sample's frames, and the reverse
        direction reads every sample's frames flipped in place (padding left at the end), its
        output flipped back. The frames that matter get the same values (up to float rounding);
        padded frames are set to 0 as the packed version leaves them."""
        lstm = self.lstm
        t, b, _ = x.shape
        steps = torch.arange(t)[:, None]
        valid = steps < lengths[None, :]  # (T, B)
        flip = torch.where(valid, lengths[None, :] - 1 - steps, steps).to(x.device)[:, :, None]
        valid = valid.to(device=x.device, dtype=x.dtype)[:, :, None]
        hidden = lstm.hidden_size
        zeros = x.new_zeros(1, b, hidden)
        for layer in range(lstm.num_layers):
            if layer > 0:
                x = self._drop(x, lstm.dropout)
            outputs = []
            for reverse in (False, True):
                weights = lstm.all_weights[2 * layer + reverse]  # weight_ih, weight_hh, bias_ih, bias_hh
                inputs = x.gather(0, flip.expand(-1, -1, x.shape[2])) if reverse else x
                out = torch.lstm(inputs, (zeros, zeros), weights, True, 1, 0.0, self.training, False, False)[0]
                outputs.append(out.gather(0, flip.expand(-1, -1, hidden)) if reverse else out)
            x = torch.cat(outputs, 2)
        return x * valid

    def conv_features(self, images: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The convolution stage of :meth:`forward` (same inputs): ``(features (B, C, H', T), lengths (B,))``,
        ``lengths`` the valid frames per sample (on the images' device)."""
        if images.dim() != 4 or images.shape[1] != 1 or images.shape[2] != self.config.height:
            raise ValueError(
                f"expected images of shape (B, 1, {self.config.height}, W), got {tuple(images.shape)}"
            )
        widths = torch.as_tensor(widths, dtype=torch.long, device=images.device)
        if widths.shape != images.shape[:1]:
            raise ValueError(f"expected {images.shape[0]} widths, got shape {tuple(widths.shape)}")
        if bool((widths > images.shape[-1]).any()) or bool((widths < 1).any()):
            raise ValueError(f"widths must be in [1, {images.shape[-1]}] (the padded image width)")
        widths = widths.clamp(min=self.min_width)
        if images.shape[-1] < self.min_width:
            images = F.pad(images, (0, self.min_width - images.shape[-1]))

        x, lengths = images.contiguous(memory_format=torch.channels_last), widths
        for block in self.cnn:
            x, lengths = block(x, lengths)
        return x, lengths


def create_model(preset: str | ModelConfig, num_classes: int, **overrides: Any) -> Recognizer:
    """A fresh :class:`Recognizer` from a preset name (``"small"``, ``"base"``) or a config,
    with fields replaced by ``overrides`` (e.g. ``lstm_layers=3``)."""
    if isinstance(preset, ModelConfig):
        config = preset
    else:
        try:
            config = PRESETS[preset]
        except KeyError:
            raise HwlearnError(
                f"unknown model preset {preset!r} (choose from {', '.join(PRESETS)})"
            ) from None
    if overrides:
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise HwlearnError(f"model config: unknown field(s) {', '.join(unknown)}")
        config = dataclasses.replace(config, **overrides)
    return Recognizer(config, num_classes)
