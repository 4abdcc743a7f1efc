"""Darknet import/export for any model that can describe itself as a list of cfg layers.

A model mixes in :class:`DarknetIO` and implements :meth:`DarknetIO.describe_darknet`, appending its
layers in Darknet order to a :class:`DarknetLayers`. From that one description come the cfg text,
``.weights`` loading and saving (with ``cutoff``), and the check that a native model and the
cfg-built :class:`~yolov3.models.Darknet` are the same network.
"""

from __future__ import annotations

import os

from torch import nn

from yolov3.atomic import write_text_atomic
from yolov3.darknet.cfg import DarknetCfg, NetSection, RouteSection, Section, ShortcutSection, format_cfg
from yolov3.darknet.weights_file import (
    ConvParameters,
    WeightsHeader,
    load_weights,
    save_weights,
)
from yolov3.models.layers import ConvBNAct

# Routes to layers at most this far back are written relative (-1, -4), farther ones absolute (61),
# as in Darknet's own cfgs.
_RELATIVE_ROUTE_REACH = 8


class DarknetLayers:
    """The layers of a model in Darknet order: a section per layer, and the module owning its weights."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.modules: list[nn.Module | None] = []

    @property
    def last(self) -> int:
        """Index of the most recent layer."""
        return len(self.sections) - 1

    def add(self, section: Section, module: nn.Module | None = None) -> int:
        self.sections.append(section)
        self.modules.append(module)
        return self.last

    def conv(self, *blocks: ConvBNAct) -> int:
        for block in blocks:
            self.add(block.to_section(), block)
        return self.last

    def _reference(self, index: int) -> int:
        here = len(self.sections)
        return index - here if here - index <= _RELATIVE_ROUTE_REACH else index

    def route(self, *indices: int) -> int:
        return self.add(RouteSection(layers=tuple(self._reference(index) for index in indices)))

    def shortcut(self, index: int, activation: str = "linear") -> int:
        return self.add(ShortcutSection(from_layer=(self._reference(index),), activation=activation))


class DarknetIO:
    """Mixin for ``nn.Module``: cfg export and ``.weights`` I/O from :meth:`describe_darknet`."""

    darknet_header: WeightsHeader = WeightsHeader()

    def describe_darknet(self, layers: DarknetLayers) -> object:
        """Append this model's layers, in Darknet order, to ``layers`` (a model may also return something of its
        own, as :class:`~yolov3.models.darknet53.Darknet53` returns its feature layers; callers here ignore it)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be expressed as a Darknet cfg")

    def darknet_net_section(self) -> NetSection:
        """The ``[net]`` section written on export."""
        raise NotImplementedError(f"{type(self).__name__} does not define its [net] section")

    def darknet_layers(self) -> DarknetLayers:
        layers = DarknetLayers()
        self.describe_darknet(layers)
        return layers

    def to_darknet_cfg(self) -> DarknetCfg:
        return DarknetCfg(net=self.darknet_net_section(), layers=self.darknet_layers().sections)

    def to_darknet_cfg_text(self, header: str = "") -> str:
        return format_cfg(self.to_darknet_cfg(), header=header)

    def save_darknet_cfg(self, path: str | os.PathLike, header: str = "") -> None:
        write_text_atomic(path, self.to_darknet_cfg_text(header))

    def darknet_conv_parameters(self) -> list[ConvParameters]:
        """Every [convolutional] layer's tensors with its layer index, in file order."""
        layers = self.darknet_layers()
        return [
            ConvParameters(index, module.conv, module.bn)
            for index, module in enumerate(layers.modules)
            if isinstance(module, ConvBNAct)
        ]

    def load_darknet_weights(self, path: str | os.PathLike, cutoff: int | None = None) -> WeightsHeader:
        """Load a Darknet ``.weights`` file; with ``cutoff``, only layers ``0 .. cutoff-1`` (a backbone file)."""
        header = load_weights(path, self.darknet_conv_parameters(), cutoff=cutoff)
        self.darknet_header = header
        return header

    def save_darknet_weights(self, path: str | os.PathLike, cutoff: int | None = None) -> None:
        """Save as a Darknet ``.weights`` file (the header of the file last loaded, if any)."""
        save_weights(path, self.darknet_conv_parameters(), header=self.darknet_header, cutoff=cutoff)
