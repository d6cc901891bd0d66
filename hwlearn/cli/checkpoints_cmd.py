"""``hwlearn checkpoints``: list and prune the checkpoints of a run directory."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
def checkpoints() -> None:
    """List and prune the checkpoints in a run directory.

    A checkpoint is a directory holding model.safetensors and meta.json (and train_state.pt when
    it can resume training). `best` and `last` are never pruned.
    """


@checkpoints.command("list")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per checkpoint to stdout instead of a table.")
def list_command(directory: Path, as_json: bool) -> None:
    """List the checkpoints in DIRECTORY, oldest first (by step, then creation time).

    \b
    Example:
      hwlearn checkpoints list runs/pretrain
    """
    from ..checkpoint import list_checkpoints
    from ..console import console

    infos = list_checkpoints(directory)
    if as_json:
        for info in infos:
            click.echo(json.dumps({
                "name": info.name, "path": str(info.path), "phase": info.phase, "step": info.step,
                "metrics": info.metrics, "created": info.created, "size": info.size,
                "resumable": info.resumable,
            }, ensure_ascii=False))
        return
    if not infos:
        console.print(f"no checkpoints in {_escape(directory)}")
        return
    console.print(_table(directory, infos))


@checkpoints.command("prune")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--keep", "-k", required=True, type=click.IntRange(min=0), metavar="K",
              help="Keep the K newest checkpoints (by step, then creation time) besides best and last.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
def prune_command(directory: Path, keep: int, dry_run: bool) -> None:
    """Delete all but the K newest checkpoints in DIRECTORY; `best` and `last` are always kept.

    \b
    Example:
      hwlearn checkpoints prune runs/pretrain --keep 3 --dry-run
    """
    from ..checkpoint import list_checkpoints, prune_checkpoints
    from ..console import console

    removed = prune_checkpoints(directory, keep, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for info in removed:
        console.print(f"{verb} {_escape(info.path)} (step {info.step if info.step is not None else '?'}, {_size(info.size)})")
    freed = sum(info.size for info in removed)
    kept = len(list_checkpoints(directory)) - (len(removed) if dry_run else 0)
    console.print(f"{verb} {len(removed)} checkpoint(s), {_size(freed)}; {kept} kept")


def _table(directory: Path, infos):
    from rich.table import Table

    table = Table(title=f"checkpoints in {_escape(directory)}")
    for column, justify in (("name", "left"), ("phase", "left"), ("step", "right"), ("metrics", "left"),
                            ("created", "left"), ("size", "right"), ("resume", "center")):
        table.add_column(column, justify=justify)
    for info in infos:
        table.add_row(
            _escape(info.name),
            _escape(info.phase or ""),
            "" if info.step is None else str(info.step),
            _escape(_metrics(info.metrics)),
            _escape(info.created.replace("T", " ")[:19]),
            _size(info.size),
            "yes" if info.resumable else "",
        )
    return table


def _metrics(metrics: dict) -> str:
    parts = []
    for key, value in metrics.items():
        if isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        elif isinstance(value, (int, str)):
            parts.append(f"{key}={value}")
    return " ".join(parts)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _escape(text) -> str:
    from rich.markup import escape

    return escape(str(text))
