"""The rest of AlexeyAB's ``parser.c`` vocabulary: keys Darknet reads that are not fields of a section here.

Two kinds, per section:

- ``TRAINING_ONLY``: keys that only steer Darknet's own training loop (augmentation, schedules, loss
  weights, GPU streams). They are accepted, have no effect, and are reported once per file in one warning.
- ``NOT_IMPLEMENTED``: keys that change Darknet's forward or ``.weights`` layout in a way not built here.
  They are accepted at Darknet's default value (cfgs often spell the default out) and refused otherwise.

``EVERY_LAYER`` keys are read by ``parse_network_cfg_custom`` from every layer section.
"""

from __future__ import annotations

EVERY_LAYER = frozenset(
    {
        "stopbackward",
        "dontload",
        "dontloadscales",
        "learning_rate",  # a layer's learning-rate scale
        "onlyforward",
        "dont_update",
        "burnin_update",
        "train_only_bn",
        "clip",
        "show_receptive_field",
    }
)

_NET_TRAINING = (
    "learning_rate_min sgdr_cycle sgdr_mult track augment_speed sequential_subdivisions try_fix_nan "
    "weights_reject_freq equidistant_point badlabels_rejection_percentage num_sigmas_reject_badlabels ema_alpha "
    "use_cuda_graph loss_scale dynamic_minibatch optimized_memory workspace_size_limit_MB mosaic_bound "
    "contrastive contrastive_jit_flip contrastive_color unsupervised resize_step attention adversarial_lr "
    "seq_scales scale show_receptive_field"
)
_YOLO_TRAINING = (
    "show_details counters_per_class objectness_smooth delta_normalizer iou_thresh_kind focal_loss "
    "track_history_size sim_thresh dets_for_track dets_for_show track_ciou_norm embedding_layer"
)

TRAINING_ONLY: dict[str, frozenset[str]] = {
    "net": frozenset(_NET_TRAINING.split()),
    "convolutional": frozenset(["assisted_excitation", "cbn", "stream", "wait_stream", "grad_centr"]),
    "route": frozenset(["stream", "wait_stream"]),
    "yolo": frozenset(_YOLO_TRAINING.split()),
    "Gaussian_yolo": frozenset(_YOLO_TRAINING.split()),
    "region": frozenset(["log", "sqrt", "focal_loss", "resize", "classfix", "mask_scale"]),
    "softmax": frozenset(["noloss"]),
    "dropout": frozenset(["dropblock", "dropblock_size_rel", "dropblock_size_abs"]),
    "maxpool": frozenset(["maxpool_zero_nonmax"]),
}

# key -> (Darknet's default as written in a cfg, why it is not built here)
_XNOR = "binary (XNOR) convolutions are not implemented"
_DEFORM = "weight-deforming convolutions (sway/rotate/stretch) are not implemented"
NOT_IMPLEMENTED: dict[str, dict[str, tuple[str, str]]] = {
    "convolutional": {
        "binary": ("0", _XNOR),
        "xnor": ("0", _XNOR),
        "bin_output": ("0", _XNOR),
        "antialiasing": ("0", "anti-aliased (blur-pool) convolutions are not implemented"),
        "share_index": ("-1000000000", "weight sharing between layers is not implemented"),
        "coordconv": ("0", "CoordConv is not implemented"),
        "sway": ("0", _DEFORM),
        "rotate": ("0", _DEFORM),
        "stretch": ("0", _DEFORM),
        "stretch_sway": ("0", _DEFORM),
        "angle": ("15", _DEFORM),
        "flipped": ("0", "flipped weights are not implemented"),
        "dot": ("0", "the dot-product regularizer is not implemented"),
        "reverse": ("0", "reverse convolutions are not implemented"),
    },
    "maxpool": {
        "stride_x": ("", "asymmetric pooling strides are not implemented"),
        "stride_y": ("", "asymmetric pooling strides are not implemented"),
        "maxpool_depth": ("0", "pooling over channels is not implemented"),
        "out_channels": ("1", "pooling over channels is not implemented"),
        "antialiasing": ("0", "anti-aliased pooling is not implemented"),
    },
    "yolo": {
        "map": ("0", "class maps are not implemented"),
    },
    "Gaussian_yolo": {"map": ("0", "class maps are not implemented")},
    "region": {
        "tree": ("0", "YOLO9000 class trees are not implemented"),
        "map": ("0", "class maps are not implemented"),
    },
    "softmax": {
        "tree": ("0", "softmax trees are not implemented"),
        "spatial": ("0", "spatial softmax is not implemented"),
    },
}

# Sections parser.c reads that have no layer here, with the reason given in the error.
REFUSED_SECTIONS: dict[str, str] = {
    "local": "locally connected layers are not implemented",
    "deconvolutional": "deconvolutions are not implemented",
    "deconv": "deconvolutions are not implemented",
    "connected": "fully connected layers are not implemented",
    "conn": "fully connected layers are not implemented",
    "crop": "a training-time crop layer",
    "detection": "YOLOv1 heads are not implemented",
    "activation": "standalone activation layers are not implemented",
    "crnn": "recurrent layers are not implemented (no inference-only recurrent state here)",
    "rnn": "recurrent layers are not implemented",
    "gru": "recurrent layers are not implemented",
    "lstm": "recurrent layers are not implemented",
    "conv_lstm": "recurrent layers are not implemented",
    "history": "recurrent layers are not implemented",
    "lrn": "local response normalization is not implemented",
    "normalization": "local response normalization is not implemented",
    "batchnorm": "standalone batch-norm layers are not implemented",
    "implicit": "YOLOR implicit layers are not implemented",
}


def classify_key(kind: str, key: str, value: str) -> str | None:
    """``"training"`` for an ignored training key, an error reason for a refused one, None if unknown."""
    if key in TRAINING_ONLY.get(kind, ()) or (kind != "net" and key in EVERY_LAYER):
        return "training"
    refused = NOT_IMPLEMENTED.get(kind, {}).get(key)
    if refused is None:
        return None
    default, reason = refused
    if default and value == default:
        return "training"  # Darknet's default spelled out: no effect
    return f"{key}={value} is read by Darknet but {reason}" + (
        f" (only {key}={default} is accepted)" if default else ""
    )
