"""Hugging Face transformers models: ``--model hf:<name>`` or ``hf:<folder written by save_pretrained>``.

A folder loads its own config and weights (``from_pretrained``; remote code is never trusted). A hub
name loads from the local Hugging Face cache, or downloads when huggingface.co answers; offline, the
well-known names below are built from their published hyper-parameters with seeded random weights, and
every row says ``weights=random`` (as for torchvision). The class comes from the config's
``architectures`` (a folder) or the table below; without one, the base model (``AutoModel``).

The model is wrapped (``TextModel``, ``VisionModel``) so that it takes plain tensors positionally, in
the order of its input specs (``input_ids``, ``attention_mask``, ``token_type_ids`` where the model
takes them; or ``pixel_values``), and returns plain tensors: what every backend and the ONNX export
can take. The outputs are the model's output tensors in order (hidden states, pooled output, logits),
compared by the fidelity metrics like any other outputs. Text inputs are ``sequence_length`` tokens:
ids uniform in ``[0, vocab_size)``, a mask of ones (no padding), token types 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from infertune.errors import ConfigError, ModelError
from infertune.inputs import InputSpec

PREFIX = "hf:"
HF_HOST = "huggingface.co"
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
VISION_INPUT = "pixel_values"


@dataclass(frozen=True)
class KnownModel:
    """A hub model's architecture and published hyper-parameters (its config.json), for offline builds."""

    model_type: str
    architecture: str
    hyper: dict[str, Any] = field(default_factory=dict)
    #: vision models: the mean/std of their image processor.
    preprocessing: dict[str, tuple[float, ...]] | None = None


_BERT_BASE = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
              "intermediate_size": 3072, "hidden_act": "gelu", "max_position_embeddings": 512,
              "type_vocab_size": 2, "layer_norm_eps": 1e-12}
#: names that build offline; the hyper-parameters are those of each model's config.json on the hub.
KNOWN_MODELS: dict[str, KnownModel] = {
    "bert-base-uncased": KnownModel("bert", "BertModel", _BERT_BASE),
    "distilbert-base-uncased": KnownModel(
        "distilbert", "DistilBertModel",
        {"vocab_size": 30522, "dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072,
         "max_position_embeddings": 512, "activation": "gelu"}),
    "google/vit-base-patch16-224": KnownModel(
        "vit", "ViTForImageClassification",
        {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
         "hidden_act": "gelu", "image_size": 224, "patch_size": 16, "num_channels": 3, "layer_norm_eps": 1e-12,
         "num_labels": 1000},
        preprocessing={"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}),
}
#: the hub's newer spellings of the same models.
ALIASES = {"google-bert/bert-base-uncased": "bert-base-uncased",
           "distilbert/distilbert-base-uncased": "distilbert-base-uncased"}


def is_hf_name(name: str) -> bool:
    return name.startswith(PREFIX)


def _hub_name(name: str) -> str:
    bare = name.removeprefix(PREFIX).strip()
    if not bare:
        raise ModelError("hf: needs a model name or folder, e.g. hf:bert-base-uncased or hf:./my_model")
    return bare


def _require_transformers() -> None:
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        raise ModelError("Hugging Face models need transformers: pip install 'infertune[transformers]'")


def _folder(bare: str) -> Path | None:
    path = Path(bare).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json: give a folder written by model.save_pretrained(...)")
        return path
    return None


def model_config(name: str, pretrained: bool = True) -> tuple[Any, str, dict[str, tuple[float, ...]] | None]:
    """(the transformers config, the class name to build, the image mean/std or None), without weights.

    Reads a folder's config.json, or the known table, or (pretrained, online or cached) the hub's config.
    """
    _require_transformers()
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights: 100%" bars would break infertune's own progress line
    hf_logging.set_verbosity_error()
    bare = _hub_name(name)
    folder = _folder(bare)
    if folder is not None:
        config = _read_config(str(folder))
        return config, _architecture(config), _folder_preprocessing(folder)
    known = KNOWN_MODELS.get(ALIASES.get(bare, bare))
    if known is not None:
        return AutoConfig.for_model(known.model_type, **known.hyper), known.architecture, known.preprocessing
    if bare.startswith((".", "/", "~")):
        raise ModelError(f"folder {bare} does not exist: give a folder written by save_pretrained, or a hub name")
    try:
        config = _read_config(bare, local_files_only=True)
    except ModelError:
        if not (pretrained and _reachable()):
            known_names = ", ".join(sorted(KNOWN_MODELS))
            raise ModelError(
                f"hf:{bare} is neither a folder nor in the local Hugging Face cache, and huggingface.co cannot be "
                f"reached: give a folder written by save_pretrained, or one of the names that build offline "
                f"({known_names})") from None
        config = _read_config(bare)
    return config, _architecture(config), None


def _read_config(where: str, local_files_only: bool = False) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(where, local_files_only=local_files_only, trust_remote_code=False)
    except Exception as err:  # noqa: BLE001 - OSError, ValueError (custom code), JSON errors: one line
        text = f"{type(err).__name__}: {err}".replace("\n", " ")
        raise ModelError(f"cannot read the transformers config of {where} ({text[:200]})") from None


def _architecture(config: Any) -> str:
    archs = getattr(config, "architectures", None) or []
    return str(archs[0]) if archs else ""


def _folder_preprocessing(folder: Path) -> dict[str, tuple[float, ...]] | None:
    """The image processor's mean/std (preprocessor_config.json), when the folder has one."""
    import json

    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    mean, std = data.get("image_mean"), data.get("image_std")
    if isinstance(mean, list) and isinstance(std, list):
        return {"mean": tuple(float(v) for v in mean), "std": tuple(float(v) for v in std)}
    return None


def _model_class(config: Any, architecture: str) -> Any:
    import transformers

    if architecture:
        cls = getattr(transformers, architecture, None)
        if cls is None:
            raise ModelError(f"transformers {transformers.__version__} has no class {architecture} (the config's "
                             "architecture); it may need remote code, which infertune never runs")
        return cls
    from transformers import AutoModel

    try:
        return AutoModel._model_mapping[type(config)]
    except KeyError:
        raise ModelError(f"transformers has no model class for config {type(config).__name__}") from None


def input_specs(name: str, sequence_length: int, pretrained: bool = True) -> tuple[InputSpec, ...]:
    """The inputs the model takes, in the order the wrapper takes them (see the module docstring)."""
    config, architecture, _ = model_config(name, pretrained)
    return _inputs(name, config, _model_class(config, architecture), sequence_length)


def _inputs(name: str, config: Any, cls: Any, sequence_length: int) -> tuple[InputSpec, ...]:
    params = inspect.signature(cls.forward).parameters
    if "input_ids" in params:
        limit = getattr(config, "max_position_embeddings", None)
        if limit and sequence_length > limit:
            raise ConfigError(f"model.sequence_length {sequence_length} exceeds {name}'s {limit} positions: "
                              f"set --sequence-length {limit} or less")
        shape = (sequence_length,)
        specs = [InputSpec("input_ids", shape, "int64", 0, int(config.vocab_size)),
                 InputSpec("attention_mask", shape, "int64", 1, 2)]
        if "token_type_ids" in params and getattr(config, "type_vocab_size", 0):
            specs.append(InputSpec("token_type_ids", shape, "int64", 0, 1))
        return tuple(specs)
    if VISION_INPUT in params:
        size = config.image_size
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        return (InputSpec(VISION_INPUT, (int(config.num_channels), *map(int, size)), "float32"),)
    raise ModelError(f"{name}: the model takes neither input_ids nor pixel_values; infertune runs text and "
                     "image transformers")


def load_hf(name: str, pretrained: bool, seed: int, warn: Callable[[str], None]) -> tuple[Any, str, dict | None]:
    """(the wrapped model in eval mode, its weights tag, its image mean/std or None)."""
    import torch

    config, architecture, preprocessing = model_config(name, pretrained)
    cls = _model_class(config, architecture)
    bare = _hub_name(name)
    folder = _folder(bare)
    torch.manual_seed(seed)
    model, tag = None, "random"
    if folder is not None:
        if _has_weights(folder):
            model, tag = _from_pretrained(cls, str(folder)), f"folder:{_folder_digest(folder)}"
        else:
            warn(f"warning: {folder} holds no weights file; using random weights (results say weights=random)")
    elif pretrained:
        model = _cached_or_downloaded(cls, bare, warn)
        tag = "pretrained:hf-hub" if model is not None else "random"
    if model is None:
        model = cls(config)
    model.eval()
    return wrap(model, [s.name for s in _inputs(name, config, cls, 1)]), tag, preprocessing


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))


def _folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _from_pretrained(cls: Any, where: str, **kwargs: Any) -> Any:
    try:
        return cls.from_pretrained(where, trust_remote_code=False, **kwargs)
    except Exception as err:  # noqa: BLE001 - missing/corrupt weights, mismatched shapes: one line
        text = f"{type(err).__name__}: {err}".replace("\n", " ")
        raise ModelError(f"cannot load the weights of {where} ({text[:240]})") from None


def _cached_or_downloaded(cls: Any, bare: str, warn: Callable[[str], None]) -> Any:
    """The hub weights from the local cache, else downloaded when huggingface.co answers; None offline."""
    with contextlib.suppress(Exception):  # not in the local cache: try the network below
        return cls.from_pretrained(bare, local_files_only=True, trust_remote_code=False)
    if not _reachable():
        warn(f"warning: cannot reach {HF_HOST} for pretrained hf:{bare} weights; using random weights with its "
             "published architecture (results say weights=random)")
        return None
    try:
        return cls.from_pretrained(bare, trust_remote_code=False)
    except Exception as err:  # noqa: BLE001 - hub errors of many types
        warn(f"warning: could not download hf:{bare} ({type(err).__name__}); using random weights")
        return None


def _reachable() -> bool:
    import socket

    try:
        socket.create_connection((HF_HOST, 443), timeout=3).close()
        return True
    except OSError:
        return False


def _plain(outputs: Any) -> Any:
    """A transformers ModelOutput as plain tensors: one tensor, or a tuple in the output's order."""
    import torch

    values = outputs.values() if hasattr(outputs, "values") else outputs
    tensors = tuple(v for v in values if isinstance(v, torch.Tensor))
    return tensors[0] if len(tensors) == 1 else tensors


def wrap(model: Any, input_names: Sequence[str]) -> Any:
    """The model behind a module that takes its inputs positionally and returns plain tensors."""
    return VisionModel(model) if list(input_names) == [VISION_INPUT] else TextModel(model, tuple(input_names))


class TextModel(nn.Module):
    """``forward(input_ids, attention_mask, token_type_ids=None)`` -> plain tensors."""

    def __init__(self, model: Any, input_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None) -> Any:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return _plain(self.model(**kwargs, return_dict=True))


class VisionModel(nn.Module):
    """``forward(pixel_values)`` -> plain tensors."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Any) -> Any:
        return _plain(self.model(pixel_values=pixel_values, return_dict=True))
