"""Property: whatever file the loader is given, the outcome is a valid config or one ConfigError, never a crash.

Random text, random bytes, the shipped config.yaml with random edits, and valid configs with random
values planted at real and made-up keys.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infertune.config import RunConfig, load_config
from infertune.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = (REPO / "config.yaml").read_text()
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

SECTIONS = {name: list(field.annotation.model_fields) for name, field in RunConfig.model_fields.items()}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["auto", "cpu", "cuda", "pytorch:fp32", "onnxruntime:int8", "", "~", "[1, 2]"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=8)


def _outcome(path: Path, with_flags: bool = False) -> None:
    flags = {"benchmark": {"batch_sizes": [1, 2], "device": None}} if with_flags else None  # as the CLI merges them
    try:
        cfg = load_config(path, flags)
    except ConfigError as err:
        message = str(err)
        assert message.strip() and str(path) in message
        assert "Traceback" not in message
        return
    assert isinstance(cfg, RunConfig)
    assert cfg.benchmark.batch_sizes and all(b >= 1 for b in cfg.benchmark.batch_sizes)
    assert math.isfinite(cfg.benchmark.min_time_s)


@SETTINGS
@given(text=st.text(max_size=300), with_flags=st.booleans())
def test_random_text(tmp_path, text, with_flags):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    _outcome(path, with_flags)


@SETTINGS
@given(data=st.binary(max_size=300))
def test_random_bytes(tmp_path, data):
    path = tmp_path / "config.yaml"
    path.write_bytes(data)
    _outcome(path)


@SETTINGS
@given(edits=st.lists(st.tuples(st.integers(0, len(SHIPPED)), st.integers(0, 12),
                                st.text(alphabet=" \t\n:-[]{}#'\"&*!|>%@`,0123456789abcxyz", max_size=6)),
                      min_size=1, max_size=5))
def test_the_shipped_config_with_random_edits(tmp_path, edits):
    text = SHIPPED
    for position, deleted, inserted in edits:  # cut a span, put random YAML-ish characters in its place
        position = min(position, len(text))
        text = text[:position] + inserted + text[position + deleted:]
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    _outcome(path)


@SETTINGS
@given(section=st.sampled_from([*SECTIONS, "modle", "output", 3]), data=st.data(), value=values)
def test_valid_configs_with_random_values_at_real_and_made_up_keys(tmp_path, section, data, value):
    doc = yaml.safe_load(SHIPPED)
    keys = SECTIONS.get(section, []) + ["unknown_key", "batch_size"]
    key = data.draw(st.sampled_from(keys))
    if section in doc and isinstance(doc[section], dict) and data.draw(st.booleans()):
        doc[section][key] = value
    else:
        doc[section] = value if data.draw(st.booleans()) else {key: value}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    _outcome(path)
