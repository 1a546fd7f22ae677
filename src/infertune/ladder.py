"""The ladder: which variants a run tries, in order, from the config and what is installed.

``optimization.variants`` is an explicit list and wins. Otherwise every registered backend
contributes its default variants for the device (a backend's ``seed_switch``, the seed's
``enable_torchscript``/``enable_onnx``/``enable_tensorrt``, still turns its rungs on or off), then
``extra_variants`` are added and ``skip_variants`` removed. ``pytorch:fp32`` always runs first: it is the speedup baseline.
"""

from __future__ import annotations

from infertune.backends.registry import get_backend, list_backends
from infertune.config import RunConfig
from infertune.errors import ConfigError
from infertune.variants import Variant, parse_variant

#: the speedup baseline, run first; every row's ``speedup_vs_pytorch`` and every report compare with it.
BASELINE = "pytorch:fp32"


def build_ladder(cfg: RunConfig, device: str) -> list[Variant]:
    """The ordered, de-duplicated variants for this run on ``device``."""
    opt = cfg.optimization
    if opt.variants:
        names = list(opt.variants)
    else:
        names = []
        for backend_name in list_backends():
            backend = get_backend(backend_name)
            if backend.seed_switch and not getattr(opt, backend.seed_switch):
                continue
            names.extend(backend.switch_variants or backend.default_variants(device))
        names.extend(opt.extra_variants)
    variants = [parse_variant(n) for n in names]
    skip = {parse_variant(n).name for n in opt.skip_variants}
    unknown_skips = skip - {v.name for v in variants}
    if unknown_skips:
        raise ConfigError(
            f"optimization.skip_variants names {', '.join(sorted(unknown_skips))}, which the ladder does not "
            f"contain ({', '.join(v.name for v in variants)})"
        )
    for v in variants:  # a typo in an option stops the run here, before any conversion
        get_backend(v.backend).validate_options(v.option_dict, device, v.precision)
    out: list[Variant] = []
    for v in variants:
        if v.name not in skip and v.name not in {o.name for o in out}:
            out.append(v)
    baseline = parse_variant(BASELINE)
    if baseline.name in {v.name for v in out}:
        out.sort(key=lambda v: v.name != baseline.name and v.backend != "null")
    return out
