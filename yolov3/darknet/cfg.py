"""Darknet ``.cfg`` files: typed sections, a strict parser and a writer.

A cfg file is a list of ``[section]`` headers, each followed by ``key=value`` lines. Darknet strips all
white space from a line and treats lines starting with ``#`` or ``;`` as comments; so do we. Unlike
Darknet, which ignores keys it does not read and treats unknown activations as linear, every unknown
section, key or value here is an error that names the file, the line and the section.

Each section kind is a dataclass whose fields are the keys it accepts, with Darknet's defaults. Field
names equal cfg keys, except where a key is a Python keyword (``from`` -> ``from_layer``) or too short
to read (``max`` -> ``max_boxes``); ``field(metadata={"key": ...})`` records the cfg spelling.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

ACTIVATIONS = ("linear", "leaky", "logistic", "relu", "relu6", "elu", "selu", "gelu", "swish", "mish", "tanh")
LEARNING_RATE_POLICIES = ("constant", "step", "exp", "poly", "steps", "sig", "random", "sgdr")


class CfgError(ValueError):
    """A malformed Darknet cfg; the message starts with ``file:line: [section]``."""


def _location(source: str, line: int, kind: str | None = None) -> str:
    return f"{source}:{line}: [{kind}]" if kind else f"{source}:{line}:"


@dataclass(kw_only=True)
class Section:
    """Base of all sections: where it was read from (not part of equality)."""

    KIND: ClassVar[str] = ""
    ALIASES: ClassVar[tuple[str, ...]] = ()
    ALWAYS_WRITTEN: ClassVar[tuple[str, ...]] = ()

    line: int = field(default=0, compare=False, repr=False)
    source: str = field(default="<cfg>", compare=False, repr=False)

    def where(self) -> str:
        return _location(self.source, self.line, self.KIND)

    def error(self, message: str) -> CfgError:
        return CfgError(f"{self.where()} {message}")

    def validate(self) -> None:
        """Checks that need more than one key; raises :class:`CfgError`."""


@dataclass(kw_only=True)
class NetSection(Section):
    """``[net]``: input size and training hyper-parameters (Darknet's ``parse_net_options``)."""

    KIND = "net"
    ALIASES = ("network",)
    ALWAYS_WRITTEN = ("batch", "subdivisions", "width", "height", "channels")

    batch: int = 1
    subdivisions: int = 1
    width: int = 0
    height: int = 0
    channels: int = 0
    inputs: int = 0
    max_crop: int = 0
    min_crop: int = 0
    momentum: float = 0.9
    decay: float = 0.0001
    learning_rate: float = 0.001
    burn_in: int = 0
    max_batches: int = 0
    policy: str = "constant"
    steps: tuple[int, ...] = ()
    scales: tuple[float, ...] = ()
    step: int = 1
    gamma: float = 1.0
    power: float = 4.0
    adam: int = 0
    B1: float = 0.9
    B2: float = 0.999
    eps: float = 1e-7
    angle: float = 0.0
    aspect: float = 1.0
    saturation: float = 1.0
    exposure: float = 1.0
    hue: float = 0.0
    flip: int = 1
    letter_box: int = 0
    mosaic: int = 0
    mixup: int = 0
    cutmix: int = 0
    blur: int = 0
    gaussian_noise: int = 0
    label_smooth_eps: float = 0.0
    time_steps: int = 1
    max_chart_loss: float = 20.0

    def validate(self) -> None:
        if self.policy not in LEARNING_RATE_POLICIES:
            raise self.error(f"policy={self.policy!r} is not one of {', '.join(LEARNING_RATE_POLICIES)}")
        if len(self.steps) != len(self.scales) and self.policy == "steps":
            raise self.error(f"steps has {len(self.steps)} values but scales has {len(self.scales)}")
        if min(self.batch, self.subdivisions) < 1 or self.batch % self.subdivisions:
            raise self.error(f"batch={self.batch} must be a positive multiple of subdivisions={self.subdivisions}")


@dataclass(kw_only=True)
class ConvolutionalSection(Section):
    """``[convolutional]``: a conv with optional batch norm, then an activation (default logistic!)."""

    KIND = "convolutional"
    ALIASES = ("conv",)
    ALWAYS_WRITTEN = ("filters", "size", "stride", "pad", "activation")

    batch_normalize: int = 0
    filters: int = 1
    size: int = 1
    stride: int = 1
    pad: int = 0
    padding: int = 0
    groups: int = 1
    dilation: int = 1
    activation: str = "logistic"

    @property
    def effective_padding(self) -> int:
        """Darknet: ``pad=1`` means ``size // 2`` (times the dilation); otherwise ``padding``."""
        return (self.size // 2) * self.dilation if self.pad else self.padding

    def validate(self) -> None:
        for name in ("filters", "size", "stride", "groups", "dilation"):
            if getattr(self, name) < 1:
                raise self.error(f"{name}={getattr(self, name)} must be at least 1")
        if self.filters % self.groups:
            raise self.error(f"filters={self.filters} is not divisible by groups={self.groups}")
        if self.activation not in ACTIVATIONS:
            raise self.error(f"activation={self.activation!r} is not one of {', '.join(ACTIVATIONS)}")


@dataclass(kw_only=True)
class ShortcutSection(Section):
    """``[shortcut]``: adds the output of layer ``from`` to the previous one (activation default linear)."""

    KIND = "shortcut"
    ALWAYS_WRITTEN = ("from_layer", "activation")

    from_layer: int = field(metadata={"key": "from"})
    activation: str = "linear"

    def validate(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise self.error(f"activation={self.activation!r} is not one of {', '.join(ACTIVATIONS)}")


@dataclass(kw_only=True)
class RouteSection(Section):
    """``[route]``: concatenates layers (negative = relative, else absolute), optionally one channel group."""

    KIND = "route"

    layers: tuple[int, ...]
    groups: int = 1
    group_id: int = 0

    def validate(self) -> None:
        if not self.layers:
            raise self.error("layers is empty")
        if self.groups < 1 or not 0 <= self.group_id < self.groups:
            raise self.error(f"group_id={self.group_id} must be in [0, groups={self.groups})")


@dataclass(kw_only=True)
class UpsampleSection(Section):
    """``[upsample]``: nearest-neighbour upsampling by ``stride``, output multiplied by ``scale``."""

    KIND = "upsample"
    ALWAYS_WRITTEN = ("stride",)

    stride: int = 2
    scale: float = 1.0

    def validate(self) -> None:
        if self.stride < 1:
            raise self.error(f"stride={self.stride} must be at least 1 (downsampling is not supported)")


@dataclass(kw_only=True)
class MaxpoolSection(Section):
    """``[maxpool]``: Darknet pads ``padding`` (default ``size - 1``) cells of -inf, ``padding // 2`` first."""

    KIND = "maxpool"
    ALIASES = ("max",)
    ALWAYS_WRITTEN = ("size", "stride")

    stride: int = 1
    size: int | None = None  # Darknet: defaults to stride
    padding: int | None = None  # Darknet: defaults to size - 1

    def __post_init__(self) -> None:
        if self.size is None:
            self.size = self.stride
        if self.padding is None:
            self.padding = self.size - 1

    def implicit_default(self, name: str) -> object:
        return {"size": self.stride, "padding": (self.size or self.stride) - 1}.get(name)

    def validate(self) -> None:
        if self.stride < 1 or self.size < 1 or self.padding < 0:
            raise self.error(f"size={self.size}, stride={self.stride}, padding={self.padding} out of range")


@dataclass(kw_only=True)
class AvgpoolSection(Section):
    """``[avgpool]``: global average pooling to 1x1."""

    KIND = "avgpool"
    ALIASES = ("avg",)


@dataclass(kw_only=True)
class SoftmaxSection(Section):
    """``[softmax]``: probabilities for the classifier; forward passes logits through unchanged."""

    KIND = "softmax"
    ALIASES = ("soft",)

    groups: int = 1
    temperature: float = 1.0


@dataclass(kw_only=True)
class CostSection(Section):
    """``[cost]``: a training-time loss layer; identity in forward."""

    KIND = "cost"

    type: str = "sse"
    scale: float = 1.0
    ratio: float = 0.0

    def validate(self) -> None:
        if self.type not in ("sse", "masked", "smooth", "L1", "seg", "wgan"):
            raise self.error(f"type={self.type!r} is not a Darknet cost type")


@dataclass(kw_only=True)
class DropoutSection(Section):
    """``[dropout]``: dropout with ``probability``."""

    KIND = "dropout"

    probability: float = 0.5

    def validate(self) -> None:
        if not 0.0 <= self.probability < 1.0:
            raise self.error(f"probability={self.probability} must be in [0, 1)")


@dataclass(kw_only=True)
class YoloSection(Section):
    """``[yolo]``: a detection head; ``mask`` picks this scale's anchors out of ``anchors`` (input pixels)."""

    KIND = "yolo"
    ALWAYS_WRITTEN = ("mask", "anchors", "classes", "num")

    mask: tuple[int, ...] = ()
    anchors: tuple[float, ...] = ()
    classes: int = 20
    num: int = 1
    max_boxes: int = field(default=90, metadata={"key": "max"})
    jitter: float = 0.2
    ignore_thresh: float = 0.5
    truth_thresh: float = 1.0
    iou_thresh: float = 1.0
    random: float = 0.0
    resize: float = 1.0
    scale_x_y: float = 1.0
    iou_normalizer: float = 0.75
    cls_normalizer: float = 1.0
    obj_normalizer: float = 1.0
    iou_loss: str = "mse"
    nms_kind: str = "default"
    beta_nms: float = 0.6
    max_delta: float = 3.4028235e38
    label_smooth_eps: float = 0.0

    @property
    def anchor_indices(self) -> tuple[int, ...]:
        """Darknet: without ``mask`` a [yolo] layer uses anchors ``0 .. num-1``."""
        return self.mask or tuple(range(self.num))

    @property
    def anchors_px(self) -> tuple[tuple[float, float], ...]:
        """This layer's anchors as (width, height) in input pixels."""
        return tuple((self.anchors[2 * i], self.anchors[2 * i + 1]) for i in self.anchor_indices)

    def validate(self) -> None:
        if self.classes < 1:
            raise self.error(f"classes={self.classes} must be at least 1")
        if len(self.anchors) != 2 * self.num:
            raise self.error(f"anchors has {len(self.anchors)} numbers but num={self.num} needs {2 * self.num}")
        if any(value <= 0 for value in self.anchors):
            raise self.error("anchors must be positive (width,height pairs in input pixels)")
        bad = [index for index in self.anchor_indices if not 0 <= index < self.num]
        if bad:
            raise self.error(f"mask indices {bad} out of range for num={self.num}")
        if self.iou_loss not in ("mse", "iou", "giou", "diou", "ciou"):
            raise self.error(f"iou_loss={self.iou_loss!r} is not one of mse, iou, giou, diou, ciou")


SECTION_TYPES: tuple[type[Section], ...] = (
    NetSection,
    ConvolutionalSection,
    ShortcutSection,
    RouteSection,
    UpsampleSection,
    MaxpoolSection,
    AvgpoolSection,
    SoftmaxSection,
    CostSection,
    DropoutSection,
    YoloSection,
)
_TYPE_BY_NAME = {name: kind for kind in SECTION_TYPES for name in (kind.KIND, *kind.ALIASES)}


@dataclass
class DarknetCfg:
    """A parsed cfg: the ``[net]`` section and the layers after it (layer ``i`` is ``layers[i]``)."""

    net: NetSection
    layers: list[Section]
    source: str = "<cfg>"


def _cfg_fields(kind: type[Section]) -> dict[str, dataclasses.Field]:
    """Map of cfg key -> dataclass field for one section type."""
    return {f.metadata.get("key", f.name): f for f in dataclasses.fields(kind) if f.name not in ("line", "source")}


def _parse_value(text: str, annotation: object) -> object:
    """Parse a value for a field annotated ``int``, ``float``, ``str``, ``int | None`` or a tuple of those."""
    if typing.get_origin(annotation) is tuple:
        item_type = typing.get_args(annotation)[0]
        return tuple(_parse_value(item, item_type) for item in text.split(",") if item != "")
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    if annotation is int:
        return int(text)
    if annotation is float:
        return float(text)
    return text


def _describe(annotation: object) -> str:
    if typing.get_origin(annotation) is tuple:
        return f"a comma-separated list of {_describe(typing.get_args(annotation)[0])}s"
    if annotation is int or int in typing.get_args(annotation):
        return "an integer"
    return "a number" if annotation is float else "a word"


def parse_cfg_text(text: str, source: str = "<cfg>") -> DarknetCfg:
    """Parse cfg text; ``source`` names the file in error messages."""
    blocks: list[tuple[type[Section], str, int, dict[str, tuple[str, int]]]] = []
    for line_number, raw_line in enumerate(text.splitlines(), start=1):
        line = "".join(raw_line.split())
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]"):
                raise CfgError(f"{_location(source, line_number)} section header {raw_line.strip()!r} has no ']'")
            name = line[1:-1]
            if name not in _TYPE_BY_NAME:
                hint = difflib.get_close_matches(name, list(_TYPE_BY_NAME), n=1)
                raise CfgError(
                    f"{_location(source, line_number)} unknown section [{name}]"
                    + (f"; did you mean [{hint[0]}]?" if hint else "")
                    + f" Known sections: {', '.join(sorted(_TYPE_BY_NAME))}"
                )
            blocks.append((_TYPE_BY_NAME[name], name, line_number, {}))
            continue
        if "=" not in line:
            raise CfgError(f"{_location(source, line_number)} expected 'key=value', got {raw_line.strip()!r}")
        if not blocks:
            raise CfgError(f"{_location(source, line_number)} option {line!r} comes before any [section]")
        key, value = line.split("=", 1)
        kind, name, _, options = blocks[-1]
        if key in options:
            raise CfgError(f"{_location(source, line_number, kind.KIND)} key {key!r} given twice")
        options[key] = (value, line_number)

    if not blocks or blocks[0][0] is not NetSection:
        raise CfgError(f"{source}:1: the first section must be [net] (or [network])")
    sections = [_build_section(kind, line_number, options, source) for kind, _, line_number, options in blocks]
    for section in sections[1:]:
        if isinstance(section, NetSection):
            raise section.error("only the first section may be [net]")
    return DarknetCfg(net=sections[0], layers=sections[1:], source=source)


def _build_section(kind: type[Section], line_number: int, options: dict[str, tuple[str, int]], source: str) -> Section:
    fields = _cfg_fields(kind)
    hints = typing.get_type_hints(kind)
    values: dict[str, object] = {}
    for key, (text, key_line) in options.items():
        if key not in fields:
            hint = difflib.get_close_matches(key, list(fields), n=1)
            raise CfgError(
                f"{_location(source, key_line, kind.KIND)} unknown key {key!r}"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
                + f" Allowed keys: {', '.join(fields)}"
            )
        target = fields[key]
        try:
            values[target.name] = _parse_value(text, hints[target.name])
        except ValueError:
            raise CfgError(
                f"{_location(source, key_line, kind.KIND)} {key}={text!r} is not {_describe(hints[target.name])}"
            ) from None
    missing = [
        key
        for key, f in fields.items()
        if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise CfgError(f"{_location(source, line_number, kind.KIND)} missing required key(s): {', '.join(missing)}")
    section = kind(line=line_number, source=source, **values)
    section.validate()
    return section


def parse_cfg(path: str | os.PathLike) -> DarknetCfg:
    """Read and parse a cfg file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CfgError(f"{path}: cannot read cfg file ({error.strerror or error})") from error
    except UnicodeDecodeError as error:
        raise CfgError(f"{path}: not a text file ({error})") from error
    return parse_cfg_text(text, source=str(path))


def _format_value(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(_format_value(item) for item in value)
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def format_section(section: Section) -> str:
    """One section as cfg text: keys in ``ALWAYS_WRITTEN`` and every key that differs from its default."""
    lines = [f"[{section.KIND}]"]
    for key, f in _cfg_fields(type(section)).items():
        value = getattr(section, f.name)
        default = f.default
        if default is None and hasattr(section, "implicit_default"):
            default = section.implicit_default(f.name)
        if f.name in section.ALWAYS_WRITTEN or f.default is dataclasses.MISSING or value != default:
            lines.append(f"{key}={_format_value(value)}")
    return "\n".join(lines)


def format_cfg(cfg: DarknetCfg, header: str = "") -> str:
    """A whole cfg as text; ``header`` lines become ``#`` comments at the top."""
    comment = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines())
    return comment + "\n\n".join(format_section(section) for section in [cfg.net, *cfg.layers]) + "\n"
