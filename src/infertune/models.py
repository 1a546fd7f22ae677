"""Model sources: torchvision and timm names, ``package.module:factory`` callables, local weights,
models whose weights ship in a pip package (``infertune.zoo``: ``efficientnet_lite0``), Hugging Face
transformers (``hf:<name or folder>``, ``infertune.models_hf``) and ONNX files (``infertune.models_onnx``).

``input_specs`` says what a model takes (name, one sample's shape, dtype, value range per input) from
the config and cheap metadata alone (an ONNX file's graph inputs, a transformers config), so the parent
never builds the model to know its inputs; ``LoadedModel.forward`` runs the FP32 reference on a batch.

Every loaded model says which weights it carries (``imagenet``, ``random``, ``file:<sha256 prefix>``,
``imagenet:<package>``) so that every result row can say it too, and which input normalisation it
expects (``preprocessing``: mean/std; ImageNet's unless the model says otherwise). Pretrained weights are downloaded only when online; offline
the model falls back to seeded random weights with one warning line, never a hang or a traceback.
Random weights are drawn after ``torch.manual_seed(seed)`` so worker processes rebuild the same model.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import importlib.util
import io
import pickle
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infertune.errors import ModelError

if TYPE_CHECKING:
    from infertune.inputs import Batch, InputSpec

#: seconds to wait for the weights server before deciding we are offline.
DOWNLOAD_TIMEOUT_S = 10.0
TORCHVISION_HOST = "download.pytorch.org"
TIMM_HOST = "huggingface.co"
#: what the rows of a torch model say their outputs were compared with.
TORCH_REFERENCE = "pytorch:fp32 eager cpu"


@dataclass
class LoadedModel:
    """An FP32 ``nn.Module`` in eval mode (or, for an ONNX file, an ``OnnxModel``) plus what it is and
    which weights it holds.

    ``kind`` is what backends start from: ``torch`` (a module) or ``onnx`` (a file; only backends whose
    ``Backend.sources`` include it can take it). ``reference`` says how the FP32 reference runs it.
    """

    module: Any
    name: str
    weights: str
    source: str
    warning: str = ""
    #: {"mean": (...), "std": (...)} the inputs were normalised with in training; None = ImageNet's.
    preprocessing: dict[str, tuple[float, ...]] | None = None
    kind: str = "torch"
    reference: str = TORCH_REFERENCE

    def forward(self, batch: Batch) -> Any:
        """The FP32 reference outputs on ``batch`` (one array, or {input name: array} in input order)."""
        if self.kind == "onnx":
            return self.module.forward(batch if isinstance(batch, dict) else {self.module.inputs[0].name: batch})
        import numpy as np
        import torch

        arrays = list(batch.values()) if isinstance(batch, dict) else [batch]
        with torch.inference_mode():
            return self.module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))

    def digest(self) -> str:
        """A short hash of the parameters and buffers (an ONNX file's bytes): part of every artifact cache key."""
        if self.kind == "onnx":
            return self.module.digest()
        h = hashlib.sha256()
        for key, tensor in sorted(self.module.state_dict().items()):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def load_model(name: str, pretrained: bool = True, weights: str | None = None, seed: int = 0,
               warn: Callable[[str], None] = print) -> LoadedModel:
    """Build the model described by the config's ``model`` section.

    Args:
        name: torchvision name, ``timm:<name>`` / timm name, ``package.module:factory``.
        pretrained: try to download the library's default weights (falls back to random offline).
        weights: path to a local state_dict (``torch.load(weights_only=True)``); wins over pretrained.
        seed: seed for random initialisation.
        warn: where the one-line offline warning goes.
    """
    from infertune.models_onnx import is_onnx_path

    if is_onnx_path(name):
        return _from_onnx(name, weights)
    import torch

    from infertune.zoo import SHIPPED_MODELS

    torch.manual_seed(seed)
    use_pretrained = pretrained and not weights
    preprocessing = None
    if name.startswith("hf:"):
        from infertune.models_hf import load_hf

        module, tag, preprocessing = load_hf(name, use_pretrained, seed, warn)
        source = "transformers"
    elif name in SHIPPED_MODELS:
        module, source = SHIPPED_MODELS[name](pretrained=use_pretrained), "package"
        tag = getattr(module, "infertune_weights", "random")
    elif ":" in name and not name.startswith("timm:"):
        module, source = _from_factory(name), "factory"
        tag = getattr(module, "infertune_weights", "random")  # a factory may declare trained weights
    elif name.startswith("timm:") or (not _torchvision_has(name) and _timm_has(name)):
        module, tag = _from_timm(name.removeprefix("timm:"), use_pretrained, warn)
        source = "timm"
    else:
        module, tag = _from_torchvision(name, use_pretrained, warn)
        source = "torchvision"
    if weights:
        tag = _load_weights(module, weights)
    return LoadedModel(module=module.eval().float(), name=name, weights=tag, source=source,
                       preprocessing=preprocessing or _preprocessing(module))


def _from_onnx(name: str, weights: str | None) -> LoadedModel:
    from infertune.models_onnx import REFERENCE, read_onnx

    if weights:
        raise ModelError(f"model.weights is for torch models; {name} holds its own weights: drop model.weights")
    model = read_onnx(name)
    return LoadedModel(module=model, name=name, weights=f"file:{model.digest()[:12]}", source="onnx", kind="onnx",
                       reference=REFERENCE)


def model_kind(name: str) -> str:
    """What backends start from for the model ``name``: ``onnx`` for an ``.onnx`` file, else ``torch``."""
    from infertune.models_onnx import is_onnx_path

    return "onnx" if is_onnx_path(name) else "torch"


def model_libraries(name: str) -> tuple[str, ...]:
    """The heavy libraries building the model ``name`` imports beyond torch and torchvision."""
    if name.startswith("hf:"):
        return ("transformers",)
    if name.startswith("timm:"):
        return ("timm",)
    return ()


def model_label(name: str) -> str:
    """What rows call the model: a timm or hf name without its prefix; an ONNX file or a model folder by its name."""
    if model_kind(name) == "onnx":
        return Path(name).name
    bare = name.split(":", 1)[-1] if name.startswith(("timm:", "hf:")) else name
    return Path(bare).name if name.startswith("hf:") and Path(bare).is_dir() else bare


def input_specs(model_cfg: Any, batch_sizes: list[int] | tuple[int, ...] = (1,),
                warn: Callable[[str], None] = print) -> tuple[InputSpec, ...]:
    """What the model of ``model_cfg`` (the config's ``model`` section) takes, without building it.

    ONNX files: the graph's inputs (``models_onnx.onnx_input_specs``); ``hf:`` models: their tokens or
    pixels (``models_hf.input_specs``); torch models: ``model.inputs``, else one float32 input of
    ``model.input_shape`` (batch first).
    """
    from infertune.inputs import DEFAULT_INPUT_NAME, InputSpec
    from infertune.models_onnx import is_onnx_path, onnx_input_specs, read_onnx

    name = model_cfg.name
    if is_onnx_path(name):
        given = "input_shape" in model_cfg.model_fields_set  # the default shape is not the user's
        specs, notes = onnx_input_specs(read_onnx(name), model_cfg.input_shape if given else None, model_cfg.inputs,
                                        model_cfg.sequence_length, batch_sizes)
        for note in notes:
            warn(f"note: {note}")
        return specs
    given = tuple(InputSpec(i.name, tuple(i.shape[1:]), i.dtype, *(i.range or (None, None)))
                  for i in model_cfg.inputs or ())
    if name.startswith("hf:"):
        from infertune.errors import ConfigError
        from infertune.models_hf import input_specs as hf_specs

        length = given[0].shape[0] if given and given[0].shape else model_cfg.sequence_length  # inputs win
        own = hf_specs(name, length, model_cfg.pretrained and not model_cfg.weights)
        if given and [s.name for s in given] != [s.name for s in own]:
            raise ConfigError(f"model.inputs names {', '.join(s.name for s in given)}, but {name} takes "
                              f"{', '.join(s.name for s in own)}, in that order")
        return given or own
    return given or (InputSpec(DEFAULT_INPUT_NAME, tuple(model_cfg.input_shape[1:])),)


def _preprocessing(module: Any) -> dict[str, tuple[float, ...]] | None:
    """The mean/std a model declares (``infertune_preprocessing``) or timm's ``pretrained_cfg`` holds."""
    declared = getattr(module, "infertune_preprocessing", None)
    if isinstance(declared, dict) and "mean" in declared and "std" in declared:
        return {"mean": tuple(declared["mean"]), "std": tuple(declared["std"])}
    cfg = getattr(module, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("mean") and cfg.get("std"):
        return {"mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])}
    return None


def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _torchvision_has(name: str) -> bool:
    return name in _torchvision_names()


def _timm_has(name: str) -> bool:
    if importlib.util.find_spec("timm") is None:
        return False
    import timm

    return bool(timm.list_models(name))


def _unknown_model(name: str) -> ModelError:
    candidates = _torchvision_names()
    if importlib.util.find_spec("timm") is not None:
        import timm

        candidates += timm.list_models()
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=4, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    timm_hint = "" if importlib.util.find_spec("timm") else " (timm models need: pip install 'infertune[timm]')"
    return ModelError(
        f"unknown model {name!r}.{hint} Use a torchvision classification model name "
        f"(e.g. resnet50, resnet18, mobilenet_v2){timm_hint}, or package.module:factory."
    )


def _from_torchvision(name: str, pretrained: bool, warn: Callable[[str], None]) -> tuple[Any, str]:
    import torchvision

    if not _torchvision_has(name):
        raise _unknown_model(name)
    if pretrained and _reachable(TORCHVISION_HOST, name, warn):
        weights_enum = torchvision.models.get_model_weights(name).DEFAULT
        try:
            with _download_timeout():
                return torchvision.models.get_model(name, weights=weights_enum), "imagenet"
        except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError
            warn(
                f"warning: could not download pretrained weights for {name} ({_short(err)}); "
                "using random weights (results say weights=random)"
            )
    return torchvision.models.get_model(name, weights=None), "random"


def _from_timm(name: str, pretrained: bool, warn: Callable[[str], None]) -> tuple[Any, str]:
    if importlib.util.find_spec("timm") is None:
        raise ModelError(f"timm model {name!r} needs timm: pip install 'infertune[timm]'")
    import timm

    if not timm.list_models(name):
        raise _unknown_model(name)
    if pretrained and _reachable(TIMM_HOST, name, warn):
        try:
            with _download_timeout():
                return timm.create_model(name, pretrained=True), "imagenet"
        except Exception as err:  # timm/hf-hub raise many types when offline
            warn(f"warning: could not download pretrained weights for {name} ({_short(err)}); using random weights")
    return timm.create_model(name, pretrained=False), "random"


def _reachable(host: str, name: str, warn: Callable[[str], None]) -> bool:
    """One quick connection attempt before a download: offline, libraries retry for up to a minute.

    Weights already in the local cache (torch hub / Hugging Face) are used without a download.
    """
    if _cached_locally(name):
        return True
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError as err:
        warn(f"warning: cannot reach {host} for pretrained {name} weights ({_short(err, 60)}); "
             "using random weights (results say weights=random)")
        return False


def _cached_locally(name: str) -> bool:
    """True when torchvision's weights file for ``name`` already sits in the torch hub cache."""
    try:
        import torch.hub
        import torchvision

        url = torchvision.models.get_model_weights(name).DEFAULT.url
    except (ValueError, AttributeError, KeyError):
        return False
    return (Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]).is_file()


def _from_factory(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ModelError(f"cannot import {module_name!r} for model {spec!r}: {err}. Is it on PYTHONPATH?") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        close = difflib.get_close_matches(attr, [a for a in dir(module) if not a.startswith("_")], n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelError(f"{module_name} has no callable {attr!r}.{hint}")
    try:
        model = factory()
    except Exception as err:  # noqa: BLE001 - user code: whatever it raises becomes one clear line
        raise ModelError(f"calling {spec}() to build the model raised {_short(err, 200)}") from None
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _load_weights(module: Any, path: str) -> str:
    import torch

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"weights file {path} does not exist: set model.weights to a saved state_dict (.pt)")
    digest = hashlib.sha256(p.read_bytes()).hexdigest()[:12]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the weights-only unpickler warns about pickle protocols
            state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelError(_refusal(path, err)) from None
    except Exception as err:  # noqa: BLE001 - zip, EOF, OS errors from a damaged file: one clear line
        raise ModelError(
            f"cannot read {path} as torch weights ({_short(err, 100)}): the file is truncated, corrupt or "
            "not a torch.save file; save the weights with torch.save(model.state_dict(), path)"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        what = type(state).__name__ if not isinstance(state, dict) else "dict with non-tensor values"
        raise ModelError(f"{path} holds a {what}, not a state_dict: save torch.save(model.state_dict(), path)")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelError(f"{path} does not fit the model: {_short(err, 300)}") from None
    return f"file:{digest}"


def _refusal(path: str, err: BaseException) -> str:
    """Why a weights file was refused by the weights-only loader, and how to save one that is not."""
    import re

    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(err))
    what = (f"it asks to import and call {found.group(1)}" if found
            else "it is not a plain state_dict of tensors (a pickle of other Python objects, or not a torch file)")
    return (f"refused to load {path}: {what}. infertune loads weights only with torch.load(weights_only=True), "
            "which never runs code from a file; save a plain state_dict with torch.save(model.state_dict(), path)")


class _download_timeout:
    """Bound socket waits during a weights download so an offline machine fails fast, and keep
    torch.hub's 'Downloading: ...' stdout line off the terminal (the offline warning is the one line)."""

    def __enter__(self) -> None:
        self._old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        self._stderr = contextlib.redirect_stdout(io.StringIO())
        self._stderr.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._stderr.__exit__(*exc)
        socket.setdefaulttimeout(self._old)


def _short(err: BaseException, limit: int = 120) -> str:
    text = f"{type(err).__name__}: {err}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
