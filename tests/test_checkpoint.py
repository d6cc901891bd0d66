"""Tests of hwlearn.checkpoint (save/load, atomic replace, refusals, list/prune) and `hwlearn checkpoints`."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import hwlearn.checkpoint as ckpt_module
from hwlearn.charset import Charset
from hwlearn.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    load_train_state,
    prune_checkpoints,
    read_meta,
    save_checkpoint,
)
from hwlearn.cli import main
from hwlearn.errors import HwlearnError
from hwlearn.model import create_model

CHARSET = Charset("abcäö ")


def tiny_model(seed: int = 0, charset: Charset = CHARSET) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("small", charset.num_classes, channels=(4, 8), pools=((2, 2), (2, 2)),
                         lstm_hidden=8, lstm_layers=1)
    for name, buf in model.named_buffers():  # non-trivial batch-norm statistics must survive too
        if name.endswith("running_mean"):
            buf.normal_()
        elif name.endswith("running_var"):
            buf.uniform_(0.5, 2.0)
    return model.eval()


def outputs(model, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(3, 1, 32, 48, generator=g)
    with torch.no_grad():
        return model(images, torch.tensor([48, 40, 20]))[0]


def save(path, seed=0, step=0, **kw):
    meta = {"training": {"phase": "pretrain", "step": step}, "metrics": {"val_cer": round(1 - step / 1000, 3)}}
    meta.update(kw.pop("meta", {}))
    return save_checkpoint(path, tiny_model(seed), CHARSET, meta=meta, **kw)


# ---- save and load ---------------------------------------------------------------------------


def test_save_load_gives_identical_outputs_and_metadata(tmp_path):
    model = tiny_model()
    meta = {"training": {"phase": "pretrain", "step": 7, "seconds": 1.5},
            "metrics": {"val_cer": np.float32(0.25), "n": torch.tensor(3)}, "fonts": ["a.ttf"]}
    path = save_checkpoint(tmp_path / "run" / "last", model, CHARSET, meta=meta)
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "model.safetensors"]
    loaded = load_checkpoint(path, charset=CHARSET)
    assert torch.equal(outputs(loaded.model), outputs(model))
    assert not loaded.model.training and loaded.charset == CHARSET and loaded.height == 32
    m = loaded.meta
    assert m["format"] == "hwlearn-checkpoint" and m["version"] == 1 and m["charset"] == "abcäö "
    assert m["model_config"] == model.config.to_dict() and m["preprocessing"] == {"height": 32}
    assert m["training"]["step"] == 7 and m["metrics"] == {"val_cer": 0.25, "n": 3} and m["fonts"] == ["a.ttf"]
    assert m["created"] and m["hwlearn_version"]
    # a file inside the directory names the checkpoint too; the charset may be given as a string
    assert load_checkpoint(path / "meta.json", charset="abcäö ").path == path


def test_meta_of_a_loaded_checkpoint_can_be_passed_back(tmp_path):
    first = load_checkpoint(save(tmp_path / "a", step=3))
    stale = {**first.meta, "charset": "zzz", "model_config": {"bogus": 1}, "created": "long ago"}
    save_checkpoint(tmp_path / "b", first.model, first.charset, meta=stale)
    again = read_meta(tmp_path / "b")
    assert again["charset"] == CHARSET.to_string() and again["model_config"] == first.meta["model_config"]
    assert again["created"] != "long ago" and again["training"]["step"] == 3


def test_train_state_round_trip_with_rng_states(tmp_path):
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(1, 1, 32, 16), torch.tensor([16]))[0].sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "step": 11, "rng": {
        "python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}}
    save_checkpoint(tmp_path / "last", model, CHARSET, train_state=state)
    loaded = load_train_state(tmp_path / "last")
    assert loaded["step"] == 11 and loaded["rng"]["python"] == state["rng"]["python"]
    assert np.array_equal(loaded["rng"]["numpy"][1], state["rng"]["numpy"][1])
    fresh = torch.optim.AdamW(tiny_model().parameters(), lr=1e-3)
    fresh.load_state_dict(loaded["optimizer"])
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    with pytest.raises(HwlearnError, match="no training state"):
        load_train_state(save(tmp_path / "best"))


def test_save_refuses_a_model_charset_mismatch(tmp_path):
    with pytest.raises(HwlearnError, match="classes but the charset"):
        save_checkpoint(tmp_path / "x", tiny_model(), Charset("ab"))
    assert not (tmp_path / "x").exists()


# ---- atomic replacement ----------------------------------------------------------------------


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save(tmp_path / "last", seed=0, step=1)
    before = outputs(load_checkpoint(path).model)

    def crash(*args, **kwargs):  # weights and meta are written, the train state write dies midway
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_module.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save(path, seed=1, step=2, train_state={"step": 2})
    monkeypatch.undo()
    kept = load_checkpoint(path)
    assert kept.meta["training"]["step"] == 1 and torch.equal(outputs(kept.model), before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no temporary directory left


def test_failed_rename_restores_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save(tmp_path / "last", step=1)
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new directory moving into place
            raise OSError("interrupted")
        return real_rename(src, dst)

    monkeypatch.setattr(ckpt_module.os, "rename", rename)
    with pytest.raises(OSError, match="interrupted"):
        save(path, seed=1, step=2)
    monkeypatch.undo()
    assert read_meta(path)["training"]["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_successful_replace_and_refusal_to_replace_other_directories(tmp_path):
    path = save(tmp_path / "last", seed=0, step=1)
    save(path, seed=1, step=2)
    assert read_meta(path)["training"]["step"] == 2
    assert torch.equal(outputs(load_checkpoint(path).model), outputs(tiny_model(1)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    with pytest.raises(HwlearnError, match="not a checkpoint; refusing to replace it"):
        save(precious)
    assert (precious / "thesis.txt").read_text() == "do not delete"


# ---- refusals --------------------------------------------------------------------------------


def test_charset_mismatch_is_refused_with_the_difference(tmp_path):
    path = save(tmp_path / "c")
    with pytest.raises(HwlearnError) as exc:
        load_checkpoint(path, charset=Charset("abcüx "))
    message = str(exc.value)
    assert message.startswith(f"{path}: checkpoint charset differs") and "lacks 'üx'" in message
    assert "has extra 'äö'" in message
    with pytest.raises(HwlearnError, match="same symbols in a different order"):
        load_checkpoint(path, charset=Charset("cbaäö "))


def _edit_meta(path, **changes):
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    meta.update(changes)
    (path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"format": "something-else"}, "unknown checkpoint format 'something-else'"),
        ({"version": 2}, "unsupported checkpoint version 2"),
        ({"version": "1"}, "unsupported checkpoint version '1'"),
        ({"charset": None}, "missing or malformed 'charset'"),
        ({"model_config": {"height": 32, "wings": 2}}, "bad model_config"),
    ],
)
def test_bad_metadata_is_refused(tmp_path, changes, message):
    path = save(tmp_path / "c")
    _edit_meta(path, **changes)
    with pytest.raises(HwlearnError, match=message):
        load_checkpoint(path)


def test_missing_and_corrupt_files_are_refused(tmp_path):
    with pytest.raises(HwlearnError, match="nothing: no such checkpoint"):
        load_checkpoint(tmp_path / "nothing")
    path = save(tmp_path / "c")
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(HwlearnError, match="model.safetensors: corrupt weights file"):
        load_checkpoint(path)
    weights.unlink()
    with pytest.raises(HwlearnError, match="incomplete checkpoint \\(no model.safetensors\\)"):
        load_checkpoint(path)
    (path / "meta.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(HwlearnError, match="meta.json: not valid JSON"):
        load_checkpoint(path)
    (path / "meta.json").unlink()
    with pytest.raises(HwlearnError, match="not an hwlearn checkpoint"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    path = save(tmp_path / "c")
    _edit_meta(path, model_config={**read_meta(path)["model_config"], "lstm_hidden": 9})
    with pytest.raises(HwlearnError, match="weights do not fit the model config"):
        load_checkpoint(path)


# ---- a directory of checkpoints --------------------------------------------------------------


def make_run(tmp_path):
    run = tmp_path / "run"
    for step in (300, 100, 500, 200, 400):
        save(run / f"step-{step}", step=step)
    save(run / "best", step=200)
    save(run / "last", step=500, train_state={"step": 500})
    (run / "notes").mkdir()
    (run / "notes" / "x.txt").write_text("not a checkpoint")
    (run / ".last.tmp-dead").mkdir()  # left by a killed save
    (run / "metrics.jsonl").write_text("{}\n")
    return run


def test_list_checkpoints_sorted_with_summaries(tmp_path):
    run = make_run(tmp_path)
    infos = list_checkpoints(run)
    assert [i.step for i in infos] == [100, 200, 200, 300, 400, 500, 500]
    assert {i.name for i in infos} == {"best", "last"} | {f"step-{s}" for s in range(100, 501, 100)}
    last = next(i for i in infos if i.name == "last")
    assert last.step == 500 and last.phase == "pretrain" and last.resumable and last.path == run / "last"
    assert last.metrics == {"val_cer": 0.5} and last.size > 1000 and last.created
    assert not next(i for i in infos if i.name == "best").resumable
    with pytest.raises(HwlearnError, match="no such directory"):
        list_checkpoints(tmp_path / "none")


def test_prune_keeps_newest_and_always_best_and_last(tmp_path):
    run = make_run(tmp_path)
    would = prune_checkpoints(run, keep=2, dry_run=True)
    assert [i.name for i in would] == ["step-100", "step-200", "step-300"]
    assert len(list_checkpoints(run)) == 7  # dry run deletes nothing
    removed = prune_checkpoints(run, keep=2)
    assert [i.name for i in removed] == ["step-100", "step-200", "step-300"]
    assert sorted(p.name for p in run.iterdir()) == [
        ".last.tmp-dead", "best", "last", "metrics.jsonl", "notes", "step-400", "step-500"]
    assert [i.name for i in prune_checkpoints(run, keep=0)] == ["step-400", "step-500"]
    assert {i.name for i in list_checkpoints(run)} == {"best", "last"}
    with pytest.raises(HwlearnError, match="--keep must be 0 or more"):
        prune_checkpoints(run, keep=-1)


# ---- the CLI ---------------------------------------------------------------------------------


def test_cli_list_table_and_json(tmp_path):
    run = make_run(tmp_path)
    result = CliRunner().invoke(main, ["checkpoints", "list", str(run)])
    assert result.exit_code == 0, result.output
    for name in ("step-100", "step-500", "best", "last", "val_cer=0.5"):
        assert name in result.stderr
    assert "notes" not in result.stderr
    result = CliRunner().invoke(main, ["checkpoints", "list", str(run), "--json"])
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["step"] for r in rows][0] == 100 and {r["name"] for r in rows} >= {"best", "last"}
    assert next(r for r in rows if r["name"] == "last")["resumable"] is True


def test_cli_prune_dry_run_then_real(tmp_path):
    run = make_run(tmp_path)
    result = CliRunner().invoke(main, ["checkpoints", "prune", str(run), "--keep", "1", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would remove 4 checkpoint(s)" in result.stderr and (run / "step-100").exists()
    result = CliRunner().invoke(main, ["checkpoints", "prune", str(run), "--keep", "1"])
    assert result.exit_code == 0 and "removed 4 checkpoint(s)" in result.stderr and "3 kept" in result.stderr
    assert {i.name for i in list_checkpoints(run)} == {"best", "last", "step-500"}


def test_cli_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(main, ["checkpoints", "list", str(tmp_path / "missing")])
    assert result.exit_code == 2 and result.stderr.strip() == f"Error: {tmp_path / 'missing'}: no such directory"
    result = CliRunner().invoke(main, ["checkpoints", "prune", str(tmp_path)])
    assert result.exit_code == 2 and "--keep" in result.stderr


def test_channels_last_model_saves_contiguous_and_loads_channels_last(tmp_path):
    from safetensors.torch import load_file

    model = tiny_model()
    conv = model.cnn[1].conv.weight  # (the first block's has one input channel: both layouts at once)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    path = save_checkpoint(tmp_path / "ck", model, CHARSET)
    stored = load_file(str(path / "model.safetensors"))
    assert all(t.is_contiguous() for t in stored.values())
    loaded = load_checkpoint(path).model
    assert loaded.cnn[1].conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(loaded.cnn[1].conv.weight, conv)
    x, w = torch.rand(2, 1, 32, 40), torch.tensor([40, 24])  # an NCHW input works as well
    assert torch.allclose(loaded(x, w)[0], model(x, w)[0])
