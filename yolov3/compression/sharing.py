"""Weight sharing (Deep Compression, Han, Mao and Dally 2016): k-means on each layer's non-zero weights.

Every layer's non-zero weights are clustered into ``k = 2 ** bits`` centroids with 1-D k-means (Lloyd's
iterations, vectorised in torch) from the paper's *linear* initialisation: centroids evenly spaced between
the smallest and largest weight, which keeps the few large weights representable. Each weight is then
replaced by its centroid, so a layer holds at most ``k`` distinct non-zero values; pruned zeros stay zero
and are not a cluster.

Fine-tuning updates the centroids, not the weights: :class:`SharedWeightParametrization` makes a layer's
weight ``W = C[I]`` (zeros where pruned) through ``torch.nn.utils.parametrize`` with the codebook ``C`` as
the trainable tensor, so autograd gives the paper's centroid gradient, the sum of the gradients of the
cluster's weights: ``dL/dC_j = sum_{i: I_i = j} dL/dW_i``. The parametrization lives in the state dict
(``<layer>.parametrizations.weight.original`` is the codebook), survives ``deepcopy`` and so works with
the trainer's EMA (``AveragedModel``) and checkpoints; :class:`WeightSharingCallback` attaches it inside
a :class:`~yolov3.train.trainer.Trainer`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from yolov3.inference.compressed_file import SharedLayer, SharedWeights
from yolov3.train.callbacks import TrainerCallback, TrainingContext

logger = logging.getLogger(__name__)

MAX_BITS = 8


def linear_centroids(values: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` centroids evenly spaced from ``values.min()`` to ``values.max()`` (the paper's linear init)."""
    if values.numel() == 0:
        return torch.zeros(k, dtype=torch.float64, device=values.device)
    return torch.linspace(float(values.min()), float(values.max()), k, dtype=torch.float64, device=values.device)


def nearest_centroid(values: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of the sorted ``centroids`` for every value: a binary search among the
    midpoints between neighbouring centroids (O(n log k) time, no (n, k) distance matrix)."""
    midpoints = (centroids[1:] + centroids[:-1]) / 2
    return torch.searchsorted(midpoints.to(values.dtype), values)


def kmeans_1d(values: torch.Tensor, k: int, max_iterations: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on a 1-D tensor from linear initialisation; returns (sorted float32 codebook (k,),
    int64 cluster of each value (n,)). Empty clusters keep their centroid; iterations stop when no value
    changes cluster.

    In one dimension every cluster is a run of the sorted values, so after one sort an iteration costs
    O(k log n): the cluster boundaries are found by binary search for the midpoints between centroids, and
    the cluster sums come from prefix sums (float64).
    """
    samples = values.detach().reshape(-1).to(torch.float64)  # any shape -> (n,)
    centroids = linear_centroids(samples, k)
    ordered, _ = torch.sort(samples)
    prefix = torch.cat([ordered.new_zeros(1), torch.cumsum(ordered, 0)])  # (n + 1,)
    boundaries = None
    for _ in range(max_iterations):
        # Cluster j holds the values in (midpoint j-1, midpoint j], as nearest_centroid assigns them.
        updated = torch.searchsorted(ordered, (centroids[1:] + centroids[:-1]) / 2, right=True)  # (k - 1,)
        if boundaries is not None and torch.equal(updated, boundaries):
            break
        boundaries = updated
        starts = torch.cat([boundaries.new_zeros(1), boundaries])  # (k,)
        ends = torch.cat([boundaries, boundaries.new_full((1,), len(ordered))])  # (k,)
        counts = ends - starts
        means = (prefix[ends] - prefix[starts]) / counts.clamp(min=1)
        centroids, _ = torch.sort(torch.where(counts > 0, means, centroids))
    codebook = centroids.to(torch.float32)
    return codebook, nearest_centroid(samples, codebook.to(torch.float64))


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every ``nn.Conv2d`` of ``model`` with its module name, in module order."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def _weight(module: nn.Module, name: str) -> torch.Tensor:
    """``module.weight``, checked to be a tensor."""
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"layer {name!r} has no weight tensor")
    return weight


def share_weights(
    model: nn.Module,
    bits: int | None = 4,
    *,
    k: int | None = None,
    layers: Sequence[tuple[str, nn.Module]] | None = None,
    max_iterations: int = 1000,
) -> SharedWeights:
    """Cluster each layer's non-zero weights into ``k`` (default ``2 ** bits``) centroids and replace every
    weight by its centroid, in place. ``layers`` defaults to every conv of ``model`` (the paper shares all
    layers). Pruning must be finalized first (no ``torch.nn.utils.prune`` re-parametrization left)."""
    k = k if k is not None else 2 ** (bits or 0)
    if not 2 <= k <= 2**MAX_BITS:
        raise ValueError(f"k must be in 2..{2**MAX_BITS} (bits 1..{MAX_BITS}), got {k}")
    shared: dict[str, SharedLayer] = {}
    for name, module in conv_layers(model) if layers is None else layers:
        if hasattr(module, "weight_orig") or parametrize.is_parametrized(module):
            raise ValueError(f"layer {name!r} is re-parametrized (finalize pruning or detach sharing first)")
        weight = _weight(module, name).detach()
        mask = weight != 0
        codebook, index = kmeans_1d(weight[mask], k, max_iterations)
        layer = SharedLayer(codebook, index.to(torch.int16), mask)
        with torch.no_grad():
            _weight(module, name).copy_(layer.weight())
        shared[name] = layer
        logger.debug("shared %s: %d non-zero weights in %d clusters", name, layer.num_nonzero, k)
    return SharedWeights(shared)


class SharedWeightParametrization(nn.Module):
    """``weight = cat(C, [0])[assignment]``: the trainable codebook ``C`` (k,) is the parametrized tensor;
    ``assignment`` holds each weight's cluster, or ``k`` for a pruned (zero) weight.

    ``right_inverse`` maps a weight to the codebook that best reproduces it (each cluster's mean, exact
    when the weight is already shared; computed in float64 so that a mean of equal values is that value).
    """

    assignment: torch.Tensor  # buffer, the weight's shape, int16
    fallback: torch.Tensor  # buffer, (k,)

    def __init__(self, layer: SharedLayer) -> None:
        super().__init__()
        assignment = torch.full(layer.mask.shape, layer.k, dtype=torch.int16, device=layer.mask.device)
        assignment[layer.mask] = layer.index.to(assignment.device)
        self.register_buffer("assignment", assignment)
        self.register_buffer("fallback", layer.codebook.detach().clone(), persistent=False)  # empty clusters

    @property
    def k(self) -> int:
        return len(self.fallback)

    def forward(self, codebook: torch.Tensor) -> torch.Tensor:
        padded = torch.cat([codebook, codebook.new_zeros(1)])  # (k + 1,): the last entry is the pruned zero
        flat = padded.index_select(0, self.assignment.reshape(-1).int())  # (numel,)
        return flat.reshape(self.assignment.shape)  # (numel,) -> the weight's shape

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        clusters = self.assignment.reshape(-1).long()  # (numel,)
        values = weight.detach().reshape(-1).to(torch.float64)  # the weight's shape -> (numel,)
        sums = torch.zeros(self.k + 1, dtype=torch.float64, device=weight.device).index_add_(0, clusters, values)
        counts = torch.bincount(clusters, minlength=self.k + 1)
        means = torch.where(counts > 0, sums / counts.clamp(min=1), 0.0)[: self.k]
        return torch.where(counts[: self.k] > 0, means.to(weight.dtype), self.fallback.to(weight.dtype))

    def layer(self, codebook: torch.Tensor) -> SharedLayer:
        """The :class:`SharedLayer` this parametrization currently represents."""
        mask = self.assignment != self.k
        return SharedLayer(codebook.detach().clone(), self.assignment[mask].clone(), mask)


def attach_sharing(model: nn.Module, shared: SharedWeights) -> None:
    """Parametrize every shared layer of ``model`` as ``W = C[I]`` with the codebooks of ``shared`` as the
    trainable tensors. The weight ``Parameter`` objects are kept (they become the codebooks), so an optimizer
    built before still updates them, as long as it has no state for them yet."""
    for name, layer in shared.layers.items():
        module = model.get_submodule(name)
        weight = _weight(module, name)
        if weight.shape != layer.mask.shape:
            raise ValueError(f"layer {name!r}: weight {tuple(weight.shape)} but shared {tuple(layer.mask.shape)}")
        parametrization = SharedWeightParametrization(layer).to(weight.device)
        parametrize.register_parametrization(module, "weight", parametrization)
        with torch.no_grad():
            original = module.get_submodule("parametrizations.weight").original
            assert isinstance(original, torch.Tensor)  # register_parametrization stores the codebook there
            original.copy_(layer.codebook)


def detach_sharing(model: nn.Module) -> SharedWeights:
    """Remove the sharing parametrizations, leaving the plain weights ``C[I]``; returns the current
    codebooks, indices and masks (what fine-tuning made of them) for :func:`~yolov3.compression.storage`."""
    shared: dict[str, SharedLayer] = {}
    for name, module in list(model.named_modules()):
        if not parametrize.is_parametrized(module, "weight"):
            continue
        parametrizations = module.parametrizations.weight
        if not isinstance(parametrizations[0], SharedWeightParametrization):
            continue
        shared[name] = parametrizations[0].layer(parametrizations.original)
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return SharedWeights(shared)


class WeightSharingCallback(TrainerCallback):
    """Fine-tunes centroids inside a :class:`~yolov3.train.trainer.Trainer`: at fit start it attaches the
    sharing parametrization to the trained model and to its EMA copy (the same structure on both keeps
    ``AveragedModel``'s parameter lists aligned). After ``fit()``, :func:`detach_sharing` on
    ``trainer.eval_model`` (the EMA's model, or the trained one) gives the fine-tuned :class:`SharedWeights`.

    Such a run resumes (``trainer.resume()``): the parametrization is attached before ``last.pt``
    is loaded (:meth:`on_resume_start`), whose codebooks, assignments and optimizer state then fit.
    """

    def __init__(self, shared: SharedWeights) -> None:
        self.shared = shared

    def on_resume_start(self, context: TrainingContext) -> None:
        self.on_fit_start(context)

    def on_fit_start(self, context: TrainingContext) -> None:
        models = [context.model, *([context.ema_model] if context.ema_model is not None else [])]
        for model in models:
            if not any(parametrize.is_parametrized(module, "weight") for module in model.modules()):
                attach_sharing(model, self.shared)  # once: a resumed run has it from on_resume_start
        logger.info("fine-tuning the centroids of %d shared layers", len(self.shared.layers))
