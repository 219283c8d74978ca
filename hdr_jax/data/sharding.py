"""Per-process shards of a grain training stream with the global order of one process, and the
seeds of a stream's independent random parts."""

from __future__ import annotations

import grain
import numpy as np

#: Offsets that decorrelate the shuffle, augmentation and validation streams of one seed.
SHUFFLE_STREAM, AUGMENT_STREAM, EVAL_STREAM = 0, 1, 2


def derive_seed(seed: int, stream: int) -> int:
    """The seed of one random part (``stream``) of a pipeline seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def batch_for_process(
    ds: grain.MapDataset, batch_size: int, process_index: int = 0, process_count: int = 1
) -> grain.MapDataset:
    """Batches of this process's rows of each global batch of the example stream `ds`.

    Global batch s is examples [s B, (s + 1) B) of `ds` (B = `batch_size`), as with one process;
    process p of P loads rows [p b, (p + 1) b) of it, b = B / P, i.e. every P-th batch of size b
    starting at p. Together the processes see exactly the one-process stream, so a run's data
    depend on its seed, not on how many processes read them; each reads only its own rows.
    """
    if batch_size % process_count:
        raise ValueError(
            f"batch_size {batch_size} does not divide over {process_count} processes"
        )
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must lie in [0, {process_count}), got {process_index}")
    ds = ds.batch(batch_size // process_count, drop_remainder=True)
    return ds if process_count == 1 else ds[process_index::process_count]
