"""FX pass for the ``cudnn_fused`` option: fold BatchNorm into convolutions, then hand conv+bias+ReLU and
conv+bias+add+ReLU to cuDNN's fused-epilogue calls, so the activation is written once instead of three times.

The pass works on any model ``torch.fx.symbolic_trace`` can trace, on the patterns it finds (not a
ResNet special case):

1. ``BatchNorm2d`` (eval mode, running statistics) whose input is a ``Conv2d`` used only by it is
   folded into that convolution (``torch.nn.utils.fusion.fuse_conv_bn_eval``), in fp32, before any cast.
   This step alone (``fold_batch_norms``) also runs before torch.compile and AOTInductor compile with
   freezing: it is the fold freezing would do later, inside every compile, for a multiple of the compile
   time (``backends.torch_compile``).
2. ``relu(conv(x))`` becomes ``torch.cudnn_convolution_relu(x, w, b, ...)``.
3. ``relu(conv(x) + z)`` (``+``, ``torch.add`` or ``.add``; ``z`` of the convolution's exact shape)
   becomes ``torch.cudnn_convolution_add_relu(x, w, z, 1.0, b, ...)``. When ``z`` is itself a
   convolution with a bias and no other user (a ResNet downsample), its bias moves into the fused
   call's bias, so that convolution runs bias-free (one cuDNN kernel, no separate bias pass).

A convolution or add with another user, a padding mode other than zeros, or a string padding other than
``valid`` is left alone. The result is an ordinary ``GraphModule``: cast it, move it to CUDA, capture it
in a CUDA graph or give it to ``torch.compile``. The fused calls exist only on CUDA (cuDNN) and have no
shape function in torch; ``register_shape_functions`` gives them one (Meta kernels), which dynamo needs
to trace them and which lets the rewrite be checked on the CPU with meta tensors.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

from infertune.errors import ConfigError

#: the two fused calls, as graph targets.
FUSED_TARGETS = ("cudnn_convolution_relu", "cudnn_convolution_add_relu")


@dataclass(frozen=True)
class FusionCounts:
    """What the pass did: batch norms folded, convolutions fused with ReLU, with add+ReLU, biases moved."""

    batchnorms_folded: int = 0
    conv_relu: int = 0
    conv_add_relu: int = 0
    biases_moved: int = 0

    def describe(self) -> str:
        return (f"{self.batchnorms_folded} batch norm(s) folded, {self.conv_relu} conv+ReLU and "
                f"{self.conv_add_relu} conv+add+ReLU fused, {self.biases_moved} bias(es) moved into a fused add")


def fuse_for_cudnn(model: Any, example: Any) -> tuple[Any, FusionCounts]:
    """A traced copy of the eval-mode ``model`` with BatchNorm folded and epilogues fused (see module docstring).

    ``example``: a float32 CPU input, used once to read every node's shape (``ShapeProp``).
    """
    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        gm = _trace(model)
    except Untraceable as err:
        raise ConfigError(f"option 'cudnn_fused': {err}; the pass needs a graph it can rewrite: leave the option out") from None
    folded = _fold_batchnorms(gm)
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    counts = _fuse_epilogues(gm)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm, FusionCounts(folded, *counts)


class Untraceable(Exception):
    """torch.fx could not trace the model (data-dependent control flow, unsupported calls...)."""


def fold_batch_norms(model: Any) -> tuple[Any, int]:
    """Step 1 alone: a traced copy of the eval-mode ``model`` with each BatchNorm2d folded into the Conv2d
    before it, and how many were folded (0: ``model`` itself). Raises ``Untraceable``. A model without a
    BatchNorm2d is not traced at all (a transformer, say, need not be copied and fail to trace)."""
    from torch import nn

    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model, 0
    gm = _trace(model)
    folded = _fold_batchnorms(gm)
    if not folded:
        return model, 0
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm, folded


def _trace(model: Any) -> Any:
    """``torch.fx.symbolic_trace`` of an eval-mode copy of ``model`` (the model itself is left as it is)."""
    import copy

    import torch

    try:
        return torch.fx.symbolic_trace(copy.deepcopy(model).eval())
    except Exception as err:  # noqa: BLE001 - tracing a user model can raise anything (data-dependent control flow...)
        first = str(err).splitlines()[0] if str(err) else ""
        raise Untraceable(f"torch.fx could not trace the model ({type(err).__name__}: {first})") from None


def _modules(gm: Any) -> dict[str, Any]:
    return dict(gm.named_modules())


def _is_module(node: Any, modules: dict[str, Any], cls: Any) -> bool:
    return node.op == "call_module" and isinstance(modules.get(node.target), cls)


def _fold_batchnorms(gm: Any) -> int:
    """Fold each eval-mode BatchNorm2d into the Conv2d feeding it (when nothing else reads the conv)."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    modules = _modules(gm)
    calls = _call_counts(gm)
    folded = 0
    for node in list(gm.graph.nodes):
        if not _is_module(node, modules, nn.BatchNorm2d) or not isinstance(node.args[0], type(node)):
            continue
        conv_node, bn = node.args[0], modules[node.target]
        if (not _is_module(conv_node, modules, nn.Conv2d) or len(conv_node.users) != 1
                or calls[conv_node.target] != 1 or calls[node.target] != 1
                or bn.training or bn.running_mean is None):
            continue
        fused = fuse_conv_bn_eval(modules[conv_node.target], bn)
        _set_module(gm, conv_node.target, fused)
        modules[conv_node.target] = fused
        node.replace_all_uses_with(conv_node)
        gm.graph.erase_node(node)
        folded += 1
    return folded


def _call_counts(gm: Any) -> dict[str, int]:
    """How many graph nodes call each submodule (a module called twice is shared: never changed)."""
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    return calls


def _set_module(gm: Any, target: str, module: Any) -> None:
    parent_name, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent_name) if parent_name else gm, name, module)


def _is_relu(node: Any, modules: dict[str, Any]) -> bool:
    import torch
    from torch import nn

    if node.op == "call_module":
        return isinstance(modules.get(node.target), nn.ReLU)
    if node.op == "call_function":
        return node.target in (torch.relu, torch.relu_, torch.nn.functional.relu)
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _is_add(node: Any) -> bool:
    import torch

    plain = (node.op == "call_function" and node.target in (operator.add, operator.iadd, torch.add)) or (
        node.op == "call_method" and node.target in ("add", "add_"))
    return plain and len(node.args) == 2 and not node.kwargs and all(isinstance(a, type(node)) for a in node.args)


def _fusable_conv(node: Any, modules: dict[str, Any]) -> Any:
    """The Conv2d module behind ``node`` when its output can go straight into a fused call, else None."""
    from torch import nn

    if not isinstance(node, _node_type()) or not _is_module(node, modules, nn.Conv2d) or len(node.users) != 1:
        return None
    conv = modules[node.target]
    if conv.padding_mode != "zeros" or (isinstance(conv.padding, str) and conv.padding != "valid"):
        return None
    return conv


def _node_type() -> Any:
    import torch

    return torch.fx.Node


def _same_shape(a: Any, b: Any) -> bool:
    ma, mb = a.meta.get("tensor_meta"), b.meta.get("tensor_meta")
    return ma is not None and mb is not None and tuple(ma.shape) == tuple(mb.shape) and ma.dtype == mb.dtype


def _conv_args(graph: Any, node: Any, conv: Any) -> tuple[Any, Any, list[Any]]:
    """(weight node, bias node or None, [stride, padding, dilation, groups]) for a fused call."""
    weight = graph.get_attr(f"{node.target}.weight")
    bias = graph.get_attr(f"{node.target}.bias") if conv.bias is not None else None
    padding = [0, 0] if conv.padding == "valid" else list(conv.padding)
    return weight, bias, [list(conv.stride), padding, list(conv.dilation), conv.groups]


def _fuse_epilogues(gm: Any) -> tuple[int, int, int]:
    """Rewrite relu(conv) and relu(conv + z); returns (conv_relu, conv_add_relu, biases_moved)."""
    import torch

    modules = _modules(gm)
    graph = gm.graph
    calls = _call_counts(gm)
    conv_relu = conv_add_relu = moved = 0
    for relu in list(graph.nodes):
        if not _is_relu(relu, modules) or not relu.args:
            continue
        src = relu.args[0]
        conv = _fusable_conv(src, modules)
        if conv is not None:
            with graph.inserting_before(relu):
                weight, bias, rest = _conv_args(graph, src, conv)
                fused = graph.call_function(torch.cudnn_convolution_relu, (src.args[0], weight, bias, *rest))
            _replace(graph, relu, fused, [src])
            conv_relu += 1
            continue
        if not isinstance(src, _node_type()) or not _is_add(src) or len(src.users) != 1:
            continue
        pair = _main_and_residual(src, modules)
        if pair is None:
            continue
        main, residual = pair
        conv = modules[main.target]
        with graph.inserting_before(relu):
            weight, bias, rest = _conv_args(graph, main, conv)
            if _moves_bias(main, residual, modules, calls):
                bias = _merged_bias(graph, main, residual, modules)
                moved += 1
            fused = graph.call_function(
                torch.cudnn_convolution_add_relu, (main.args[0], weight, residual, 1.0, bias, *rest))
        _replace(graph, relu, fused, [src, main])
        conv_add_relu += 1
    return conv_relu, conv_add_relu, moved


def _main_and_residual(add: Any, modules: dict[str, Any]) -> tuple[Any, Any] | None:
    """(the convolution to fuse, the other operand) of ``add``, or None when neither qualifies."""
    for main, residual in (add.args, add.args[::-1]):
        if _fusable_conv(main, modules) is not None and main is not residual and _same_shape(main, residual):
            return main, residual
    return None


def _moves_bias(main: Any, residual: Any, modules: dict[str, Any], calls: dict[str, int]) -> bool:
    """Whether the residual is a convolution whose bias the fused call can add instead (both
    convolutions have a bias and are called once: their modules can be changed)."""
    conv = _fusable_conv(residual, modules)
    return (conv is not None and conv.bias is not None and modules[main.target].bias is not None
            and calls[main.target] == 1 and calls[residual.target] == 1)


def _merged_bias(graph: Any, main: Any, residual: Any, modules: dict[str, Any]) -> Any:
    """Put the residual convolution's bias into the main one's and drop it from the residual (same sum)."""
    import torch

    main_conv, res_conv = modules[main.target], modules[residual.target]
    with torch.no_grad():
        main_conv.bias = torch.nn.Parameter(main_conv.bias + res_conv.bias, requires_grad=False)
    res_conv.bias = None
    return graph.get_attr(f"{main.target}.bias")


def _replace(graph: Any, old: Any, new: Any, dead: list[Any]) -> None:
    """Route ``old``'s users to ``new`` (which takes its shape record) and erase ``old`` and the now unused
    ``dead`` nodes."""
    new.meta.update(old.meta)
    old.replace_all_uses_with(new)
    graph.erase_node(old)
    for node in dead:
        if not node.users:
            graph.erase_node(node)


def register_shape_functions() -> None:
    """Give the two fused cuDNN calls Meta kernels where torch has none (dynamo and meta tensors need them).

    Output shape as ``conv2d``; memory format as cuDNN picks it (channels_last when the input or the
    weight is). Registered once per process; kept alive by a module-level library handle.
    """
    global _LIBRARY
    if _LIBRARY is not None or _has_meta_kernel():
        return
    import torch

    lib = torch.library.Library("aten", "IMPL")
    lib.impl("cudnn_convolution_relu", _conv_relu_meta, "Meta")
    lib.impl("cudnn_convolution_add_relu", _conv_add_relu_meta, "Meta")
    _LIBRARY = lib


_LIBRARY: Any = None


def _has_meta_kernel() -> bool:
    import torch

    x = torch.empty(1, 1, 1, 1, device="meta")
    try:
        torch.cudnn_convolution_relu(x, x, None, [1, 1], [0, 0], [1, 1], 1)
    except NotImplementedError:
        return False
    return True


def _conv_meta(x: Any, weight: Any, stride: Any, padding: Any, dilation: Any) -> Any:
    import torch

    n, _, h, w = x.shape
    out_c, _, kh, kw = weight.shape
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    channels_last = torch.channels_last in (_memory_format(x), _memory_format(weight))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty((n, out_c, oh, ow), dtype=x.dtype, device="meta", memory_format=fmt)


def _memory_format(t: Any) -> Any:
    from torch._prims_common import suggest_memory_format

    return suggest_memory_format(t)


def _conv_relu_meta(x: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any, groups: Any) -> Any:
    return _conv_meta(x, weight, stride, padding, dilation)


def _conv_add_relu_meta(x: Any, weight: Any, z: Any, alpha: Any, bias: Any, stride: Any, padding: Any,
                        dilation: Any, groups: Any) -> Any:
    return _conv_meta(x, weight, stride, padding, dilation)
