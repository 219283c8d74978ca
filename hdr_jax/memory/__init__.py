"""Memory budgets: compiled peak memory of training and inference, and settings that fit.

Three modules: `analysis` (compile-only buffer sizes and FLOPs), `budget` (training settings
that fit a budget) and `tiles` (pipeline tile sizes that fit one); the public names of all three
are importable from here.

Everything here is *compile-only*: functions are lowered on abstract shapes
(`jax.ShapeDtypeStruct`) and compiled, and XLA's buffer assignment is read back from
`compiled.memory_analysis()`. Nothing is executed and no array of the model's size is allocated,
so a budget can be checked on a laptop CPU before a long run on a small GPU.

Peak = argument + output - alias + temp bytes: the buffers XLA allocates for one call. Outputs
aliased to donated arguments (the train state, donated as `training.loop` does) are counted
once. Not counted: the runtime's own allocations, Python, and (on a GPU) the framework's
workspace and fragmentation, so leave some headroom in the budget. The buffer assignment is that
of the CPU backend; a GPU's fusion decisions differ a little.

Buffer assignment happens before code generation, so the analysis compiles with
`xla_backend_optimization_level=0` (`ANALYSIS_OPTIONS`): the same numbers, several times faster.
"""

from hdr_jax.memory.analysis import (
    ANALYSIS_OPTIONS,
    analysis,
    MemoryBudgetError,
    MemoryStats,
    compiled_peak_bytes,
    format_bytes,
    inference_analysis,
    inference_fn,
    lower_inference,
    lower_training,
    memory_stats,
    param_bytes,
    parse_bytes,
    set_patch,
    training_analysis,
    training_setup,
    training_step_fn,
)
from hdr_jax.memory.budget import (
    apply_training_budget,
    cfnet_settings,
    choose_training_settings,
    drtmo_settings,
    training_candidates,
)
from hdr_jax.memory.tiles import choose_pipeline_tiles, choose_tile

__all__ = [
    "ANALYSIS_OPTIONS", "MemoryBudgetError", "analysis", "MemoryStats", "apply_training_budget",
    "cfnet_settings", "choose_pipeline_tiles", "choose_tile", "choose_training_settings",
    "compiled_peak_bytes", "drtmo_settings", "format_bytes", "inference_analysis", "inference_fn",
    "lower_inference", "lower_training", "memory_stats", "param_bytes", "parse_bytes",
    "set_patch", "training_analysis", "training_candidates", "training_setup", "training_step_fn",
]
