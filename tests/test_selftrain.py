"""Self-training's selection schedule."""

from __future__ import annotations

import pytest

from hwlearn.selftrain import AdaptConfig


def test_share_ramps_then_holds_at_the_end_share():
    config = AdaptConfig(rounds=7, ramp_rounds=5, start_share=0.4, end_share=0.8)
    assert [config.share(r) for r in range(1, 8)] == pytest.approx([0.4, 0.5, 0.6, 0.7, 0.8, 0.8, 0.8])


def test_fewer_rounds_than_the_ramp_still_reach_the_end_share():
    assert [AdaptConfig(rounds=3, ramp_rounds=5, end_share=0.8).share(r) for r in (1, 2, 3)] == pytest.approx(
        [0.4, 0.6, 0.8])
    assert AdaptConfig(rounds=1).share(1) == pytest.approx(0.9)
    assert AdaptConfig(rounds=4, ramp_rounds=1).share(1) == pytest.approx(0.9)


def test_adapt_command_defaults_are_the_library_defaults():
    from hwlearn.cli.adapt_cmd import adapt  # the CLI spells its defaults out (it starts without torch)

    defaults = {p.name: p.default for p in adapt.params}
    config = AdaptConfig()
    for name in ("rounds", "ramp_rounds", "steps_per_round", "start_share", "end_share", "synthetic_share",
                 "batch_size", "lr", "layout", "match_fonts", "views", "augment", "dropout"):
        assert defaults[name] == getattr(config, name), name


def test_train_command_dropout_is_the_library_default():
    from hwlearn.cli.train_cmd import train
    from hwlearn.recipes import FINETUNE_DROPOUT

    assert {p.name: p.default for p in train.params}["dropout"] == FINETUNE_DROPOUT
