"""Weight sharing: k-means against scikit-learn, at most k values with zeros kept, the centroid gradient."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from torch import nn

from yolov3.compression.masks import finalize_pruning, prunable_layers, prune_to_sparsity
from yolov3.compression.sharing import (
    SharedWeights,
    WeightSharingCallback,
    attach_sharing,
    conv_layers,
    detach_sharing,
    kmeans_1d,
    linear_centroids,
    share_weights,
)
from yolov3.models import create_model
from yolov3.train.ema import build_ema


def pruned_model(name: str = "yolov3_tiny_test", sparsity: float = 0.8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model(name, num_classes=3)
    prune_to_sparsity(model, sparsity, "global", prunable_layers(model))
    finalize_pruning(model)
    return model


def nonzero_values(weight: torch.Tensor) -> torch.Tensor:
    return torch.unique(weight[weight != 0])


@pytest.mark.parametrize("distribution", ["normal", "laplace"])
def test_kmeans_matches_scikit_learn_lloyd_from_the_same_linear_init(distribution: str) -> None:
    generator = torch.Generator().manual_seed(1)
    values = torch.randn(4000, generator=generator)
    if distribution == "laplace":
        values = torch.sign(values) * torch.rand(4000, generator=generator).log().neg()
    codebook, index = kmeans_1d(values, 8)
    initial = linear_centroids(values, 8)
    assert torch.allclose(initial, torch.linspace(float(values.min()), float(values.max()), 8, dtype=torch.float64))
    reference = KMeans(8, init=initial.numpy()[:, None], n_init=1, algorithm="lloyd", tol=0.0, max_iter=1000)
    reference.fit(values.double().numpy()[:, None])
    order = np.argsort(reference.cluster_centers_[:, 0])
    np.testing.assert_allclose(codebook.numpy(), reference.cluster_centers_[order, 0], rtol=0, atol=1e-6)
    assert np.array_equal(np.argsort(order)[reference.labels_], index.numpy())


def test_sharing_keeps_zeros_and_at_most_k_nearest_values_per_layer() -> None:
    model = pruned_model()
    before = {name: conv.weight.detach().clone() for name, conv in conv_layers(model)}
    shared = share_weights(model, bits=3)
    assert set(shared.layers) == set(before)
    for name, conv in conv_layers(model):
        weight, original, layer = conv.weight.detach(), before[name], shared.layers[name]
        assert torch.equal(weight == 0, original == 0), name  # pruned zeros stay zero, nothing else becomes zero
        assert torch.equal(layer.mask, original != 0)
        assert len(nonzero_values(weight)) <= 8 and layer.k == 8
        distances = (original[layer.mask][:, None] - layer.codebook[None, :]).abs()  # (nonzero, k)
        chosen = distances.gather(1, layer.index.long()[:, None])[:, 0]
        assert torch.all(chosen <= distances.min(dim=1).values + 1e-7), name  # every weight at its nearest centroid
    assert max(len(nonzero_values(conv.weight.detach())) for _, conv in conv_layers(model)) > 4  # really shared


def test_centroid_gradient_is_the_summed_gradient_of_the_cluster_weights() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, padding=1).double()
    with torch.no_grad():
        conv.weight[torch.rand_like(conv.weight) < 0.5] = 0.0
    holder = nn.Sequential(conv)
    shared = share_weights(holder, bits=4)
    layer = shared.layers["0"]
    attach_sharing(holder, shared)
    inputs, direction = torch.randn(2, 5, 8, 8, dtype=torch.float64), torch.randn(2, 7, 8, 8, dtype=torch.float64)
    (holder(inputs) * direction).sum().backward()
    centroid_gradient = conv.parametrizations.weight.original.grad

    # Independently: dL/dW of a plain conv with W = C[I], then summed per cluster two ways.
    weight = layer.weight().double().requires_grad_(True)
    (F.conv2d(inputs, weight, conv.bias.detach(), padding=1) * direction).sum().backward()
    per_weight = weight.grad[layer.mask]  # (nonzero,)
    scattered = torch.zeros(layer.k, dtype=torch.float64).scatter_add_(0, layer.index.long(), per_weight)
    one_hot = F.one_hot(layer.index.long(), layer.k).double()  # (nonzero, k)
    torch.testing.assert_close(centroid_gradient, scattered, rtol=0, atol=1e-6)
    torch.testing.assert_close(centroid_gradient, one_hot.T @ per_weight, rtol=0, atol=1e-6)
    assert centroid_gradient.abs().max() > 1e-3


def test_fine_tuning_centroids_with_ema_keeps_k_values_zeros_and_state_dict() -> None:
    model = pruned_model()
    shared = share_weights(model, bits=4)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)  # before attaching
    ema = build_ema(model, decay=0.5, ramp_steps=1.0)
    context = SimpleNamespace(model=model, ema_model=ema.module)  # the parts of a TrainingContext it reads
    WeightSharingCallback(shared).on_fit_start(context)  # the trained model and its EMA, as in the trainer
    before = {name: layer.codebook.clone() for name, layer in shared.layers.items()}
    for _ in range(3):
        optimizer.zero_grad()
        sum(output.square().mean() for output in model(images)).backward()
        optimizer.step()
        ema.update_parameters(model)
    moved = 0.0
    for averaged in (model, ema.module):
        for name, conv in conv_layers(averaged):
            weight, layer = conv.weight.detach(), shared.layers[name]
            assert len(nonzero_values(weight)) <= layer.k, name
            assert torch.all(weight[~layer.mask] == 0), name
            codebook = conv.parametrizations.weight.original.detach()
            moved = max(moved, float((codebook - before[name]).abs().max()))
    assert moved > 1e-6  # the centroids were trained

    restored = create_model("yolov3_tiny_test", num_classes=3)
    attach_sharing(restored, shared)  # same structure, then the fine-tuned state
    restored.load_state_dict(copy.deepcopy(ema.module).state_dict())
    expected = ema.module(images)
    assert all(torch.equal(a, b) for a, b in zip(restored(images), expected, strict=True))

    plain = detach_sharing(ema.module)
    assert isinstance(plain, SharedWeights) and set(plain.layers) == set(shared.layers)
    assert not any(hasattr(conv, "parametrizations") for _, conv in conv_layers(ema.module))
    assert all(torch.equal(a, b) for a, b in zip(ema.module(images), expected, strict=True))
    for name, conv in conv_layers(ema.module):
        assert torch.equal(conv.weight.detach(), plain.layers[name].weight()), name


def test_share_weights_rejects_a_model_still_pruned_and_bad_k() -> None:
    model = create_model("yolov3_tiny_test", num_classes=3)
    prune_to_sparsity(model, 0.5, "global", prunable_layers(model))
    with pytest.raises(ValueError, match="re-parametrized"):
        share_weights(model, bits=4)
    with pytest.raises(ValueError, match=r"k must be in 2\.\.256"):
        share_weights(create_model("yolov3_tiny_test"), bits=9)
