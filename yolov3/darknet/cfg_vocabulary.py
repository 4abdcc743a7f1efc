"""The rest of AlexeyAB's ``parser.c`` vocabulary: keys Darknet reads that are not fields of a section here.

Two kinds, per section:

- ``TRAINING_ONLY``: keys that only steer Darknet's own training loop (augmentation, schedules, loss
  weights, GPU streams). They are accepted, have no effect, and are reported once per file in one warning.
- ``NOT_IMPLEMENTED``: keys that change Darknet's forward or ``.weights`` layout in a way not built here.
  They are accepted at Darknet's default value (cfgs often spell the default out) and refused otherwise.

``EVERY_LAYER`` keys are read by ``parse_network_cfg_custom`` from every layer section.

A key that ``parser.c`` does not read in its section is what Darknet does with it too: it prints "Unused
field" and carries on (AlexeyAB's own ``Gaussian_yolov3_BDD.cfg`` has ``[net] max_epochs``, its
``yolov4-sam-mish.cfg`` ``[yolo] uc_normalizer``, a [Gaussian_yolo] key, and ``beta1``). Such a key is accepted
and reported with the training keys, unless it looks like a typo of a key the section reads
(:func:`typo_of`), which stays an error with the suggestion. A key another section reads is no typo: it is
reported as read by that section only.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

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
    # map= (read_map): class ids of the training labels are remapped through it (forward_*_layer's training part
    # only); detection takes its map from the caller (detector.c's validate_detector), never from the layer
    "yolo": frozenset([*_YOLO_TRAINING.split(), "map"]),
    "Gaussian_yolo": frozenset([*_YOLO_TRAINING.split(), "map"]),
    "region": frozenset(["log", "sqrt", "focal_loss", "resize", "mask_scale", "map"]),
    "softmax": frozenset(["noloss"]),
    "dropout": frozenset(["dropblock", "dropblock_size_rel", "dropblock_size_abs"]),
    "maxpool": frozenset(["maxpool_zero_nonmax"]),
    # the cell clamp applies after the output is computed, and the time normalizer scales gradients only:
    # neither changes one step's output
    "conv_lstm": frozenset(["state_constrain", "time_normalizer"]),
    # test time: the centre window, no flip; angle, saturation, exposure and shift are read by no CPU forward
    "crop": frozenset(["flip", "angle", "saturation", "exposure", "shift"]),
}

# [net] keys pjreddie's parse_net_options reads and the fork does not: accepted as unread, never typos.
PJREDDIE_ONLY_NET = frozenset(["center", "clip", "max_ratio", "min_ratio", "notruth", "random"])

# An unread key is a typo when difflib's ratio to a key its section reads is at least this. Above 0.667
# (2 * 7 / 21, ``max_epochs`` against ``max_batches``) and below 0.75, the ratio of a letter changed in a
# 4-letter key ((n - 1) / n for n letters): one changed, dropped or added letter in keys of 4 or more letters,
# and two changed letters (or a swap) in keys of 7 or more, score at least 0.7.
TYPO_CUTOFF = 0.7

# key -> (Darknet's default as written in a cfg, why it is not built here)
NOT_IMPLEMENTED: dict[str, dict[str, tuple[str, str]]] = {
    "crnn": {"xnor": ("0", "binary (XNOR) recurrent convolutions are not implemented")},
    "conv_lstm": {
        "xnor": ("0", "binary (XNOR) recurrent convolutions are not implemented"),
        "bottleneck": ("0", "the bottleneck ConvLSTM (Darknet's GPU forward only) is not implemented"),
        # Darknet's CPU forward always uses tanh here, its GPU forward this activation: they agree on tanh only
        "lstm_activation": ("tanh", "an LSTM activation other than tanh is not implemented"),
    },
}

# Sections parser.c reads that have no layer here, with the reason given in the error (none at present:
# [deconvolutional] / [deconv], read by pjreddie's parser.c only, are built as pjreddie's Darknet runs them).
REFUSED_SECTIONS: dict[str, str] = {}


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


def _one_edit_apart(first: str, second: str) -> bool:
    """True when one letter changed, dropped, added, or two neighbours swapped turns ``first`` into ``second``."""
    if first == second or abs(len(first) - len(second)) > 1:
        return False
    start = 0
    while start < min(len(first), len(second)) and first[start] == second[start]:
        start += 1
    a, b = first[start:], second[start:]
    return (
        a[1:] == b[1:]  # changed
        or a[1:] == b  # dropped
        or a == b[1:]  # added
        or (len(a) == len(b) >= 2 and a[0] == b[1] and a[1] == b[0] and a[2:] == b[2:])  # swapped
    )


def typo_of(key: str, read_keys: Iterable[str]) -> str | None:
    """The key of ``read_keys`` (those a section reads) that ``key`` (one it does not read) is likely a typo of,
    or None.

    A typo is one edit away from a read key (any length: ``B3`` for ``B2``) or scores at least
    :data:`TYPO_CUTOFF` in difflib's ratio (``widht``, ``max_batchs``); ``max_epochs`` (0.667 to
    ``max_batches``) is not.
    """
    read_keys = list(read_keys)
    close = difflib.get_close_matches(key, read_keys, n=1, cutoff=TYPO_CUTOFF)
    if close:
        return close[0]
    return next((candidate for candidate in read_keys if _one_edit_apart(key, candidate)), None)
