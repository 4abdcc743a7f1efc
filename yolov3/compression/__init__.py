"""Model compression: unstructured magnitude pruning (masks, schedules, a training callback), lottery tickets
and per-layer sensitivity (``yolov3.compression.lottery``, ``yolov3.compression.sensitivity``; they pull in the
trainer, so they are imported from their modules), and the CLI ``python -m yolov3.prune``.
"""

from yolov3.compression.masks import (
    DEFAULT_SKIP,
    LayerSparsity,
    SparsityReport,
    apply_masks,
    effective_weight,
    finalize_pruning,
    is_pruned,
    magnitude_prune,
    prunable_layers,
    prune_to_sparsity,
    pruning_masks,
    refresh_pruned_tensors,
    sparsity_report,
)
from yolov3.compression.pruning_callback import GradualPruningCallback
from yolov3.compression.schedules import (
    PruningConfig,
    cubic_sparsity,
    is_pruning_step,
    iterative_sparsity,
    load_pruning_config,
    rate_for_target,
)

__all__ = [
    "DEFAULT_SKIP",
    "GradualPruningCallback",
    "LayerSparsity",
    "PruningConfig",
    "SparsityReport",
    "apply_masks",
    "cubic_sparsity",
    "effective_weight",
    "finalize_pruning",
    "is_pruned",
    "is_pruning_step",
    "iterative_sparsity",
    "load_pruning_config",
    "magnitude_prune",
    "prunable_layers",
    "prune_to_sparsity",
    "pruning_masks",
    "rate_for_target",
    "refresh_pruned_tensors",
    "sparsity_report",
]
