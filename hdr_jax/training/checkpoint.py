"""Orbax checkpointing of the train state together with the grain iterator state.

Saving both in one step directory is what makes resumption exact: the restored run sees the same
next batch and the same per-step RNG as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from hdr_jax.training import parallel

_restore_failed = False  # see drop_abandoned_read_errors


class CheckpointMismatchError(ValueError):
    """A checkpoint does not match the model configuration it is restored into."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, read-only or vanished workdir). Orbax
    commits a step by renaming its finished temporary folder, so the previous checkpoints are
    intact and a rerun resumes from the latest of them."""


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind `e` (itself, or one it was raised from), if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _write_error(manager: ocp.CheckpointManager, step, e: BaseException) -> CheckpointWriteError:
    cause = _os_error(e) or e
    detail = getattr(cause, "strerror", None) or str(cause).splitlines()[0] or type(cause).__name__
    where = f"{manager.directory}/{step}" if step is not None else str(manager.directory)
    return CheckpointWriteError(f"cannot write checkpoint {where} ({detail})")


class _ReportedWriteErrors(logging.Filter):
    """Orbax logs a failed asynchronous save with its traceback from the saving thread; the
    same error reaches the caller as CheckpointWriteError, reported there in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not ("orbax" in record.pathname and exc is not None and _os_error(exc) is not None)


_WRITE_ERROR_FILTER = _ReportedWriteErrors()


def make_manager(directory: str, *, max_to_keep: int = 3) -> ocp.CheckpointManager:
    logging.getLogger("absl").addFilter(_WRITE_ERROR_FILTER)  # idempotent: a set of filters
    return ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
    )


def save(manager: ocp.CheckpointManager, state: Any, data_iterator: Any | None = None) -> None:
    """Starts saving `state` (and the iterator) as its step; CheckpointWriteError if the
    filesystem refuses it (here, or for the previous asynchronous save)."""
    step = int(jax.device_get(state.step))
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    try:
        manager.save(step, args=ocp.args.Composite(**items))
    except Exception as e:
        if _os_error(e) is None:
            raise
        raise _write_error(manager, step, e) from e


def finish(manager: ocp.CheckpointManager) -> None:
    """Waits for the last asynchronous save and closes the manager (CheckpointWriteError if
    that save failed)."""
    try:
        manager.wait_until_finished()
    except Exception as e:
        if _os_error(e) is None:
            raise
        raise _write_error(manager, manager.latest_step(), e) from e
    finally:
        manager.close()


def restore(
    manager: ocp.CheckpointManager,
    template: Any,
    data_iterator: Any | None = None,
    step: int | None = None,
) -> Any:
    """Restores into `template` (shapes/dtypes) and, if given, `data_iterator` in place.

    Arrays restore with the template's shardings; abstract leaves without one (`eval_shape`)
    restore replicated on every device, whatever the layout the checkpoint was saved from.
    """
    step = manager.latest_step() if step is None else step
    everywhere = parallel.replicated(parallel.make_mesh())
    template = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=everywhere)
        if isinstance(x, jax.ShapeDtypeStruct) and x.sharding is None
        else x,
        template,
    )
    items = {"state": ocp.args.StandardRestore(template)}
    if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    global _restore_failed
    try:
        restored = manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
        _restore_failed = True
        raise CheckpointMismatchError(
            f"checkpoint {manager.directory}/{step} does not match the configured model or "
            f"cannot be read: {first_line(e)}"
        ) from e
    except Exception as e:  # tensorstore's read errors of a damaged file (not a config mismatch)
        _restore_failed = True
        raise CheckpointMismatchError(
            f"checkpoint {manager.directory}/{step} cannot be read (damaged?): {first_line(e)}; "
            "remove that step's folder to resume from the one before"
        ) from e
    _check_shapes(template, restored["state"], f"{manager.directory}/{step}")
    return restored["state"]


def drop_abandoned_read_errors() -> None:
    """Keeps the errors of a failed restore's abandoned reads off stderr, for the rest of the
    process.

    When one array of a step fails to read, orbax gives up on the others while tensorstore still
    reads them: their callbacks then fail on the closed event loop, and the coroutines, tasks and
    gathering futures left behind report the read error again when they are collected. Python
    prints each as an unraisable error or an asyncio log record, at any moment, in or between
    the lines of the real reason. With this hook, once a restore has failed, those two channels
    are dropped (and "Event loop is closed" always): what they carry is that failure again,
    which `restore` raises. Before a failure they pass to the hook and the log that were there.

    A program that reports a failed restore itself installs this once, at its start (a hook set
    later would be undone by an enclosing block that restores the hook it found).
    """
    previous = sys.unraisablehook
    if getattr(previous, "drops_abandoned_read_errors", False):
        return

    def hook(unraisable):
        # The callbacks fail on the closed loop while orbax is still unwinding, before
        # `restore` sees the failure; no other error of a training program looks like that.
        closed_loop = (isinstance(unraisable.exc_value, RuntimeError)
                       and str(unraisable.exc_value) == "Event loop is closed")
        if not (_restore_failed or closed_loop):
            previous(unraisable)

    hook.drops_abandoned_read_errors = True
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(lambda record: not _restore_failed)


def first_line(e: BaseException) -> str:
    """The reason of an error of a library, in one line (its first, tensorstore's spec cut)."""
    text = str(e).strip()
    if not text:
        return type(e).__name__
    # tensorstore appends its whole spec ("[tensorstore_spec=...]") or a bound method's repr
    # ("See full TensorStore details: <bound ...>") to the reason.
    return text.splitlines()[0].split(" [tensorstore_spec")[0].split(". See full")[0]


def _check_shapes(template: Any, restored: Any, where: str) -> None:
    t_leaves = jax.tree_util.tree_leaves_with_path(template)
    r_leaves = jax.tree.leaves(restored)
    if len(t_leaves) != len(r_leaves):
        raise CheckpointMismatchError(
            f"checkpoint {where} has {len(r_leaves)} arrays, model expects {len(t_leaves)}"
        )
    for (path, t), r in zip(t_leaves, r_leaves):
        if np.shape(t) != np.shape(r):
            raise CheckpointMismatchError(
                f"checkpoint {where}: {jax.tree_util.keystr(path)} has shape {np.shape(r)}, "
                f"model expects {np.shape(t)}"
            )


def write_config(workdir: str, config: ml_collections.ConfigDict, *, write: bool = True) -> None:
    """Records the config; refuses to resume a workdir trained with a different model config.

    `write=False` only checks (the processes of a run but the first).
    """
    path = os.path.join(workdir, "config.json")
    current = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
        try:
            with open(path) as f:
                previous = json.load(f)
            if not isinstance(previous, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            raise CheckpointMismatchError(
                f"{path}: cannot be read as the run's config ({first_line(e)}); use a new "
                "--workdir"
            ) from None
        if previous.get("model") != current.get("model"):
            raise CheckpointMismatchError(
                f"{workdir} holds a run with a different model config; use a new --workdir"
            )
        return
    if not write:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(current, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
