"""The run's configuration: pydantic models validated once, with messages that name the key and the fix.

The seed's keys (``model.name/pretrained/input_shape``, ``benchmark.warmup_iterations/
benchmark_iterations/batch_sizes/device``, ``optimization.enable_torchscript/enable_onnx/
enable_tensorrt``) keep their meaning; everything else is an addition with a default. Unknown keys
are errors that suggest the nearest valid key, because a misspelt key silently ignored is the most
expensive kind of benchmark bug.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from infertune.errors import ConfigError

if TYPE_CHECKING:
    from infertune.verify import Tolerance


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InputConfig(_Section):
    """One model input (``model.inputs``): its name, shape (the batch first, as in ``input_shape``), dtype,
    and the range ``[low, high)`` its synthetic verification, calibration and timing values come from
    (token ids: ``[0, vocab_size)``; a mask of ones: ``[1, 2)``; none: N(0, 1) for floats, 0/1 otherwise)."""

    name: str
    shape: list[int]
    dtype: Literal["float32", "float16", "int64", "int32", "bool"] = "float32"
    range: list[float] | None = None

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: list[int]) -> list[int]:
        return _check_shape(v, "shape")

    @field_validator("range")
    @classmethod
    def _range(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (len(v) != 2 or not v[1] > v[0]):
            raise ValueError(f"range must be two numbers [low, high) with high > low, got {v}")
        return v

    @model_validator(mode="after")
    def _bool_range(self) -> InputConfig:
        if self.dtype == "bool" and self.range is not None and (self.range[0] < 0 or self.range[1] > 2):
            raise ValueError(f"input {self.name!r}: a bool input's range lies within [0, 2), got {self.range}")
        return self


def _check_shape(v: list[int], key: str) -> list[int]:
    if not v:
        raise ValueError(f"{key} is empty: give the batch first, then one sample's dimensions, e.g. "
                         "[1, 3, 224, 224] for images or [1, 64] for 64 features")
    if any(d < 1 for d in v):
        raise ValueError(f"every {key} dimension must be >= 1, got {v}")
    return v


class ModelConfig(_Section):
    """Which model to load and how.

    ``name`` is a torchvision name (``resnet50``), ``timm:<name>`` (or a bare timm name when timm is
    installed), ``package.module:factory`` (a callable returning an ``nn.Module``), a path to an
    ``.onnx`` file, or ``hf:<name or save_pretrained folder>`` (a Hugging Face transformers model).

    ``input_shape`` is a single input's shape, batch first, of any rank (``[1, 3, 224, 224]``,
    ``[1, 64]``); ``inputs`` names several inputs (or one of another dtype) instead, in the order the
    model takes them. ``sequence_length`` is the token count of text models (``hf:bert-base-uncased``).
    """

    name: str = "resnet50"
    pretrained: bool = True
    input_shape: list[int] = Field(default_factory=lambda: [1, 3, 224, 224])
    inputs: list[InputConfig] | None = None
    sequence_length: int = Field(128, ge=1)
    weights: str | None = None
    seed: int = 0

    @field_validator("input_shape")
    @classmethod
    def _shape(cls, v: list[int]) -> list[int]:
        return _check_shape(v, "input_shape")

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, v: list[InputConfig] | None) -> list[InputConfig] | None:
        if v is not None:
            if not v:
                raise ValueError("inputs is empty: name at least one input, or drop the key to use input_shape")
            names = [i.name for i in v]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"input names must be unique; repeated: {', '.join(repeated)}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("model name is empty: use e.g. resnet50, timm:resnet50d or my_pkg.models:build")
        return v.strip()


class BenchmarkConfig(_Section):
    """How to time each cell. The loop runs until BOTH benchmark_iterations and min_time_s are met.

    ``rounds`` > 1 measures every variant again, round after round (each round visits the whole
    ladder in a fresh worker, artifacts from the cache), and pools the samples per cell: on machines
    whose speed drifts in phases this compares variants, not phases.
    """

    warmup_iterations: int = Field(3, ge=0)
    #: warm up for at least this long too; None = 0.5 s on CUDA (clocks ramp up), 0 on the CPU.
    warmup_time_s: float | None = Field(None, ge=0)
    benchmark_iterations: int = Field(10, ge=1)
    min_time_s: float = Field(1.0, ge=0)
    #: end a cell's timed loop sooner once its median is known within this many percent either side (95%
    #: confidence; measure/timer.py); None: 0.5 on CUDA (device-event timings repeat closely there), off on the
    #: CPU (its speed drifts in phases that one cell's samples cannot show, so every cell runs min_time_s);
    #: 0: off everywhere.
    precision_pct: float | None = Field(None, ge=0)
    max_iterations: int = Field(10_000, ge=1)
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 4, 8])
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: intra-op threads per job; None: every usable core on the CPU, on a GPU each concurrent job's share.
    threads: int | None = Field(None, ge=1)
    #: the executor (``infertune.executors``): process (a worker per job, the default), none (in this
    #: process, for debugging), or another registered one.
    isolation: str = "process"
    cell_timeout_s: float = Field(1800, gt=0)
    #: the whole variant (all its batch sizes) in its worker; None: only cell_timeout_s bounds it.
    variant_timeout_s: float | None = Field(None, gt=0)
    #: cap on each worker's data memory (RLIMIT_DATA, MB; CPU runs only); None: no cap.
    memory_limit_mb: int | None = Field(None, ge=256)
    #: jobs the default executor runs at once, preparing side by side and measuring in turns
    #: (executors/slot.py); None: on a GPU as many as the machine holds (plan.concurrent_jobs: 3 per core, one per
    #: 2 GB of host and of GPU memory), as its run is mostly compiling and waiting; on the CPU 1 (workers
    #: preparing side by side would share the cores every conversion already uses). A large model on a small GPU
    #: may need fewer: each worker holds its own copy.
    concurrent_jobs: int | None = Field(None, ge=1)
    #: a worker per cell (variant and batch size) instead of per variant; None: when several jobs run at once,
    #: so that every cell's preparation (a compile per batch size, above all) overlaps the others' and the
    #: measurements follow one another (docs/measurement.md, "Jobs side by side").
    job_per_cell: bool | None = None
    rounds: int = Field(1, ge=1)
    #: time the baseline (pytorch:fp32) again at the end of the run; a drift beyond its noise flags the
    #: speedups of that batch size (measure/load.py).
    baseline_check: bool = True

    @field_validator("batch_sizes")
    @classmethod
    def _batches(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("batch_sizes is empty: give at least one batch size, e.g. [1, 8]")
        bad = [b for b in v if b < 1]
        if bad:
            raise ValueError(f"batch sizes must be >= 1, got {bad}")
        return list(dict.fromkeys(v))

    @field_validator("isolation")
    @classmethod
    def _executor(cls, v: str) -> str:
        from infertune.executors.base import executor_class

        try:
            executor_class(v)
        except ConfigError as err:
            raise ValueError(str(err).removeprefix("unknown benchmark.isolation ")) from None
        return v

    @model_validator(mode="after")
    def _limits_need_workers(self) -> BenchmarkConfig:
        if self.memory_limit_mb is not None and self.isolation == "none":
            raise ValueError("memory_limit_mb applies to worker processes: set isolation: process or drop the limit")
        return self


class Int8Config(_Section):
    """Post-training INT8 quantization settings shared by the INT8 backends."""

    calibration_samples: int = Field(32, ge=1)
    calibration_method: Literal["minmax", "percentile", "entropy"] = "minmax"


class OptimizationConfig(_Section):
    """Which variants to run. ``variants`` (explicit list) wins over the seed's enable_* switches."""

    enable_torchscript: bool = True
    enable_onnx: bool = True
    enable_tensorrt: bool = False
    variants: list[str] | None = None
    extra_variants: list[str] = Field(default_factory=list)
    skip_variants: list[str] = Field(default_factory=list)
    onnx_opset: int = Field(18, ge=13)
    int8: Int8Config = Field(default_factory=Int8Config)


#: validation bounds of the tolerance keys that have them; the keys themselves are ``verify.Tolerance``'s fields.
_TOLERANCE_BOUNDS: dict[str, dict[str, float]] = {
    "cosine_min": {"ge": -1, "le": 1},
    "max_rel_err": {"ge": 0},
    "max_abs_err": {"ge": 0},
    "top1_min": {"ge": 0, "le": 1},
    "top5_min": {"ge": 0, "le": 1},
    "accuracy_ratio_min": {"ge": 0, "le": 1},
}


def _tolerance_config() -> type[_Section]:
    """``verify.tolerances.<precision>``: one optional key per ``verify.Tolerance`` field, so the two never drift."""
    from dataclasses import fields

    from pydantic import create_model

    from infertune.verify import Tolerance

    keys: dict[str, Any] = {f.name: (float | None, Field(None, **_TOLERANCE_BOUNDS.get(f.name, {})))
                            for f in fields(Tolerance)}
    model = create_model("ToleranceConfig", __base__=_Section, **keys)
    model.__doc__ = ("Override one precision's fidelity bounds (docs/fidelity.md has the defaults); null disables "
                     "a bound. The keys are the fields of infertune.verify.Tolerance.")
    return model


ToleranceConfig = _tolerance_config()


class VerifyConfig(_Section):
    """Fidelity checks against FP32 eager, and accuracy mode.

    Inputs: ``inputs: photos`` (default: real photographs shipped with scikit-image) or
    ``synthetic`` (seeded noise); ``images`` = a folder of your own images; ``dataset`` = a labelled
    ImageFolder tree (accuracy mode: top-1/top-5 accuracy and the accuracy gate).
    ``calibration_images`` = INT8 calibration images (never the verification ones).
    ``mean``/``std`` override the model's input normalisation (ImageNet's by default).
    """

    samples: int = Field(8, ge=1)
    inputs: Literal["photos", "synthetic"] = "photos"
    images: str | None = None
    dataset: str | None = None
    calibration_images: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    seed: int = 0
    tolerances: dict[Literal["fp32", "tf32", "fp16", "bf16", "int8"], ToleranceConfig] = Field(  # type: ignore[valid-type]
        default_factory=dict)

    @model_validator(mode="after")
    def _one_image_source(self) -> VerifyConfig:
        if self.images and self.dataset:
            raise ValueError("set either verify.images (a folder of images) or verify.dataset (a labelled "
                             "ImageFolder tree for accuracy mode), not both")
        return self


class OutputConfig(_Section):
    dir: str = "results"
    models_dir: str = "models"
    use_cache: bool = True


class ScenarioConfig(_Section):
    """``infertune scenario``: MLPerf LoadGen scenarios and the SUT's dynamic batching (docs/serving.md).

    The server scenario searches every combination of ``max_batch`` × ``max_delay_ms`` × ``instances``
    for the highest QPS that LoadGen calls VALID at p99 <= ``latency_bound_ms`` (``server_qps`` fixes the
    rate instead), within ``search_budget_s``. LoadGen runs each trial at least ``min_duration_s`` and
    ``min_query_count`` queries (MLPerf's rules ask for 600 s; short runs are a preview).
    """

    latency_bound_ms: float = Field(100.0, gt=0)
    min_duration_s: float = Field(10.0, gt=0)
    min_query_count: int = Field(700, ge=1)
    samples_per_query: int = Field(8, ge=1)
    sample_count: int = Field(64, ge=1)
    #: on a GPU, keep the sample library in device memory (as MLPerf's QSL loads samples before the timed
    #: run) so a query moves only its indices; false: every batch is copied from host memory.
    samples_on_device: bool = True
    server_qps: float | None = Field(None, gt=0)
    max_batch: list[int] = Field(default_factory=lambda: [1, 4, 8, 16])
    max_delay_ms: list[float] = Field(default_factory=lambda: [2.0, 10.0])
    instances: list[int] = Field(default_factory=lambda: [1, 2])
    search_budget_s: float | None = Field(1800.0, gt=0)
    search_tolerance: float = Field(0.05, gt=0, lt=1)
    price_per_hour: float | None = Field(None, ge=0)

    @field_validator("max_batch", "instances")
    @classmethod
    def _positive_ints(cls, v: list[int]) -> list[int]:
        if not v or any(x < 1 for x in v):
            raise ValueError(f"give one or more whole numbers >= 1, got {v}")
        return list(dict.fromkeys(v))

    @field_validator("max_delay_ms")
    @classmethod
    def _delays(cls, v: list[float]) -> list[float]:
        if not v or any(x < 0 for x in v):
            raise ValueError(f"give one or more delays >= 0 ms, got {v}")
        return list(dict.fromkeys(v))


class RayConfig(_Section):
    """``benchmark.isolation: ray``: where the Ray cluster is and how the ladder is spread (docs/ray.md)."""

    #: a running cluster (``ray://host:10001``, ``host:6379`` or ``auto``); None: a local Ray instance
    #: starts with the run's variant jobs and stops after them.
    address: str | None = None
    #: CPUs of the local instance (None: this machine's usable cores); ignored with an address.
    num_cpus: int | None = Field(None, ge=1)
    #: GPUs of the local instance (None: every visible GPU); ignored with an address.
    num_gpus: int | None = Field(None, ge=0)
    #: the whole ladder on every alive node, each job pinned to its node (``--per-node``); rows then carry
    #: ``pinned_node`` and the report shows the nodes side by side. False: each job runs once, anywhere.
    per_node: bool = False


class RunConfig(_Section):
    """The whole run; ``load_config`` builds it from YAML and CLI overrides."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)
    optimization: OptimizationConfig = Field(default_factory=OptimizationConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    scenario: ScenarioConfig = Field(default_factory=ScenarioConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _variant_lists(self) -> RunConfig:
        for v in self.optimization.variants or []:
            if not isinstance(v, str) or not v.strip():
                raise ValueError("optimization.variants must be a list of names like onnxruntime:int8")
        if self.ray.per_node and self.benchmark.isolation != "ray":
            raise ValueError(f"ray.per_node (--per-node) runs the ladder on every node of a Ray cluster, but the "
                             f"executor is {self.benchmark.isolation!r}: add --executor ray (benchmark.isolation: "
                             "ray), or drop --per-node")
        return self


def _section_fields(path: tuple[Any, ...]) -> list[str]:
    """Valid keys at a location, for 'did you mean' suggestions."""
    model: type[BaseModel] = RunConfig
    parts = list(path)
    while parts:
        field = model.model_fields.get(str(parts.pop(0)))
        ann = getattr(field, "annotation", None) if field else None
        if get_origin(ann) in (Union, UnionType):  # X | None -> X
            ann = next(a for a in get_args(ann) if a is not type(None))
        if get_origin(ann) in (dict, list) and parts:  # verify.tolerances.<precision>, model.inputs.<index>
            ann = get_args(ann)[-1]
            parts.pop(0)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return []
    return list(model.model_fields)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            valid = _section_fields(loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
            hint = f" Did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?" if close else ""
            lines.append(f"  - unknown key '{key}'.{hint} Valid keys here: {', '.join(valid)}.")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            got_text = f" (got {_short_repr(got)})" if got is not None and not isinstance(got, dict) else ""
            lines.append(f"  - {key}: {msg}{got_text}" if key else f"  - {msg}")  # no key: a rule across sections
    return "\n".join(lines)


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a config dict; raise ConfigError listing every problem with its fix."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a YAML mapping (model:, benchmark:, ...), got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def read_yaml(path: Path | str) -> dict[str, Any]:
    """Read a YAML file; a missing or malformed file is a ConfigError that says so."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist: pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not a text file (byte {err.start} is not UTF-8): pass a YAML config") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML{_yaml_where(err)}; check the indentation, colons, "
                          "quotes and brackets there") from None
    except RecursionError:
        raise ConfigError(f"{path} nests too deeply to be a config: check its brackets") from None
    return data or {}


def _yaml_where(err: Any) -> str:
    """``at line 3, column 7: mapping values are not allowed here``: where the parser stopped and why."""
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    return f"{where}: {problem}" + (f" ({context})" if context else "")


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` (e.g. from CLI flags) into ``base``; None values are ignored."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict):
            out[key] = merge(out.get(key) if isinstance(out.get(key), dict) else {}, value)
        else:
            out[key] = value
    return out


def load_config(path: Path | str | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Load ``path`` (or the defaults), apply CLI ``overrides``, validate."""
    data = read_yaml(path) if path else {}
    source = str(path) if path else "the defaults"
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a YAML mapping (model:, benchmark:, ...), got {type(data).__name__}")
    if overrides:
        data = merge(data, overrides)
        source += " + command-line flags"
    return validate_config(data, source)


def tolerances(cfg: RunConfig) -> dict[str, Tolerance]:
    """Per-precision tolerances: the defaults of verify.py overlaid with the config's."""
    from dataclasses import replace

    from infertune.verify import DEFAULT_TOLERANCES

    out = dict(DEFAULT_TOLERANCES)
    for precision, tol in cfg.verify.tolerances.items():
        out[precision] = replace(out[precision], **tol.model_dump(exclude_unset=True))
    return out
