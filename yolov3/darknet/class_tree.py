"""Darknet's class trees (``tree=`` in [region] and [softmax]: YOLO9000's ``9k.tree``) and what Darknet does with one.

A tree file has one class per line: its name, then the index of its parent line (-1, or nothing, for a root).
``read_tree`` (AlexeyAB's ``src/tree.c``) cuts the lines into *groups*: a new group starts wherever the parent
differs from the line before, so siblings written together share a group. Darknet then uses:

- ``softmax_tree`` (the [region] and [softmax] forwards): a softmax over each group's consecutive entries, in
  file order (entries past the tree's classes are left alone);
- ``hierarchy_predictions`` (``get_region_boxes``): every class's probability times its parent's, in place and
  in file order (so a parent listed after its child is read before it is multiplied itself);
- then, in the fork's ``get_region_boxes`` with no ``map``, only the last class (highest index) whose product is
  above 0.5 keeps its probability, the others become 0; the detection's probability is that product itself,
  not times the objectness, and is kept where the objectness is above the threshold.

Paths: Darknet opens ``tree=`` relative to its working directory; here the working directory is tried first,
then the cfg's folder. A missing file is a CfgError naming the cfg line and both paths tried.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import torch

from yolov3.darknet.cfg_sections import CfgError, _location

_PARENT = re.compile(r"\s*([+-]?\d+)")  # sscanf's %d after the name: optional blanks, sign, digits


class TreeSection(Protocol):
    """A section with a ``tree=`` key ([region], [softmax])."""

    KIND: ClassVar[str]
    tree: str
    source: str
    line: int


@dataclass(frozen=True)
class ClassTree:
    """A parsed tree file: per class its name and parent, and Darknet's groups (consecutive runs of siblings)."""

    names: tuple[str, ...]
    parents: tuple[int, ...]
    group_sizes: tuple[int, ...]
    path: str

    @property
    def size(self) -> int:
        return len(self.names)

    @property
    def group_index(self) -> torch.Tensor:
        """(N,) int64: the group of every class, as the softmax loop walks them."""
        sizes = torch.tensor(self.group_sizes, dtype=torch.int64)
        return torch.repeat_interleave(torch.arange(len(self.group_sizes)), sizes)

    @functools.cached_property
    def _hierarchy_steps(self) -> int:
        """How many vectorized passes reproduce Darknet's in-place loop: the longest chain of parents listed earlier."""
        depth = [0] * self.size
        for index, parent in enumerate(self.parents):
            if parent >= 0:
                depth[index] = depth[parent] + 1 if parent < index else 1
        return max(depth, default=0)


def parse_tree_text(text: str, path: str) -> ClassTree:
    """``read_tree`` over ``text``: every line is a class (an empty line too: a root with an empty name)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # fgetl returns no line after the last newline
    names, parents, sizes = [], [], []
    last_parent, group_size = -1, 0
    for line in lines:
        line = line[:-1] if line.endswith("\r") else line
        words = line.split(None, 1)
        name = words[0] if words else ""
        match = _PARENT.match(words[1]) if len(words) > 1 else None
        parent = int(match.group(1)) if match else -1
        if parent != last_parent:
            sizes.append(group_size)
            group_size, last_parent = 0, parent
        names.append(name)
        parents.append(parent)
        group_size += 1
    sizes.append(group_size)
    for index, parent in enumerate(parents):
        if parent >= len(parents):
            raise CfgError(
                f"{path}:{index + 1}: class {names[index]!r} has parent {parent}, but the tree has {len(parents)} "
                "classes (Darknet would read outside it)"
            )
    return ClassTree(tuple(names), tuple(parents), tuple(sizes), path)


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for names the system cannot even look up (too long, a NUL byte)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def tree_candidates(value: str, cfg_source: str) -> list[Path]:
    """Where ``tree=value`` is looked for: as Darknet does (the working directory), then beside the cfg."""
    candidates = [Path(value)]
    cfg_path = Path(cfg_source)
    if not candidates[0].is_absolute() and _is_file(cfg_path):
        beside = cfg_path.parent / value
        if os.path.abspath(beside) != os.path.abspath(value):
            candidates.append(beside)
    return candidates


@functools.cache
def _load(value: str, cfg_source: str, line: int, kind: str, working_directory: str) -> ClassTree:
    """One tree file, read once per (value, cfg, working directory)."""
    where = _location(cfg_source, line, kind)
    candidates = tree_candidates(value, cfg_source)
    for candidate in candidates:
        if _is_file(candidate):
            try:
                text = candidate.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise CfgError(f"{where} tree={value}: cannot read {candidate} ({error})") from error
            return parse_tree_text(text, str(candidate))
    tried = " and ".join(os.path.abspath(candidate) for candidate in candidates)
    raise CfgError(f"{where} tree={value}: no such file; tried {tried} (the working directory, then the cfg's folder)")


def load_class_tree(section: TreeSection) -> ClassTree | None:
    """The tree of a [region] or [softmax] section (read once per file), or None without ``tree=``."""
    if not section.tree:
        return None
    return _load(section.tree, section.source, section.line, section.KIND, os.getcwd())


def tree_softmax(logits: torch.Tensor, tree: ClassTree, temperature: float = 1.0) -> torch.Tensor:
    """``softmax_tree`` over the last dimension (..., K), K >= the tree's classes: a softmax per group of the
    first ``tree.size`` entries; the rest are returned unchanged."""
    count = tree.size
    head = logits[..., :count]
    groups = tree.group_index.to(logits.device)  # (N,)
    shape = (*head.shape[:-1], len(tree.group_sizes))
    index = groups.expand_as(head)  # (N,) -> (..., N)
    largest = head.new_full(shape, float("-inf")).scatter_reduce(-1, index, head, "amax")  # (..., G)
    exponent = torch.exp(head / temperature - largest.gather(-1, index) / temperature)  # (..., N)
    total = head.new_zeros(shape).scatter_add(-1, index, exponent)  # (..., G)
    return torch.cat((exponent / total.gather(-1, index), logits[..., count:]), -1)


def hierarchy_predictions(probabilities: torch.Tensor, tree: ClassTree) -> torch.Tensor:
    """Darknet's in-place ``predictions[j] *= predictions[parent[j]]`` for j = 0..N-1 over the last dimension."""
    parents = torch.tensor(tree.parents, dtype=torch.int64, device=probabilities.device)  # (N,)
    has_parent = parents >= 0
    safe = parents.clamp(min=0)
    done_before = has_parent & (parents < torch.arange(tree.size, device=probabilities.device))
    raw = probabilities[..., : tree.size]
    value = raw
    for _ in range(tree._hierarchy_steps):
        parent_value = torch.where(done_before, value[..., safe], raw[..., safe])  # (..., N)
        value = torch.where(has_parent, raw * parent_value, raw)
    return torch.cat((value, probabilities[..., tree.size :]), -1)


def last_class_above_half(products: torch.Tensor) -> torch.Tensor:
    """``get_region_boxes``' choice: only the highest-index class whose product is above 0.5 keeps it, the rest 0."""
    above = products > 0.5  # (..., N)
    count = products.shape[-1]
    last = count - 1 - above.flip(-1).to(torch.uint8).argmax(-1, keepdim=True)  # (..., 1)
    keep = above.any(-1, keepdim=True) & (torch.arange(count, device=products.device) == last)
    return torch.where(keep, products, torch.zeros_like(products))


def check_tree_size(section: TreeSection, tree: ClassTree, entries: int, exact: bool) -> None:
    """The tree must cover ``entries`` classes exactly ([region]) or at most ([softmax]): Darknet reads past them."""
    if tree.size > entries or (exact and tree.size != entries):
        relation = "equal to" if exact else "at most"
        raise CfgError(
            f"{_location(section.source, section.line, section.KIND)} tree={section.tree} has {tree.size} classes; "
            f"they must be {relation} the layer's {entries} (Darknet indexes past them otherwise)"
        )
