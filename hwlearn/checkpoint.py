"""Checkpoints: a recognizer's weights plus everything needed to use it, in one directory.

A checkpoint ``NAME/`` holds

- ``model.safetensors``: the model's state dict, float32 (``safetensors.torch.save_file``);
- ``meta.json``: ``{"format": "hwlearn-checkpoint", "version": 1, "charset": "...",
  "model_config": {...}, "preprocessing": {"height": ...}, "training": {...}, "metrics": {...},
  "created": "<ISO time>", "hwlearn_version": "..."}`` plus any other keys the caller adds;
- ``train_state.pt`` (optional): optimizer, scheduler, step, RNG states... as given by the
  training loop, only needed to resume training (a pickle: load only your own checkpoints).

Saving is atomic: the files are written and fsync'ed in a hidden temporary directory next to
``NAME`` which then replaces ``NAME`` by rename. An interrupted save leaves either the previous
checkpoint or the new one under ``NAME`` (at worst, between the two renames, the previous one as
``.NAME.old-*``), never a half-written one.

``list_checkpoints`` / ``prune_checkpoints`` manage a run directory of checkpoints (``best``,
``last``, and any others such as ``step-5000``); ``best`` and ``last`` are never pruned.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .charset import Charset
from .errors import HwlearnError
from .model import ModelConfig, create_model

FORMAT = "hwlearn-checkpoint"
VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
TRAIN_STATE_FILE = "train_state.pt"
#: Checkpoint names that :func:`prune_checkpoints` always keeps.
PROTECTED_NAMES = ("best", "last")
#: ``meta.json`` keys written by :func:`save_checkpoint` itself (values passed in ``meta`` are replaced).
RESERVED_KEYS = ("format", "version", "charset", "model_config", "created", "hwlearn_version")


# --------------------------------------------------------------------------------------------
# saving


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    charset: Charset | str,
    *,
    meta: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (it needs a ``.config`` with ``to_dict()``) as the checkpoint directory ``path``.

    ``meta`` is merged into ``meta.json`` (usually ``training``, ``metrics``, and ``preprocessing``
    when it differs from ``{"height": model.config.height}``); the :data:`RESERVED_KEYS` are always
    computed afresh, so the metadata of a loaded checkpoint can be passed back in. ``train_state``
    is stored with ``torch.save`` in ``train_state.pt``. An existing checkpoint at ``path`` is
    replaced atomically; an existing directory that is not a checkpoint is refused. Returns ``path``.
    """
    path = Path(path)
    charset = charset if isinstance(charset, Charset) else Charset.from_string(charset)
    model = getattr(model, "_orig_mod", model)  # a torch.compile'd model saves as the original
    num_classes = getattr(model, "num_classes", charset.num_classes)
    if num_classes != charset.num_classes:
        raise HwlearnError(
            f"{path}: the model has {num_classes} classes but the charset {len(charset)} symbols + blank"
        )
    record = _meta_record(model, charset, meta)
    weights = {
        name: (t.detach().to("cpu", torch.float32) if t.is_floating_point() else t.detach().cpu()).clone(memory_format=torch.contiguous_format)
        for name, t in model.state_dict().items()  # (safetensors stores contiguous tensors: not channels-last)
    }
    _require_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        save_file(weights, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        (tmp / META_FILE).write_text(record, encoding="utf-8")
        if train_state is not None:
            torch.save(train_state, tmp / TRAIN_STATE_FILE)
        file_mode = 0o666 & ~_umask()
        for f in tmp.iterdir():
            f.chmod(file_mode)  # safetensors writes 0600; make all files as readable as any other
            _fsync(f)
        _fsync(tmp)
        _replace_dir(tmp, path)
    except BaseException:  # including KeyboardInterrupt: never leave the temporary directory behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _meta_record(model: torch.nn.Module, charset: Charset, meta: dict[str, Any] | None) -> str:
    """The text of ``meta.json``."""
    config = model.config.to_dict() if hasattr(model.config, "to_dict") else dict(model.config)
    record: dict[str, Any] = {"format": FORMAT, "version": VERSION, "charset": charset.to_string(),
                              "model_config": config}
    record["preprocessing"] = {"height": config.get("height")}
    record["training"] = {}
    record["metrics"] = {}
    record.update({k: v for k, v in (meta or {}).items() if k not in RESERVED_KEYS})
    record["created"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    record["hwlearn_version"] = __version__
    try:
        return json.dumps(record, indent=2, ensure_ascii=False, default=_json_value) + "\n"
    except TypeError as exc:
        raise ValueError(f"checkpoint metadata is not JSON-serializable: {exc}") from None


def _json_value(obj: Any) -> Any:
    """JSON form of the non-JSON values metadata commonly holds (numpy/torch numbers, paths)."""
    if isinstance(obj, (np.generic, np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} value {obj!r}")


def _require_replaceable(path: Path) -> None:
    """Refuse to replace anything but a checkpoint (or an empty directory) at ``path``."""
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise HwlearnError(f"{path}: exists and is not a checkpoint directory; refusing to replace it")
    if (path / META_FILE).is_file() or not any(path.iterdir()):
        return
    raise HwlearnError(f"{path}: is a non-empty directory but not a checkpoint; refusing to replace it")


def _replace_dir(new: Path, final: Path) -> None:
    """Put directory ``new`` at ``final``; a previous ``final`` is moved aside first, deleted last."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:12]}"
        os.rename(final, old)
    try:
        os.rename(new, final)
    except BaseException:
        if old is not None:
            os.rename(old, final)
        raise
    _fsync(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    """Flush a file's or a directory's entries to disk (directories: where the OS allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# loading


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (in eval mode), its charset, ``meta.json`` as a dict, the directory."""

    model: torch.nn.Module
    charset: Charset
    meta: dict[str, Any]
    path: Path

    @property
    def height(self) -> int:
        """Image height the model expects (``meta["preprocessing"]["height"]``)."""
        return int(self.meta["preprocessing"]["height"])

    @property
    def layout(self):
        """The :class:`hwlearn.layout.Layout` real images get before the model reads them
        (``meta["preprocessing"]["layout"]``; ``as-is`` when none is recorded)."""
        from .layout import Layout

        return Layout.of(self.meta)

    def model_input(self, img):
        """uint8 image -> the model's input tensor: the checkpoint's layout, then
        :func:`hwlearn.data.to_model_input` at its height."""
        from .data import to_model_input

        return to_model_input(self.layout(img), self.height)


def load_checkpoint(
    path: str | Path,
    *,
    charset: Charset | str | None = None,
    device: str | torch.device = "cpu",
) -> Checkpoint:
    """Load the checkpoint directory ``path`` (or a file inside it), rebuilding the model from its
    ``model_config`` with :func:`hwlearn.model.create_model`.

    When ``charset`` is given, a checkpoint with a different charset is refused (the message says
    which symbols differ). Raises :class:`HwlearnError` for a missing directory or file, an unknown
    format or version, corrupt weights, or weights that do not fit the model config.
    """
    path = _checkpoint_dir(path)
    meta = read_meta(path)
    try:
        stored = Charset.from_string(meta["charset"])
    except HwlearnError as exc:
        raise HwlearnError(f"{path / META_FILE}: bad charset ({exc})") from None
    if charset is not None:
        expected = charset if isinstance(charset, Charset) else Charset.from_string(charset)
        if stored != expected:
            raise HwlearnError(f"{path}: checkpoint charset differs from the expected one: {charset_difference(stored, expected)}")
    try:
        config = ModelConfig.from_dict(meta["model_config"])
        model = create_model(config, stored.num_classes)
    except (HwlearnError, TypeError, ValueError) as exc:
        raise HwlearnError(f"{path / META_FILE}: bad model_config ({exc})") from None
    weights = _read_weights(path / WEIGHTS_FILE)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(first[1:2]).strip() or first[0]
        raise HwlearnError(f"{path / WEIGHTS_FILE}: weights do not fit the model config ({detail})") from None
    model.to(device).eval()
    return Checkpoint(model=model, charset=stored, meta=meta, path=path)


def charset_difference(have: Charset, want: Charset) -> str:
    """A short description of how charset ``have`` differs from ``want``."""
    missing = "".join(s for s in want.symbols if s not in have)
    extra = "".join(s for s in have.symbols if s not in want)
    parts = []
    if missing:
        parts.append(f"lacks {missing!r}")
    if extra:
        parts.append(f"has extra {extra!r}")
    if not parts:
        parts.append("same symbols in a different order")
    return f"{', '.join(parts)} ({len(have)} symbols vs {len(want)} expected)"


def read_meta(path: str | Path) -> dict[str, Any]:
    """``meta.json`` of the checkpoint directory ``path``, checked for format and version."""
    path = _checkpoint_dir(path)
    file = path / META_FILE
    if not file.is_file():
        raise HwlearnError(f"{path}: not an hwlearn checkpoint (no {META_FILE})")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HwlearnError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise HwlearnError(f"{file}: not a checkpoint description (a JSON object was expected)")
    if meta.get("format") != FORMAT:
        raise HwlearnError(f"{file}: unknown checkpoint format {meta.get('format')!r} (expected {FORMAT!r})")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= VERSION:
        raise HwlearnError(f"{file}: unsupported checkpoint version {version!r} (this hwlearn reads version {VERSION})")
    for key, kind in (("charset", str), ("model_config", dict)):
        if not isinstance(meta.get(key), kind):
            raise HwlearnError(f"{file}: missing or malformed {key!r}")
    meta.setdefault("preprocessing", {"height": meta["model_config"].get("height")})
    meta.setdefault("training", {})
    meta.setdefault("metrics", {})
    return meta


def _checkpoint_dir(path: str | Path) -> Path:
    """The checkpoint directory of ``path`` (which may name a file inside it); must exist."""
    path = Path(path)
    if path.name in (META_FILE, WEIGHTS_FILE, TRAIN_STATE_FILE) and path.is_file():
        return path.parent
    if not path.exists():
        leftovers = sorted(path.parent.glob(f".{path.name}.old-*")) if path.parent.is_dir() else []
        hint = f" (an interrupted save left the previous one as {leftovers[-1]})" if leftovers else ""
        raise HwlearnError(f"{path}: no such checkpoint{hint}")
    if not path.is_dir():
        raise HwlearnError(f"{path}: not a checkpoint directory")
    return path


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise HwlearnError(f"{file.parent}: incomplete checkpoint (no {file.name})")
    try:
        return load_file(str(file))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise HwlearnError(f"{file}: corrupt weights file ({reason})") from None


def load_train_state(path: str | Path, *, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The ``train_state`` saved with the checkpoint ``path`` (tensors mapped to ``device``).

    It is a pickle (it holds e.g. numpy RNG states): load only checkpoints you wrote yourself.
    """
    path = _checkpoint_dir(path)
    file = path / TRAIN_STATE_FILE
    if not file.is_file():
        raise HwlearnError(f"{path}: no training state ({TRAIN_STATE_FILE}); this checkpoint cannot resume training")
    try:
        return torch.load(file, map_location=device, weights_only=False)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise HwlearnError(f"{file}: cannot read training state ({reason})") from None


#: The name used in docs/architecture.md.
load_training_state = load_train_state


# --------------------------------------------------------------------------------------------
# a directory of checkpoints


@dataclass
class CheckpointInfo:
    """Summary of one checkpoint in a run directory (what ``hwlearn checkpoints list`` shows)."""

    name: str
    path: Path
    phase: str | None
    step: int | None
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    size: int = 0
    resumable: bool = False

    def sort_key(self) -> tuple:
        """Older first: by step, then creation time, then name."""
        return (self.step if self.step is not None else -1, self.created, self.name)


def list_checkpoints(directory: str | Path) -> list[CheckpointInfo]:
    """The checkpoints directly inside ``directory``, oldest first (by step, then creation time).

    Hidden entries (e.g. temporary directories of a save in progress) and subdirectories that are
    not readable checkpoints are ignored.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise HwlearnError(f"{directory}: no such directory" if not directory.exists() else f"{directory}: not a directory")
    infos = []
    for sub in directory.iterdir():
        if sub.name.startswith(".") or not sub.is_dir():
            continue
        try:
            meta = read_meta(sub)
        except HwlearnError:
            continue
        training = meta.get("training") if isinstance(meta.get("training"), dict) else {}
        step = training.get("step")
        infos.append(CheckpointInfo(
            name=sub.name,
            path=sub,
            phase=training.get("phase"),
            step=int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else None,
            metrics=meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {},
            created=str(meta.get("created", "")),
            size=sum(f.stat().st_size for f in sub.iterdir() if f.is_file()),
            resumable=(sub / TRAIN_STATE_FILE).is_file(),
        ))
    return sorted(infos, key=CheckpointInfo.sort_key)


def prune_checkpoints(directory: str | Path, keep: int, *, dry_run: bool = False) -> list[CheckpointInfo]:
    """Delete all but the ``keep`` newest checkpoints in ``directory`` (by step, then creation time).

    ``best`` and ``last`` are always kept and do not count toward ``keep``. With ``dry_run`` nothing
    is deleted. Returns the checkpoints removed (or that would be), oldest first.
    """
    if keep < 0:
        raise HwlearnError(f"--keep must be 0 or more, got {keep}")
    prunable = [info for info in list_checkpoints(directory) if info.name not in PROTECTED_NAMES]
    remove = prunable[: max(0, len(prunable) - keep)]
    if not dry_run:
        for info in remove:
            shutil.rmtree(info.path)
    return remove
