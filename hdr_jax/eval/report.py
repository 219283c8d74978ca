"""Result files of the evaluations: Markdown tables and strict JSON (NaN/inf as null).

Every evaluation writes its ``results.json`` and ``results.md`` through :func:`write_results`:
atomically, and only over existing files when asked to.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hdr_jax import io as hdr_io

__all__ = [
    "RESULT_FILES",
    "existing_results",
    "fmt",
    "jsonable",
    "markdown_table",
    "publish",
    "refuse_existing",
    "write_json",
    "write_results",
]

RESULT_FILES = ("results.json", "results.md")


def fmt(v: Any, digits: int = 2) -> str:
    """A table cell: floats with ``digits`` decimals, NaN/inf and None as an en dash."""
    if v is None:
        return "–"
    if isinstance(v, float | np.floating):
        return f"{v:.{digits}f}" if math.isfinite(v) else "–"
    return str(v)


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]], digits: int = 2) -> str:
    """A Markdown table, cells formatted by :func:`fmt` (strings are written as they are)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(fmt(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def jsonable(obj: Any) -> Any:
    """A results tree as plain JSON values: arrays as lists, NumPy scalars as Python ones,
    NaN/inf as None (``np.asarray(..., float)`` reads null back as NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.floating | np.integer | np.bool_):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_text(path: Path, text: str, overwrite: bool) -> None:
    with hdr_io.atomic_output(path, overwrite=overwrite) as tmp:
        Path(tmp).write_text(text)


def _json_text(obj: Any, *, indent: int) -> str:
    return json.dumps(jsonable(obj), indent=indent, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any, *, overwrite: bool = True, indent: int = 1) -> Path:
    """Writes ``jsonable(obj)`` atomically (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_text(path, _json_text(obj, indent=indent), overwrite)
    return path


def existing_results(out_dir: str | Path) -> list[Path]:
    """The result files already in ``out_dir`` (checked before a long evaluation starts)."""
    return [p for p in (Path(out_dir) / n for n in RESULT_FILES) if p.exists()]


def refuse_existing(out_dir: str | Path, *, overwrite: bool) -> None:
    """Raises ImageIOError naming the first result file in ``out_dir`` unless ``overwrite``
    (checked before a long evaluation starts, and again before writing)."""
    for p in (Path(out_dir) / n for n in RESULT_FILES):
        if p.is_dir():  # not replaced even with overwrite
            raise hdr_io.ImageIOError(f"{p}: is a directory")
    if not overwrite:
        for p in existing_results(out_dir):
            raise hdr_io.ImageIOError(f"{p}: exists (use --overwrite to replace it)")


def write_results(
    out_dir: str | Path, res: Any, markdown: str, *, overwrite: bool
) -> tuple[Path, Path]:
    """Writes results.json (strict JSON, NaN as null) and results.md into ``out_dir``.

    Both are written as one set (:class:`hdr_io.OutputSet`): either both are in place or the
    folder is left as it was.
    """
    out_dir = Path(out_dir)
    paths = tuple(out_dir / n for n in RESULT_FILES)
    refuse_existing(out_dir, overwrite=overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    with hdr_io.OutputSet(overwrite=overwrite) as out:
        out.write_bytes(paths[0], _json_text(res, indent=2).encode())
        out.write_bytes(paths[1], markdown.encode())
    return paths


def publish(out_dir: str | Path, res: Any, markdown: str, *, overwrite: bool) -> tuple[Path, Path]:
    """:func:`write_results`, then the table and where it went on stdout."""
    paths = write_results(out_dir, res, markdown, overwrite=overwrite)
    print(markdown)
    print(f"wrote {paths[0]} and {paths[1]}")
    return paths
