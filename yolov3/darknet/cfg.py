"""Darknet ``.cfg`` files: a strict parser and a writer over the typed sections of :mod:`cfg_sections`.

A cfg file is a list of ``[section]`` headers, each followed by ``key=value`` lines. Darknet strips all
white space from a line and treats lines starting with ``#`` or ``;`` as comments; so do we. The vocabulary
is AlexeyAB's ``src/parser.c``: a key Darknet reads only for its own training loop is accepted and reported
once per file in one warning (:mod:`cfg_vocabulary`), and so is a [net] key Darknet does not read at all unless
it looks like a typo of one it reads; every other unknown section, key or value is an error
that names the file, the line and the section, with a suggestion. A key repeated in [net] keeps its first
value, as in Darknet (whose ``option_find`` returns the first match); repeated elsewhere it is an error.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from yolov3.darknet.cfg_classic_sections import (  # noqa: F401 - re-exported
    CLASSIC_SECTION_TYPES,
    CropSection,
    DeconvolutionalSection,
    DetectionSection,
    LocalSection,
    LrnSection,
)
from yolov3.darknet.cfg_convolutional import ConvolutionalSection
from yolov3.darknet.cfg_fork_sections import (  # noqa: F401 - re-exported
    FORK_SECTION_TYPES,
    ActivationSection,
    BatchnormSection,
    ConnectedSection,
    ContrastiveSection,
    ConvLstmSection,
    CrnnSection,
    EmptySection,
    GaussianYoloSection,
    ImplicitSection,
    LocalAvgpoolSection,
    RegionSection,
    Reorg3dSection,
    ReorgSection,
    SamSection,
    ScaleChannelsSection,
)
from yolov3.darknet.cfg_recurrent_sections import (  # noqa: F401 - re-exported
    RECURRENT_SECTION_TYPES,
    GruSection,
    HistorySection,
    LstmSection,
    RnnSection,
)
from yolov3.darknet.cfg_sections import (  # noqa: F401 - re-exported
    ACTIVATIONS,
    LEARNING_RATE_POLICIES,
    AvgpoolSection,
    CfgError,
    CostSection,
    DropoutSection,
    MaxpoolSection,
    NetSection,
    RouteSection,
    Section,
    ShortcutSection,
    SoftmaxSection,
    UpsampleSection,
    YoloSection,
    _location,
)
from yolov3.darknet.cfg_vocabulary import (
    PJREDDIE_ONLY_NET,
    REFUSED_SECTIONS,
    TRAINING_ONLY,
    classify_key,
    typo_of,
)

logger = logging.getLogger(__name__)

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
    *FORK_SECTION_TYPES,
    *RECURRENT_SECTION_TYPES,
    *CLASSIC_SECTION_TYPES,
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


@functools.cache
def _field_types(kind: type[Section]) -> dict[str, object]:
    """The resolved annotation of every field of ``kind`` (``typing.get_type_hints`` is most of a parse's time)."""
    return typing.get_type_hints(kind)


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


def _numeric_text(text: str, annotation: object) -> str:
    """A number (or list of numbers) as Darknet reads it when a comment follows on its line: ``strip`` drops the
    blanks and ``atoi`` / ``atof`` stop at the ``#`` (``filters=40 #32``, a tab before the ``#``, in AlexeyAB's
    efficientnet-lite3.cfg is 40). A word keeps its ``#``, and so stays an error."""
    if "#" in text and _describe(annotation) != "a word":
        return text.split("#", 1)[0]
    return text


def _describe(annotation: object) -> str:
    if typing.get_origin(annotation) is tuple:
        item = _describe(typing.get_args(annotation)[0]).split(" ", 1)[1]  # "an integer" -> "integer"
        return f"a comma-separated list of {item}s"
    if annotation is int or int in typing.get_args(annotation):
        return "an integer"
    return "a number" if annotation is float else "a word"


def parse_cfg_text(text: str, source: str = "<cfg>") -> DarknetCfg:
    """Parse cfg text; ``source`` names the file in error messages."""
    blocks: list[tuple[type[Section], str, int, dict[str, tuple[str, int]]]] = []
    ignored: list[str] = []
    for line_number, raw_line in enumerate(text.splitlines(), start=1):
        line = "".join(raw_line.split())
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]"):
                raise CfgError(f"{_location(source, line_number)} section header {raw_line.strip()!r} has no ']'")
            name = line[1:-1]
            if name.lower() in REFUSED_SECTIONS and name not in _TYPE_BY_NAME:
                raise CfgError(
                    f"{_location(source, line_number)} section [{name}] is read by Darknet but not supported here: "
                    f"{REFUSED_SECTIONS[name.lower()]}"
                )
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
            if kind is not NetSection:
                raise CfgError(f"{_location(source, line_number, kind.KIND)} key {key!r} given twice")
            ignored.append(f"[net] {key} (line {line_number}, repeated: Darknet keeps line {options[key][1]})")
            continue
        options[key] = (value, line_number)

    if not blocks or blocks[0][0] is not NetSection:
        raise CfgError(f"{source}:1: the first section must be [net] (or [network])")
    sections = [_build_section(kind, line_number, options, source, ignored) for kind, _, line_number, options in blocks]
    if ignored:
        logger.warning(
            "%s: %d key(s) are ignored: they only steer Darknet's own training loop, repeat a default, or are "
            "not read by Darknet either: %s",
            source,
            len(ignored),
            "; ".join(ignored),
        )
    for section in sections[1:]:
        if isinstance(section, NetSection):
            raise section.error("only the first section may be [net]")
    net = sections[0]
    assert isinstance(net, NetSection)  # blocks[0] was checked to be [net] above
    return DarknetCfg(net=net, layers=sections[1:], source=source)


@functools.cache
def _readers() -> dict[str, tuple[str, ...]]:
    """key -> the sections (``[kind]``) that read it, as fields here or as ignored training keys."""
    readers: dict[str, list[str]] = {}
    for kind in SECTION_TYPES:
        for key in (*_cfg_fields(kind), *TRAINING_ONLY.get(kind.KIND, ())):
            readers.setdefault(key, []).append(f"[{kind.KIND}]")
    return {key: tuple(sorted(set(kinds))) for key, kinds in readers.items()}


def _unread_key_reader(kind: type[Section], key: str, fields: dict[str, dataclasses.Field]) -> str | None:
    """Why an unread ``key`` of a ``kind`` section is ignored (as Darknet ignores it), or None for a likely typo
    of a key the section reads (an error)."""
    others = _readers().get(key, ())
    if others:  # e.g. [yolo] uc_normalizer, a [Gaussian_yolo] key
        return f"read by {', '.join(others)} only"
    if kind is NetSection and key in PJREDDIE_ONLY_NET:
        return "read by pjreddie's Darknet only"
    if typo_of(key, [*fields, *TRAINING_ONLY.get(kind.KIND, ())]) is not None:
        return None
    return "not read by Darknet either"


def _build_section(
    kind: type[Section], line_number: int, options: dict[str, tuple[str, int]], source: str, ignored: list[str]
) -> Section:
    """One section from its options; training-only keys are appended to ``ignored`` instead."""
    fields = _cfg_fields(kind)
    hints = _field_types(kind)  # type: ignore[arg-type]  # a class is hashable; mypy reads its instances' __hash__
    values: dict[str, object] = {}
    for key, (text, key_line) in options.items():
        verdict = None if key in fields else classify_key(kind.KIND, key, text)
        if verdict == "training":
            ignored.append(f"[{kind.KIND}] {key} (line {key_line})")
            continue
        if verdict is not None:
            raise CfgError(f"{_location(source, key_line, kind.KIND)} {verdict}")
        if key not in fields:
            reader = _unread_key_reader(kind, key, fields)
            if reader is not None:  # Darknet prints "Unused field" and carries on
                ignored.append(f"[{kind.KIND}] {key} (line {key_line}, {reader})")
                continue
            hint = [typo_of(key, [*fields, *TRAINING_ONLY.get(kind.KIND, ())]) or ""]
            raise CfgError(
                f"{_location(source, key_line, kind.KIND)} unknown key {key!r}"
                + (f"; did you mean {hint[0]!r}?" if hint[0] else "")
                + f" Allowed keys: {', '.join(fields)}"
            )
        target = fields[key]
        try:
            values[target.name] = _parse_value(_numeric_text(text, hints[target.name]), hints[target.name])
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
