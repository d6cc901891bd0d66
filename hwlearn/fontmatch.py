"""Font matching: which fonts draw words most like the user's images, found without labels.

A recognizer's convolutional features describe how a word image looks — stroke width, slant,
loops, letter widths — more than what it says. :func:`rank_fonts` renders ``words_per_font``
words with each font, takes the mean and spread over time of the last convolution block's
output for every image (:func:`look_features`), and ranks the fonts by the distance between the
mean feature vector of the font's words and that of the real images, each feature scaled by its
spread over the real images (a diagonal Mahalanobis distance). On George Washington's 18th-century
longhand the closest fonts are the formal scripts (Meddon, Mrs Saint Delafield, Homemade Apple,
Herr Von Muellerhoff, ...), the farthest the round print hands (Patrick Hand, Coming Soon).

Adaptation uses the ranking to draw its synthetic words from the closest fonts
(:class:`hwlearn.selftrain.AdaptConfig` ``match_fonts``, ``hwlearn adapt --match-fonts K``; 20 by
default, 0: all fonts). On a weak GW model (CER 0.24) it did not lower the label-free CER; at today's
accuracy 20 matched fonts read the train labels a little better on average over eight GW models
(better on four, worse on three) and on DHSD
(``benchmarks/EXPERIMENTS.md``, sessions 56 and 57).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .data import collate, to_model_input
from .errors import HwlearnError


@torch.no_grad()
def look_features(model, tensors: Sequence[torch.Tensor], *, device="cpu", batch_size: int = 64) -> np.ndarray:
    """``(N, 2F)`` float32: per image, the mean and standard deviation over its valid frames of the
    model's last convolution block (``F`` = channels x rows). ``tensors`` are model inputs
    ``(1, height, W)``. The model is left in the mode it was in."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(tensors)), key=lambda i: tensors[i].shape[-1])
    rows: dict[int, np.ndarray] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        images, widths, _ = collate([(tensors[i], None) for i in idx])
        x, lengths = model.conv_features(images.to(device), widths.to(device))
        x = x.flatten(1, 2).float().cpu()  # (B, F, T)
        for b, i in enumerate(idx):
            valid = x[b, :, : max(1, int(lengths[b]))]
            rows[i] = torch.cat([valid.mean(1), valid.std(1, unbiased=False)]).numpy()
    model.train(was_training)
    out = [rows[i] for i in range(len(tensors))]
    return np.stack(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def rank_fonts(model, height: int, real: Sequence[torch.Tensor], synthetic, *, words_per_font: int = 40,
               seed: int = 0, device="cpu") -> list[tuple[str, float]]:
    """``[(font name, distance), ...]`` closest first: every font of ``synthetic.renderer.fonts``
    that can draw enough of ``synthetic``'s words, by the distance of its words' looks to those of
    the ``real`` model inputs. ``synthetic`` is a :class:`hwlearn.synth.SyntheticWords` (its words
    are drawn with its sampler, then rendered by each font in turn)."""
    if len(real) < 2:
        raise HwlearnError("font matching needs at least 2 real images")
    real_features = look_features(model, real, device=device)
    centre, spread = real_features.mean(0), real_features.std(0) + 1e-3
    renderer = synthetic.renderer
    words = [synthetic.word(i) for i in range(20 * words_per_font)]
    ranking = []
    for k, font in enumerate(renderer.fonts):
        drawable = [w for w in words if w.strip() and font.covers(w)][:words_per_font]
        if len(drawable) < max(2, words_per_font // 4):
            continue  # too few of the corpus' words: the font could not be used anyway
        images = [to_model_input(renderer.render_with_font(w, font, np.random.default_rng([seed, k, j])), height)
                  for j, w in enumerate(drawable)]
        look = look_features(model, images, device=device).mean(0)
        ranking.append((font.name, float(np.sqrt((((look - centre) / spread) ** 2).mean()))))
    if not ranking:
        raise HwlearnError("no font can draw enough of the corpus' words to be matched")
    return sorted(ranking, key=lambda item: item[1])


def closest_fonts(ranking: Sequence[tuple[str, float]], library, charset, k: int) -> list[str]:
    """The ``k`` closest fonts of ``ranking``, plus — further down the ranking — each font that draws a
    character of ``charset`` none of the chosen ones draws (so no character drops out of the
    synthetic words), in ranking order. ``library`` is the :class:`hwlearn.fonts.FontLibrary` ranked."""
    by_name = {f.name: f for f in library}
    chosen = [name for name, _ in ranking[:k]]
    drawn = set().union(*(by_name[n].codepoints for n in chosen)) if chosen else set()
    needed = {ord(ch) for ch in charset.symbols} - {ord(" ")}
    for name, _ in ranking[k:]:
        adds = (by_name[name].codepoints & needed) - drawn
        if adds:
            chosen.append(name)
            drawn |= by_name[name].codepoints
    return chosen
