"""Fuzzing the config loader (Hypothesis): whatever YAML a learner writes, whatever override
they type, the loader answers with a Config or a ConfigError naming the problem, never
another exception (a traceback in a notebook or an Airflow log says nothing about the file)."""

from __future__ import annotations

import math

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared.config import Config, ConfigError, load_config, load_config_text

KEYS = ["seed", "data", "model", "training", "output", "extends", "name", "root", "subset",
        "val_fraction", "loader", "hidden_sizes", "channels", "fc", "dropout", "batch_norm",
        "epochs", "batch_size", "learning_rate", "optimizer", "betas", "momentum",
        "weight_decay", "scheduler", "device", "progress", "mlp", "cnn", "adam"]  # fmt: skip

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["mlp", "cnn", "adam", "sgd", "onecycle", "default.yaml", "../x.yaml"]),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6), st.integers()),
                        inner, max_size=5),
    ),
    max_leaves=12,
)  # fmt: skip
SECTIONS = {
    "data": ["root", "val_fraction", "subset", "loader"],
    "model": ["name", "hidden_sizes", "channels", "fc", "dropout", "batch_norm"],
    "training": ["epochs", "batch_size", "learning_rate", "optimizer", "betas", "momentum",
                 "weight_decay", "scheduler", "step_gamma", "device", "progress"],
    "output": ["root", "name"],
}  # fmt: skip
sections = st.fixed_dictionaries(
    {},
    optional={
        name: st.one_of(values, st.dictionaries(st.sampled_from(keys), values, max_size=4))
        for name, keys in SECTIONS.items()
    },
)
documents = st.one_of(st.dictionaries(st.sampled_from(KEYS), values, max_size=6), sections)
#: What a learner types after `=`: YAML spellings of every kind, the awkward ones included.
typed = st.one_of(
    st.sampled_from([".inf", "-.inf", ".nan", "1e-3", "[1, 2]", "{a: 1}", "null", "~", "", "yes",
                     "0x10", "1_000", "'3'", "[", "mlp", "cnn", "? [a]: 1"]),
    st.text(max_size=10), scalars.map(str),
)  # fmt: skip
dotted = st.one_of(
    st.sampled_from([f"{s}.{k}" for s, keys in SECTIONS.items() for k in keys] + ["seed"]),
    st.lists(st.sampled_from(KEYS), max_size=3).map(".".join),
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _loads_or_refuses(load) -> None:
    try:
        config = load()
    except ConfigError as exc:
        assert str(exc).strip(), "a ConfigError must say what is wrong"
        return
    assert isinstance(config, Config)
    t = config.training
    for value in (t.learning_rate, t.momentum, t.weight_decay, t.step_gamma, *t.betas):
        assert math.isfinite(value), "a loaded config holds only finite numbers"


@FUZZ
@given(documents)
def test_any_yaml_mapping_loads_or_is_refused_by_name(document):
    text = "extends: default.yaml\n" + yaml.safe_dump(document, allow_unicode=True)
    _loads_or_refuses(lambda: load_config_text(text))


@FUZZ
@given(st.text(max_size=200))
@example(text="0000-00-00")  # a date YAML reads, then cannot make (Hypothesis found it)
@example(text="seed: 2024-02-30")
def test_any_text_loads_or_is_refused_by_name(text):
    _loads_or_refuses(lambda: load_config_text(text))


@FUZZ
@given(st.lists(st.tuples(dotted, typed), max_size=3), st.sampled_from(["smoke", "default"]))
def test_any_override_loads_or_is_refused_by_name(overrides, base):
    texts = [f"{key}={value}" for key, value in overrides]
    _loads_or_refuses(lambda: load_config(f"configs/{base}.yaml", texts))


@FUZZ
@given(st.binary(max_size=120))
def test_any_bytes_in_a_file_load_or_are_refused_by_name(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "config.yaml"
    path.write_bytes(data)
    _loads_or_refuses(lambda: load_config(path))
