"""Property-based fuzzing (hypothesis) of the Darknet and config readers: whatever the input, the only
exceptions are the library's own error types, never an internal one (IndexError, KeyError, TypeError,
OverflowError, a PyTorch RuntimeError or MemoryError from a huge layer...).

- Darknet cfgs (the project's own in darknet/, the official ones in ../shared/darknet), mutated line by line,
  through the parser, the layer graph and the model builder (and a forward pass where small): only
  :class:`CfgError`.
- ``.weights`` files with random headers, cut short, padded or garbled: only :class:`WeightsFileError`.
- Training YAMLs (``load_train_config``, ``load_dataclass``) and ``--set`` overrides: only :class:`ConfigError`.

The label readers are fuzzed in ``test_fuzz_labels.py``; settings and mutations are in ``fuzzing.py``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from darknet_testing import layer_floats
from fuzzing import fuzz_settings, integer_lists, json_numbers, json_values, mutated_lines, quiet_logs  # noqa: F401
from hypothesis import given
from hypothesis import strategies as st

from yolov3.config_loading import ConfigError, load_dataclass, to_dict
from yolov3.darknet.cfg import SECTION_TYPES, CfgError, _cfg_fields, parse_cfg_text
from yolov3.darknet.graph import HEAD_SECTIONS, build_graph
from yolov3.darknet.weights_file import WeightsFileError, WeightsHeader, read_weights_file
from yolov3.data.dataset_config import dataset_config_from_mapping
from yolov3.models.darknet import Darknet
from yolov3.train.config import TrainConfig, load_train_config

pytestmark = pytest.mark.usefixtures("quiet_logs")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROJECT_CFGS = sorted((PROJECT_ROOT / "darknet").glob("*.cfg"))
SMALL_CFGS = [path for path in PROJECT_CFGS if path.stem.endswith("-test")]  # narrow networks: cheap to build


# --- Darknet cfgs: parser, layer graph, model builder --------------------------------------------------


def without_comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


PROJECT_LINES = [without_comments(path.read_text()) for path in PROJECT_CFGS]
# The narrow test networks at a 64x64 input: built in milliseconds, and a forward pass too.
SMALL_LINES = [
    without_comments(path.read_text().replace("width=416", "width=64").replace("height=416", "height=64"))
    for path in SMALL_CFGS
]
# Every key each section accepts, and Darknet keys that are refused unless at their default.
KEYS_BY_SECTION = {
    name: (*_cfg_fields(kind), "binary", "map", "tree", "antialiasing")
    for kind in SECTION_TYPES
    for name in (kind.KIND, *kind.ALIASES)
}


def small(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(str)


# Whole sections inserted between layers: they reach the fork's layers and every reference and shape check.
SECTIONS = st.one_of(
    st.builds("[convolutional]\nfilters={}\nsize={}\nstride={}\npad={}\ngroups={}\ndilation={}\nactivation=leaky".format,
              small(0, 40), small(0, 5), small(0, 3), small(0, 1), small(0, 4), small(0, 3)),
    st.builds("[convolutional]\nfilters={}\nsize={}\nstride={}\npad=1\nbatch_normalize={}\nantialiasing={}\nxnor={}\n"
              "share_index={}\nflipped={}\nactivation=leaky".format, small(1, 40), small(1, 3), small(1, 2),
              small(0, 1), small(0, 2), st.sampled_from(("0", "0", "1")),
              st.sampled_from(("-1000000000", "-1", "-2", "0", "2")), small(0, 1)),
    st.builds("[maxpool]\nsize={}\nstride={}".format, small(0, 5), small(0, 3)),
    st.builds("[maxpool]\nsize={}\nstride_x={}\nstride_y={}\nantialiasing={}".format, small(1, 3), small(1, 3),
              small(1, 3), small(0, 2)),
    st.builds("[maxpool]\nmaxpool_depth=1\nout_channels={}".format, small(0, 40)),
    st.builds("[connected]\noutput={}\nactivation={}\nbatch_normalize={}".format, small(0, 20),
              st.sampled_from(("linear", "leaky", "logistic")), small(0, 1)),
    st.builds("[implicit]\nfilters={}\natoms={}".format, small(0, 20), small(0, 3)),
    st.builds("[activation]\nactivation={}".format, st.sampled_from(("linear", "leaky", "tanh", "relu", "mish"))),
    st.just("[batchnorm]"),
    st.builds("[crnn]\noutput={}\nhidden={}\nsize={}\npad=1\nbatch_normalize={}".format, small(0, 12), small(0, 12),
              st.sampled_from(("1", "3")), small(0, 1)),
    st.builds("[conv_lstm]\noutput={}\nsize={}\npad=1\npeephole={}\nbatch_normalize={}".format, small(0, 12),
              st.sampled_from(("1", "3")), small(0, 1), small(0, 1)),
    st.builds("[local_avgpool]\nsize={}\nstride={}".format, small(0, 5), small(0, 3)),
    st.builds("[route]\nlayers={}\ngroups={}\ngroup_id={}".format, integer_lists(-12, 12, 1, 3), small(0, 4),
              small(-1, 4)),
    st.builds("[shortcut]\nfrom={}\nweights_type={}\nweights_normalization={}".format, integer_lists(-12, 12, 1, 2),
              st.sampled_from(("none", "per_feature", "per_channel")), st.sampled_from(("none", "relu", "softmax"))),
    st.builds("[upsample]\nstride={}".format, small(0, 4)),
    st.builds("[{}]\nstride={}\nreverse={}".format, st.sampled_from(("reorg", "reorg3d")), small(0, 4), small(0, 1)),
    st.builds("[sam]\nfrom={}".format, small(-12, 12)),
    st.builds("[scale_channels]\nfrom={}\nscale_wh={}".format, small(-12, 12), small(0, 1)),
    st.sampled_from(("[avgpool]", "[dropout]", "[empty]", "[softmax]", "[cost]")),
    st.builds("[{}]\nmask={}\nanchors=10,13,16,30,33,23\nclasses={}\nnum={}".format,
              st.sampled_from(("yolo", "Gaussian_yolo")), st.sampled_from(("0,1,2", "0", "", "3")), small(0, 4),
              small(0, 4)),
    st.builds("[region]\nanchors=1,1,2,2\nclasses={}\nnum={}\ncoords=4".format, small(0, 4), small(0, 3)),
    st.text(max_size=12).map("[{}]".format),
)  # fmt: skip
MAX_BUILD_WEIGHTS = 4_000_000  # build (allocate) only networks this small; bigger ones stop at the graph
MAX_FORWARD_VALUES = 2_000_000  # and run them only if no layer's output is larger


def weights_layout(model: Darknet) -> dict[int, int]:
    """Floats per layer of our ``.weights`` layout."""
    layout: dict[int, int] = {}
    for layer in model.darknet_conv_parameters():
        layout[layer.layer_index] = layout.get(layer.layer_index, 0) + layer.num_floats
    return layout


def written_layout(nodes: list) -> dict[int, int]:
    """Floats per layer that the independent test writer (``darknet_testing.layer_floats``, from parser.c) puts."""
    rng = np.random.default_rng(0)
    sizes = {node.index: sum(part.size for part in layer_floats(rng, node)) for node in nodes}
    return {index: size for index, size in sizes.items() if size}


def check_cfg(text: str, build: bool) -> None:
    """Parse and infer the graph; with ``build``, build and run the network where small: only CfgError."""
    try:
        cfg = parse_cfg_text(text, source="fuzz.cfg")
        nodes = build_graph(cfg)
    except CfgError:
        return
    if not build or not nodes:
        return
    convolutions = [node for node in nodes if hasattr(node.section, "filters") and hasattr(node.section, "size")]
    if sum(node.section.filters * node.in_channels * node.section.size**2 for node in convolutions) > MAX_BUILD_WEIGHTS:
        return
    try:
        model = Darknet(cfg)
    except CfgError:
        return
    with contextlib.suppress(CfgError):  # only [yolo] heads without new_coords have specs
        assert len(model.head_specs) <= len(nodes)
    assert weights_layout(model) == written_layout(nodes)  # the test writer's file fits ours, layer by layer
    if max(math.prod(shape) for node in nodes for shape in (node.input_shape, node.output_shape)) > MAX_FORWARD_VALUES:
        return
    with torch.no_grad():
        outputs = model.eval()(torch.zeros(1, *nodes[0].input_shape))
    if model.is_detector:  # the graph's shapes are the network's
        expected = [node.output_shape for node in nodes if isinstance(node.section, HEAD_SECTIONS)]
        assert [tuple(output.shape[1:]) for output in outputs] == expected


@given(data=st.data())
@fuzz_settings(600)
def test_project_cfgs_raise_only_cfg_errors(data: st.DataObject) -> None:
    lines = data.draw(st.sampled_from(PROJECT_LINES))
    check_cfg(data.draw(mutated_lines(lines, KEYS_BY_SECTION, SECTIONS)), build=False)


@given(data=st.data())
@fuzz_settings(300)
def test_small_networks_build_or_raise_cfg_errors(data: st.DataObject) -> None:
    lines = data.draw(st.sampled_from(SMALL_LINES))
    check_cfg(data.draw(mutated_lines(lines, KEYS_BY_SECTION, SECTIONS, plausible=True)), build=True)


# Layers that mostly build one after another on a small input: the sections a mutated detector rarely reaches
# (a [connected] or a [maxpool] over channels breaks its routes and heads), weight sharing included.
CHAIN_LAYERS = st.one_of(
    st.builds("[convolutional]\nfilters={}\nsize={}\nstride={}\npad=1\nbatch_normalize={}\nantialiasing={}\n"
              "flipped={}\nactivation=leaky".format, st.sampled_from(("4", "4", "8")), st.sampled_from(("1", "3")),
              small(1, 2), small(0, 1), st.sampled_from(("0", "0", "1", "2")), small(0, 1)),
    # a conv on 4 channels, then one sharing its weights (another stride, activation, blur, or XNOR)
    st.builds("[convolutional]\nfilters=4\nsize=1\nactivation=linear\n[convolutional]\nfilters=4\nsize=3\npad=1\n"
              "batch_normalize={0}\nflipped={1}\nactivation=leaky\n[convolutional]\nfilters=4\nsize=3\npad=1\n"
              "batch_normalize={0}\nshare_index={2}\nstride={3}\nantialiasing={4}\nxnor={5}\nactivation=mish".format,
              small(0, 1), small(0, 1), st.sampled_from(("-1", "-1", "-2", "1")), small(1, 2),
              st.sampled_from(("0", "0", "1")), st.sampled_from(("0", "0", "1"))),
    st.just("[convolutional]\nfilters=4\nsize=3\npad=1\nxnor=1\nbatch_normalize=1\nactivation=leaky"),
    st.builds("[maxpool]\nsize={}\nstride_x={}\nstride_y={}\nantialiasing={}".format, small(1, 3), small(1, 2),
              small(1, 2), small(0, 2)),
    st.builds("[maxpool]\nmaxpool_depth=1\nout_channels={}".format, small(1, 4)),
    st.builds("[connected]\noutput={}\nactivation={}\nbatch_normalize={}".format, small(1, 8),
              st.sampled_from(("linear", "leaky", "logistic")), small(0, 1)),
    st.builds("[implicit]\nfilters={}\natoms={}".format, small(1, 8), small(1, 2)),
    st.builds("[activation]\nactivation={}".format, st.sampled_from(("linear", "leaky", "tanh", "relu", "elu"))),
    st.just("[batchnorm]"),
    st.builds("[crnn]\noutput={}\nhidden={}\nsize={}\npad=1\nbatch_normalize={}".format, small(1, 6), small(1, 6),
              st.sampled_from(("1", "3")), small(0, 1)),
    st.builds("[conv_lstm]\noutput={}\nsize={}\npad=1\npeephole={}\nbatch_normalize={}".format, small(1, 6),
              st.sampled_from(("1", "3")), small(0, 1), small(0, 1)),
    st.builds("[shortcut]\nfrom={}".format, small(-3, -2)),
    st.builds("[route]\nlayers=-1,{}".format, small(-3, -2)),
)  # fmt: skip


@given(layers=st.lists(CHAIN_LAYERS, min_size=1, max_size=6))
@fuzz_settings(120)
def test_chains_of_layers_build_or_raise_cfg_errors(layers: list[str]) -> None:
    """Built, run, and with a ``.weights`` layout equal to the independent test writer's (check_cfg)."""
    check_cfg("[net]\nwidth=16\nheight=16\nchannels=3\n" + "\n".join(layers), build=True)


@functools.cache
def official_lines(folder: Path) -> tuple[list[str], ...]:
    return tuple(without_comments(path.read_text()) for path in sorted(folder.glob("*.cfg")))


@given(data=st.data())
@fuzz_settings(300)
def test_official_cfgs_raise_only_cfg_errors(shared_darknet: Path, data: st.DataObject) -> None:
    lines = data.draw(st.sampled_from(official_lines(shared_darknet)))
    plausible = data.draw(st.booleans())
    check_cfg(data.draw(mutated_lines(lines, KEYS_BY_SECTION, SECTIONS, plausible=plausible)), build=False)


def test_huge_values_are_refused_before_anything_is_allocated() -> None:
    net = "[net]\nwidth={size}\nheight={size}\nchannels=3\n"
    cases = {
        net.format(size=64) + "[convolutional]\nfilters=1073741824\n": "filters=1073741824 is out of range",
        net.format(size=64) + "[convolutional]\nfilters=65536\n[convolutional]\nfilters=65536\nsize=3\n": "weights",
        net.format(size=65536) + "[reorg]\nstride=2\n": "allowed: at most 67,108,864",
        net.format(size=65536) + "[upsample]\nstride=4\n": "allowed: at most 2,147,483,647",
    }
    for text, message in cases.items():
        with pytest.raises(CfgError, match=message):
            Darknet(parse_cfg_text(text))


# --- .weights files ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def small_model(scratch: Path) -> tuple[Darknet, bytes]:
    """The narrow test network and its valid ``.weights`` bytes."""
    model = Darknet(parse_cfg_text("\n".join(SMALL_LINES[0])))
    model.save_darknet_weights(scratch / "valid.weights")
    return model, (scratch / "valid.weights").read_bytes()


int32s = st.sampled_from((0, 1, 2, -1, 9, 10, 999, 1000, 2**31 - 1, -(2**31))) | st.integers(-(2**31), 2**31 - 1)


@st.composite
def mutated_weights(draw: st.DrawFn, valid: bytes) -> bytes:
    """A valid file with a random header, cut short, padded or garbled; or a few random bytes."""
    action = draw(st.sampled_from(("header", "cut", "pad", "garble", "random")))
    if action == "random":
        return draw(st.binary(max_size=64))
    data = bytearray(valid)
    if action == "header":
        header = WeightsHeader(draw(int32s), draw(int32s), draw(int32s), draw(st.integers(0, 2**31 - 1)))
        data = bytearray(header.to_bytes() + valid[WeightsHeader().size_bytes :])
    elif action == "cut":
        del data[draw(st.integers(0, len(data))) :]
    elif action == "pad":
        data += draw(st.binary(min_size=1, max_size=12))
    else:
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@given(data=st.data())
@fuzz_settings(500)
def test_weights_files_raise_only_weights_file_errors(
    data: st.DataObject, small_model: tuple[Darknet, bytes], scratch: Path
) -> None:
    model, valid = small_model
    path = scratch / "fuzz.weights"
    path.write_bytes(data.draw(mutated_weights(valid)))
    cutoff = data.draw(st.none() | st.integers(-3, 80) | st.sampled_from((2**31, -(2**63), 10**30)))
    with contextlib.suppress(WeightsFileError):
        read_weights_file(path)
    with contextlib.suppress(WeightsFileError):
        model.load_darknet_weights(path, cutoff=cutoff)


# --- training YAMLs: load_train_config, load_dataclass, --set overrides --------------------------------

CONFIG_FILES = sorted((PROJECT_ROOT / "configs").glob("*.yaml"))


@functools.cache
def config_mappings(full: bool) -> tuple[dict, ...]:
    """Every project config as written, or (``full``) with all its defaults spelled out: every field to mutate."""
    if full:
        return tuple(to_dict(load_train_config(path)) for path in CONFIG_FILES)
    return tuple(yaml.safe_load(path.read_text()) for path in CONFIG_FILES)


def value_paths(node: object, prefix: tuple = ()) -> list[tuple]:
    """Paths (keys and list indices) to every value of a nested mapping, containers included."""
    paths = [prefix] if prefix else []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        paths += value_paths(child, (*prefix, key))
    return paths


yaml_values = st.one_of(
    json_values,
    json_numbers,
    st.sampled_from(("none", "auto", "cpu", "coco", "voc", "yolo", "adam", "cosine", "linear", "Affine", "", "~")),
    st.dates(),
    st.binary(max_size=4),
)


@st.composite
def mutated_configs(draw: st.DrawFn, full: bool = True, unprintable: bool = False) -> dict:
    """A project config with 1..3 values replaced by random YAML values, removed, or joined by an unknown key;
    ``unprintable`` adds integers too long for ``repr`` (YAML reads them from hexadecimal)."""
    replacements = yaml_values | st.just(16**5000) if unprintable else yaml_values
    config = json.loads(json.dumps(draw(st.sampled_from(config_mappings(full))), default=str))
    pick = random.Random(draw(st.integers(0, 2**32 - 1)))
    for _ in range(draw(st.integers(1, 3))):
        *parents, last = pick.choice(value_paths(config))
        node = config
        for key in parents:
            node = node[key]
        action = draw(st.sampled_from(("replace", "replace", "replace", "remove", "add")))
        if action == "remove" and isinstance(node, dict):
            del node[last]
        elif action == "add" and isinstance(node, dict):
            node[draw(st.text(max_size=6) | st.integers())] = draw(replacements)
        else:
            node[last] = draw(replacements)
    return config


@given(mapping=mutated_configs(unprintable=True))
@fuzz_settings(400)
def test_config_mappings_raise_only_config_errors(mapping: dict) -> None:
    with contextlib.suppress(ConfigError):
        load_dataclass(TrainConfig, mapping, source="fuzz.yaml")


overrides = st.lists(
    st.builds(
        "{}={}".format,
        st.sampled_from(("train.epochs", "data.image_size", "data.dataset.format", "model", "data", "optimizer.name",
                         "data.augment.transforms", "a.b.c", "", "data.dataset.names", "schedule.policy")),
        st.text(max_size=8) | st.sampled_from(("[", "{a: 1", "!!python/object:os.system", "*x", "1e400", "- a\n- b",
                                               "9" * 5000, "0x" + "f" * 5000, "{0x" + "f" * 5000 + ": 1}")),
    ) | st.text(max_size=10),
    max_size=3,
)  # fmt: skip


@given(data=st.data())
@fuzz_settings(250)
def test_config_files_raise_only_config_errors(data: st.DataObject, scratch: Path) -> None:
    text = yaml.safe_dump(data.draw(mutated_configs(full=False)), sort_keys=False)
    if data.draw(st.booleans()):
        text = data.draw(mutated_lines(text.splitlines(), max_mutations=2))
    garbage = data.draw(st.integers(0, 9)) == 0
    path = scratch / "fuzz.yaml"
    path.write_bytes(data.draw(st.binary(max_size=30)) if garbage else text.encode("utf-8", "surrogatepass"))
    with contextlib.suppress(ConfigError):
        load_train_config(path, data.draw(overrides))


# The dataset YAMLs a user writes (``evaluate --data``, ``data.dataset``), YOLO's shorthands included.
DATASET_MAPPINGS = (
    {"path": "../datasets/shapes", "train": "images/train", "val": "images/val", "names": {0: "a", 1: "b"}, "nc": 2},
    {"format": "voc", "root": "VOCdevkit", "train": {"sets": ["VOC2007/trainval"]}, "val": ["VOC2007/test"]},
    {"format": "kitti", "root": "kitti", "train": {"images": "i", "labels": "l", "list_file": "t.txt"}, "names": ["a"]},
    {"format": "coco", "root": "coco", "train": {"images": "i", "annotations": "a.json"}, "bad_data": "raise"},
)


DATASET_KEYS = ("path", "root", "format", "train", "val", "test", "names", "nc", "names_file", "bad_data", "download",
                "synthetic", "ignore_classes", "drop_difficult")  # fmt: skip
# ``names: {0: a, 1: b}`` with keys of every kind
name_mappings = st.dictionaries(st.integers(-1, 3) | st.text(max_size=2) | st.floats() | st.booleans(), json_values)


@st.composite
def mutated_dataset_mappings(draw: st.DrawFn) -> dict:
    """A dataset YAML with 1..3 keys removed or set to random YAML values."""
    mapping = json.loads(json.dumps(draw(st.sampled_from(DATASET_MAPPINGS))))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(DATASET_KEYS))
        if draw(st.integers(0, 3)) == 0:
            mapping.pop(key, None)
        else:
            mapping[key] = draw(yaml_values | name_mappings | st.just(16**5000))
    return mapping


@given(mapping=mutated_dataset_mappings())
@fuzz_settings(300)
def test_dataset_mappings_raise_only_config_errors(mapping: dict) -> None:
    with contextlib.suppress(ConfigError):
        dataset_config_from_mapping(mapping, "fuzz.yaml", base_dir=".")


def test_config_inputs_found_by_fuzzing(scratch: Path) -> None:
    """Each raised an internal exception before (a YAML error, UnicodeDecodeError, ValueError, OverflowError)."""
    path = scratch / "found.yaml"
    path.write_text(yaml.safe_dump({"data": {"dataset": {"format": "coco", "root": "."}}}))
    for override, message in (
        ("train.epochs=[", "the value is not valid YAML"),
        ("train.epochs=" + "9" * 5000, "not valid YAML.*Exceeds the limit"),
        ("train.epochs=0x" + "f" * 5000, "expected a 64-bit integer, got an integer of 20,000 bits"),
        ("seed=18446744073709551616", "expected a 64-bit integer"),  # torch.manual_seed would overflow
        ("optimizer.learning_rate=0x" + "f" * 300, "expected a number, got .*, too large"),
        ("data.dataset.names=[0x" + "f" * 5000 + "]", r"names\[0\]: expected a string, got an integer of 20,000 bits"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_train_config(path, [override])
    names = {"data": {"dataset": {"format": "coco", "root": ".", "names": {16**5000: "a"}}}}
    with pytest.raises(ConfigError, match="expected a list, got a dict holding an integer too long to print"):
        load_dataclass(TrainConfig, names)
    path.write_bytes(b"data: \x80\n")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_train_config(path)
    with pytest.raises(ConfigError, match=r"names: mapping keys must be the class indices 0\.\.1, got 0, 'x'"):
        dataset_config_from_mapping({"path": ".", "names": {0: "a", "x": "b"}})  # sorted() raised TypeError
