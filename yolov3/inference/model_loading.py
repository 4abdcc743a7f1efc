"""Loading a detector for inference from whatever a user has: a training checkpoint or Darknet weights.

:func:`load_inference_model` accepts

- a checkpoint of ours (``best.pt``, written by :func:`yolov3.checkpoint.save_checkpoint`): it names its
  model, and carries its class names, input size and preprocessing; the EMA weights are used when present;
- a Darknet ``.weights`` file with either its ``.cfg`` (built as :class:`~yolov3.models.Darknet`) or the name
  of a registered model (``yolov3_tiny``; ``num_classes`` for one trained on other classes). Its preprocessing
  is Darknet's own ``letterbox_image`` (``Preprocessing.from_mode("darknet")``), what ``darknet detector test``
  feeds it, so ``detect``, ``evaluate --weights`` and ``export`` (metadata, int8 calibration) all use it;
  a channel-pruned ``pruned.cfg`` + ``pruned.weights`` loads the same way;
- a compressed ``.yolov3c`` file (:mod:`yolov3.inference.compressed_file`), decoded on load to the model it holds;
- an ONNX raw-heads graph written by ``python -m yolov3.export`` (fp32, fp16 or int8), run by ONNX Runtime
  behind the same interface (:mod:`yolov3.inference.onnx_backend`); its metadata carries the rest. Its
  precision and input size are the graph's (:meth:`LoadedModel.check_precision`, ``check_input_size``).

The result, a :class:`LoadedModel`, is everything inference and export need: the model in eval mode, its head
specs (:class:`~yolov3.inference.region_decode.DarknetHeadSpec` for a cfg's [region], [Gaussian_yolo] and
new_coords [yolo] heads), class names (or None), input size and preprocessing. Every error names the file and
what was expected. ``LoadedModel.backend`` names what runs the forward pass (logged): ``PyTorch``, ``PyTorch
(yolov3c decoded)`` or ``onnxruntime 1.x (CPUExecutionProvider, int8 QDQ)``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from yolov3.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from yolov3.darknet.cfg import CfgError
from yolov3.darknet.weights_file import WeightsFileError
from yolov3.inference.compressed_file import MAGIC, read_compressed_file
from yolov3.inference.predictor import model_head_specs, model_input_size
from yolov3.inference.preprocess import Preprocessing
from yolov3.inference.region_decode import DarknetHeadSpec
from yolov3.models import Darknet, create_model
from yolov3.models.darknet_io import DarknetIO
from yolov3.models.yolo_head import YoloHeadSpec

if TYPE_CHECKING:
    from yolov3.data.transforms import Normalization  # not at run time: it imports albumentations

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pt", ".pth")
COMPRESSED_SUFFIX = ".yolov3c"
ONNX_RUNTIME = "onnxruntime"
PYTORCH = "pytorch"


class ModelLoadingError(ValueError):
    """Weights that cannot be loaded as asked; the message names the file and what was expected."""


@dataclass(frozen=True)
class LoadedModel:
    """A detector ready for inference, with what it needs to be fed and read.

    ``model`` is in eval mode on the CPU; ``input_size`` is (height, width); ``class_names`` is None when the
    weights do not carry them (Darknet files); ``source`` says what was loaded, for logs and reports.
    ``runtime`` is ``"pytorch"`` or ``"onnxruntime"`` (an :class:`~yolov3.inference.onnx_backend.OnnxHeadsModel`:
    fixed input size and precision) and ``backend`` says it in words, e.g. ``onnxruntime 1.x
    (CPUExecutionProvider, int8 QDQ)``; ``darknet_weights`` marks weights from Darknet (directly or exported
    from a ``.weights`` file), for which detect defaults to Darknet's letterbox and output.
    """

    model: nn.Module
    head_specs: Sequence[YoloHeadSpec | DarknetHeadSpec]
    class_names: tuple[str, ...] | None
    input_size: tuple[int, int]
    preprocessing: Preprocessing
    source: str
    # how the training pipeline normalized inputs: darknet (RGB/255) or imagenet
    normalization: Normalization = "darknet"
    backend: str = "PyTorch"
    runtime: str = PYTORCH
    darknet_weights: bool = False

    @property
    def num_classes(self) -> int:
        return self.head_specs[0].num_classes

    def check_precision(self, precision: str) -> None:
        """An ONNX graph runs at the precision it was exported in: any ``precision`` but fp32 is an error."""
        if self.runtime == ONNX_RUNTIME and precision != "fp32":
            raise ModelLoadingError(
                f"{self.source}: an ONNX model runs at the precision it was exported in ({self.backend}); "
                f"--precision {precision} applies to PyTorch weights (export --fp16 or --int8 instead)"
            )

    def check_input_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """``input_size`` itself where the model takes it; an ONNX graph takes only the size it was exported at."""
        if self.runtime == ONNX_RUNTIME and tuple(input_size) != tuple(self.input_size):
            height, width = self.input_size
            raise ModelLoadingError(
                f"{self.source}: the graph was exported for {height}x{width} inputs, not "
                f"{input_size[0]}x{input_size[1]}; export it again with --img-size, or leave the size unset"
            )
        return int(input_size[0]), int(input_size[1])


def is_checkpoint_file(path: Path) -> bool:
    """A checkpoint of ours: a ``.pt``/``.pth`` suffix, or a zip archive (what ``torch.save`` writes)."""
    return path.suffix.lower() in CHECKPOINT_SUFFIXES or zipfile.is_zipfile(path)


def is_compressed_file(path: Path) -> bool:
    """A ``.yolov3c`` file: by its suffix, or by its magic bytes."""
    if path.suffix.lower() == COMPRESSED_SUFFIX:
        return True
    with open(path, "rb") as file:
        return file.read(len(MAGIC)) == MAGIC


def load_inference_model(
    weights: str | os.PathLike,
    cfg: str | os.PathLike | None = None,
    model_name: str | None = None,
    num_classes: int | None = None,
    onnx_threads: int | None = None,
) -> LoadedModel:
    """Load ``weights`` (a checkpoint, a ``.yolov3c`` or ``.onnx`` file, or Darknet ``.weights`` with ``cfg`` or
    ``model_name``) for inference; ``onnx_threads`` is ONNX Runtime's intra-op thread count (None: its default).

    Raises :class:`ModelLoadingError` (a ``ValueError``) naming the file on a missing file, a self-describing
    file (checkpoint, ``.yolov3c``, ``.onnx``) given a cfg or model name, Darknet weights given neither (or
    both), or weights that do not fit the model; an unknown ``model_name`` raises ``KeyError`` with the
    closest registered name.
    """
    path = Path(weights)
    if not path.is_file():
        raise ModelLoadingError(f"{path}: no such weights file" if not path.exists() else f"{path}: not a file")
    is_onnx = path.suffix.lower() == ".onnx"
    if is_onnx or is_compressed_file(path) or is_checkpoint_file(path):
        if cfg is not None or model_name is not None or num_classes is not None:
            kind = "an ONNX file" if is_onnx else "a checkpoint" if is_checkpoint_file(path) else "a compressed file"
            raise ModelLoadingError(
                f"{path}: {kind} names its own model and classes; do not give a cfg, model name or class count"
            )
        if is_onnx:
            loaded = _load_onnx_model(path, onnx_threads)
        elif is_compressed_file(path):
            loaded = _load_compressed_model(path)
        else:
            loaded = _load_checkpoint_model(path)
    else:
        loaded = _load_darknet_model(path, cfg, model_name, num_classes)
    logger.info("loaded %s: %d classes, input %dx%d", loaded.source, loaded.num_classes, *loaded.input_size)
    logger.info("backend: %s", loaded.backend)
    return loaded


def _load_checkpoint_model(path: Path) -> LoadedModel:
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as error:
        raise ModelLoadingError(str(error)) from error
    spec = checkpoint.model
    if spec is None or checkpoint.model_state is None:
        raise ModelLoadingError(f"{path}: checkpoint lacks 'model' {{name, kwargs}} or 'model_state'")
    try:
        model = model_from_checkpoint(checkpoint).eval()
    except KeyError as error:  # an unknown model name
        raise ModelLoadingError(f"{path}: {error.args[0]}") from error
    except (RuntimeError, TypeError) as error:  # state dict or builder arguments that do not fit
        raise ModelLoadingError(f"{path}: the weights do not fit model {spec.name!r}: {error}") from error
    head_specs = _head_specs(model, path)
    uses_ema = checkpoint.ema_state is not None
    class_names = _class_names(checkpoint.class_names, head_specs[0].num_classes, path)
    input_size = _input_size(checkpoint.input_size, model, path)
    preprocessing = _preprocessing(checkpoint.preprocessing, path)
    source = f"{spec.name} from checkpoint {path} ({'EMA' if uses_ema else 'model'} weights)"
    normalization = _normalization(checkpoint.normalization, path)
    return LoadedModel(model, head_specs, class_names, input_size, preprocessing, source, normalization)


def _load_darknet_model(
    path: Path, cfg: str | os.PathLike | None, model_name: str | None, num_classes: int | None
) -> LoadedModel:
    if (cfg is None) == (model_name is None):
        raise ModelLoadingError(
            f"{path}: Darknet weights need exactly one of a cfg file or a registered model name to build the network"
        )
    if cfg is not None:
        if num_classes is not None:
            raise ModelLoadingError(f"{cfg}: a cfg sets its own classes; num_classes goes with a model name")
        if not Path(cfg).is_file():
            raise ModelLoadingError(f"{cfg}: no such cfg file")
        model: nn.Module = Darknet(cfg)  # CfgError names file and line
        built = f"cfg {cfg}"
    else:
        name = str(model_name)  # not None: exactly one of cfg and model_name was checked above
        model = create_model(name, **({} if num_classes is None else {"num_classes": num_classes}))
        built = f"model {model_name}"
    if not isinstance(model, DarknetIO):
        raise ModelLoadingError(f"{path}: {built} has no Darknet form, so it cannot load Darknet weights")
    try:
        model.load_darknet_weights(path)
    except NotImplementedError as error:
        raise ModelLoadingError(f"{path}: {built} has no Darknet form ({error})") from error
    except (WeightsFileError, CfgError):
        raise  # their messages already name the file
    model.eval()
    head_specs = _head_specs(model, path)
    source = f"{built} with Darknet weights {path}"
    darknet_preprocessing = Preprocessing.from_mode("darknet")  # letterbox_image, as `darknet detector test`
    return LoadedModel(
        model, head_specs, None, model_input_size(model), darknet_preprocessing, source, darknet_weights=True
    )


def _load_compressed_model(path: Path) -> LoadedModel:
    stored = read_compressed_file(path)  # CompressedFileError (a ValueError) names the file
    model = stored.model.eval()
    head_specs = _head_specs(model, path)
    metadata = stored.metadata
    class_names = _class_names(metadata.get("class_names"), head_specs[0].num_classes, path)
    input_size = _input_size(metadata.get("input_size"), model, path)
    preprocessing = _preprocessing(metadata.get("preprocessing"), path)
    normalization = _normalization(metadata.get("normalization"), path)
    source = f"{stored.model_spec['name']} from compressed file {path}"
    return LoadedModel(
        model, head_specs, class_names, input_size, preprocessing, source, normalization, "PyTorch (yolov3c decoded)"
    )


def _load_onnx_model(path: Path, threads: int | None) -> LoadedModel:
    from yolov3.inference.onnx_backend import read_onnx_model  # onnx and onnxruntime, only when needed

    opened = read_onnx_model(path, threads)  # OnnxModelError (a ValueError) names the file
    model, metadata = opened.model, opened.metadata
    class_names = _class_names(metadata.get("class_names"), opened.head_specs[0].num_classes, path)
    input_size = _input_size(metadata.get("input_size", model.input_size), model, path)
    preprocessing = _preprocessing(metadata.get("preprocessing"), path)
    normalization = _normalization(metadata.get("normalization"), path)
    darknet_weights = metadata.get("source_format") == "darknet"
    source = f"ONNX {model.precision} graph {path}"
    return LoadedModel(
        model, opened.head_specs, class_names, input_size, preprocessing, source, normalization,
        model.description, ONNX_RUNTIME, darknet_weights,
    )  # fmt: skip


def _head_specs(model: nn.Module, path: Path) -> list[YoloHeadSpec | DarknetHeadSpec]:
    try:
        return model_head_specs(model)
    except ValueError as error:
        raise ModelLoadingError(f"{path}: not a detector: {error}") from error


def _class_names(value: Any, num_classes: int, path: Path) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(name, str) for name in value):
        raise ModelLoadingError(f"{path}: 'class_names' must be a list of strings, got {type(value).__name__}")
    if len(value) != num_classes:
        raise ModelLoadingError(f"{path}: 'class_names' has {len(value)} names but the model has {num_classes} classes")
    return tuple(value)


def _input_size(value: Any, model: nn.Module, path: Path) -> tuple[int, int]:
    if value is None:
        return model_input_size(model)
    if isinstance(value, int):
        value = (value, value)
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(isinstance(side, int) for side in value):
        raise ModelLoadingError(f"{path}: 'input_size' must be (height, width) integers, got {value!r}")
    return int(value[0]), int(value[1])


def _normalization(value: Any, path: Path) -> Normalization:
    if value is None:
        return "darknet"
    if value not in ("darknet", "imagenet"):
        raise ModelLoadingError(f"{path}: 'normalization' must be darknet or imagenet, got {value!r}")
    return value


def _preprocessing(value: Any, path: Path) -> Preprocessing:
    if value is None:
        return Preprocessing()
    if isinstance(value, Preprocessing):
        return value
    known = {field.name for field in dataclasses.fields(Preprocessing)}
    if not isinstance(value, Mapping):
        raise ModelLoadingError(f"{path}: 'preprocessing' must be a mapping with keys {sorted(known)}")
    unknown = sorted(set(value) - known)
    if unknown:
        raise ModelLoadingError(f"{path}: 'preprocessing' has unknown key {unknown[0]!r}; expected {sorted(known)}")
    try:
        return Preprocessing(**value)
    except ValueError as error:
        raise ModelLoadingError(f"{path}: 'preprocessing': {error}") from error
