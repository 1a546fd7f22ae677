"""The cuDNN fusion pass (BatchNorm folding, fused conv epilogues) and the backend/option built on it.

On the CPU the fused cuDNN calls cannot run, so the rewrite is checked three ways there: the graph
holds the fused targets and no BatchNorm; meta tensors give the original output shape; and with
reference CPU kernels (conv2d, bias, add, ReLU written out, registered for this test only) the
rewritten model computes the original function, which checks every argument the pass wires up
(stride, padding, bias, moved biases, residual). The real cuDNN calls run in the CUDA tests.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torch import nn

from infertune.backends.cudnn_fusion import fuse_for_cudnn, register_shape_functions
from infertune.backends.registry import get_backend
from infertune.errors import ConfigError
from tests.conftest import smoke_cell

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")
FUSED = (torch.cudnn_convolution_relu, torch.cudnn_convolution_add_relu)


def _with_random_bn_stats(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so that folding has something to get wrong."""
    gen = torch.Generator().manual_seed(3)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            mod.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            mod.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return _with_random_bn_stats(torchvision.models.resnet18(num_classes=10))


@pytest.fixture
def reference_cpu_kernels():
    """CPU kernels for the two fused calls (their plain definitions), registered for one test only."""
    import torch.nn.functional as F

    def conv_relu(x, w, b, stride, padding, dilation, groups):
        return F.relu(F.conv2d(x, w, b, stride, padding, dilation, groups))

    def conv_add_relu(x, w, z, alpha, b, stride, padding, dilation, groups):
        return F.relu(F.conv2d(x, w, b, stride, padding, dilation, groups) + (1.0 if alpha is None else alpha) * z)

    x = torch.zeros(1, 1, 1, 1)
    try:
        torch.cudnn_convolution_relu(x, x, None, [1, 1], [0, 0], [1, 1], 1)
        pytest.skip("this torch has a CPU kernel for cudnn_convolution_relu: nothing to stand in for")
    except (NotImplementedError, RuntimeError):
        pass
    lib = torch.library.Library("aten", "IMPL")
    lib.impl("cudnn_convolution_relu", conv_relu, "CPU")
    lib.impl("cudnn_convolution_add_relu", conv_add_relu, "CPU")
    yield
    del lib  # unregisters both kernels


def _fused_calls(gm) -> list:
    return [n.target for n in gm.graph.nodes if n.op == "call_function" and n.target in FUSED]


def _x(batch: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32))


def test_resnet_blocks_fold_every_batchnorm_and_fuse_every_epilogue(resnet18):
    gm, counts = fuse_for_cudnn(resnet18, _x(1))
    blocks = [m for m in resnet18.modules() if isinstance(m, torchvision.models.resnet.BasicBlock)]
    downsampled = [b for b in blocks if b.downsample is not None]
    assert counts.batchnorms_folded == sum(isinstance(m, nn.BatchNorm2d) for m in resnet18.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gm.modules())
    # the stem and each block's first conv end in ReLU; each block ends in conv + residual + ReLU
    assert counts.conv_relu == 1 + len(blocks)
    assert counts.conv_add_relu == len(blocks)
    assert counts.biases_moved == len(downsampled)
    calls = _fused_calls(gm)
    assert calls.count(torch.cudnn_convolution_relu) == counts.conv_relu
    assert calls.count(torch.cudnn_convolution_add_relu) == counts.conv_add_relu
    assert not any(n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.ReLU) for n in gm.graph.nodes)
    # the original model is untouched
    assert any(isinstance(m, nn.BatchNorm2d) for m in resnet18.modules())


def test_folding_alone_keeps_the_outputs_in_fp32():
    """The tiny model's ReLUs are fused too, so check folding through the stand-in-free path:
    the folded graph before any rewrite, via a model whose convolutions feed no ReLU."""
    model = _with_random_bn_stats(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                                nn.Conv2d(8, 8, 3, stride=2), nn.BatchNorm2d(8), nn.Flatten()))
    gm, counts = fuse_for_cudnn(model, _x(1, 16))
    assert counts.batchnorms_folded == 2 and counts.conv_relu == counts.conv_add_relu == 0
    x = _x(3, 16, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-4, atol=1e-5)


def test_the_rewrite_computes_the_same_function(resnet18, reference_cpu_kernels):
    gm, counts = fuse_for_cudnn(resnet18, _x(1))
    assert counts.biases_moved > 0 and counts.conv_add_relu > 0
    x = _x(3, 64, seed=7)  # another batch size and fresh data: the same function on any input
    with torch.no_grad():
        ref, out = resnet18(x), gm(x)
    assert torch.linalg.norm(out - ref) / torch.linalg.norm(ref) < 1e-5


def test_meta_shapes_match_the_original_in_both_layouts(resnet18):
    register_shape_functions()
    gm, _ = fuse_for_cudnn(resnet18, _x(1))
    meta = gm.to("meta")
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.empty(4, 3, 96, 96, device="meta").contiguous(memory_format=fmt)
        assert meta(x).shape == (4, 10)
    x = torch.empty(2, 3, 8, 8, device="meta").contiguous(memory_format=torch.channels_last)
    w = torch.empty(5, 3, 3, 3, device="meta").contiguous(memory_format=torch.channels_last)
    y = torch.cudnn_convolution_relu(x, w, None, [2, 2], [1, 1], [1, 1], 1)
    assert y.shape == (2, 5, 4, 4) and y.is_contiguous(memory_format=torch.channels_last)


class _SharedAndBranching(nn.Module):
    """Patterns the pass must leave alone: a conv read twice, a shared conv module, a broadcast add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.shared = nn.Conv2d(4, 4, 1)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.conv(x)
        a = self.relu(y) + y  # y has two users: cannot become a fused call
        b = torch.relu(self.shared(a)) + self.shared(a)  # one module, two calls: shared weights
        return torch.relu(self.shared(b) + torch.ones(1, 4, 1, 1))  # broadcast residual


def test_patterns_with_other_readers_or_broadcasts_are_left_alone(reference_cpu_kernels):
    model = _SharedAndBranching().eval()
    gm, counts = fuse_for_cudnn(model, _x(1, 8))
    # only the first shared call feeds a ReLU alone; sharing the module is fine without changing it
    assert counts.conv_add_relu == 0 and counts.biases_moved == 0
    assert counts.conv_relu == 1
    x = _x(2, 8, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-5)


class _Untraceable(nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x


def test_an_untraceable_model_is_a_config_error_naming_the_option():
    with pytest.raises(ConfigError, match="cudnn_fused.*could not trace.*leave the option out"):
        fuse_for_cudnn(_Untraceable(), _x(1, 8))


def test_folding_alone_folds_every_conv_batch_norm_pair_and_keeps_the_function():
    from infertune.backends.cudnn_fusion import fold_batch_norms
    from infertune.testing import tiny_convnet

    model = tiny_convnet()
    folded, count = fold_batch_norms(model)
    assert count == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the model itself is left as it was
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


def test_folding_alone_returns_the_model_itself_when_nothing_folds_and_names_an_untraceable_one():
    from infertune.backends.cudnn_fusion import Untraceable, fold_batch_norms
    from infertune.testing import tiny_mlp

    mlp = tiny_mlp()
    assert fold_batch_norms(mlp) == (mlp, 0)
    no_batch_norm = _Untraceable()
    assert fold_batch_norms(no_batch_norm) == (no_batch_norm, 0)  # no batch norm: not even traced, so no error
    from tests.fixture_models import untraceable_conv_bn

    untraceable = untraceable_conv_bn()
    with pytest.raises(Untraceable, match="torch.fx could not trace the model"):
        fold_batch_norms(untraceable)


def test_backend_and_option_are_cuda_only_with_the_fix(make_ctx):
    backend = get_backend("cudnn_fused")
    assert not backend.availability("cpu", "fp16").ok
    assert backend.default_variants("cpu") == []
    assert "cudnn_fused:fp16:channels_last:cuda_graph" in backend.default_variants("cuda")
    with pytest.raises(ConfigError, match="'cudnn_fused'.*only on CUDA.*leave it out"):
        get_backend("torch_compile").validate_options({"cudnn_fused": ""}, "cpu", "fp32")
    with pytest.raises(ConfigError, match="unknown option 'cudnn_fused'"):
        get_backend("aoti").validate_options({"cudnn_fused": ""}, "cuda", "fp16")


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize(
    ("backend", "precision", "options"),
    [
        ("cudnn_fused", "fp32", {}),
        ("cudnn_fused", "fp16", {"channels_last": "", "cuda_graph": ""}),
        ("torch_compile", "fp16", {"channels_last": "", "cudnn_fused": "", "cuda_graph": ""}),
    ],
)
def test_fused_variants_keep_predictions_on_cuda(make_ctx, backend, precision, options):
    runner, fid, samples = smoke_cell(backend, make_ctx(precision, options, batch=4, device="cuda"))
    assert fid.ok, fid.failures
    assert runner.latency_scope == "device" and len(samples) >= 3
    assert ("cuda_graph" in options) == (runner.graph is not None)


@needs_cuda
@pytest.mark.gpu
def test_fused_resnet_matches_eager_on_cuda(resnet18):
    """The real cuDNN calls, fp32 with TF32 off: the rewritten ResNet-18 computes what the original does."""
    from infertune.backends.torch_common import set_tf32

    set_tf32(False)
    gm, _ = fuse_for_cudnn(resnet18, _x(1))
    x = _x(4, 64, seed=11).cuda()
    with torch.no_grad():
        ref, out = resnet18.cuda()(x), gm.cuda()(x)
    resnet18.cpu()
    assert torch.linalg.norm(out - ref) / torch.linalg.norm(ref) < 1e-4
