"""Typed configs: every file in the repo loads, and every kind of bad input fails loudly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.config import Config, ConfigError, load_config
from workbook.cli import main

REPO = Path(__file__).resolve().parent.parent
CONFIG_FILES = sorted(REPO.glob("configs/**/*.yaml"))


def test_repository_has_the_documented_configs():
    names = {p.relative_to(REPO / "configs").as_posix() for p in CONFIG_FILES}
    assert {"default.yaml", "smoke.yaml"} <= names
    assert len([n for n in names if n.startswith("experiments/")]) >= 3


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_config_file_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.training.learning_rate > 0


def test_course_style_access_and_defaults():
    cfg = load_config("configs/default.yaml")
    assert cfg["training"]["learning_rate"] == cfg.training.learning_rate == 0.008
    assert cfg["training"]["batch_size"] == 128
    with pytest.raises(KeyError, match="known keys"):
        cfg["training"]["lr"]


def test_extends_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 3\ntraining:\n  epochs: 4\n  batch_size: 32\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ntraining:\n  epochs: 1\n")
    cfg = load_config(tmp_path / "child.yaml", ["training.learning_rate=1e-2", "seed=7"])
    assert (cfg.seed, cfg.training.epochs, cfg.training.batch_size) == (7, 1, 32)
    assert cfg.training.learning_rate == 0.01


def test_switching_model_by_override_resets_its_sizes():
    cfg = load_config("configs/default.yaml", ["model.name=mlp", "model.hidden_sizes=[64, 32]"])
    assert cfg.model.name == "mlp" and cfg.model.hidden_sizes == [64, 32]


def test_hash_is_stable_and_ignores_where_the_run_goes():
    a = load_config("configs/default.yaml")
    b = load_config("configs/default.yaml", ["output.root=/elsewhere", "training.progress=false"])
    c = load_config("configs/default.yaml", ["training.learning_rate=0.05"])
    assert a.hash() == b.hash() != c.hash()
    assert a.run_id() == f"default-{a.hash()}" and len(a.hash()) == 10


BAD = {
    "unknown-key": ("training:\n  lr: 0.1\n", "training.lr: unknown key"),
    "unknown-nested-key": (
        "model:\n  name: cnn\n  chanels: [1, 2]\n",
        "model.chanels: unknown key",
    ),
    "unknown-top-key": ("trainig:\n  epochs: 1\n", "trainig: unknown key"),
    "wrong-type": (
        "training:\n  epochs: two\n",
        "training.epochs: input should be a valid integer",
    ),
    "bool-for-int": ("training:\n  batch_size: true\n", "training.batch_size"),
    "lr-zero": (
        "training:\n  learning_rate: 0\n",
        "training.learning_rate: input should be greater than 0",
    ),
    "lr-negative": ("training:\n  learning_rate: -0.1\n", "training.learning_rate"),
    "epochs-zero": (
        "training:\n  epochs: 0\n",
        "training.epochs: input should be greater than or equal to 1",
    ),
    "batch-zero": ("training:\n  batch_size: 0\n", "training.batch_size"),
    "unknown-model": ("model:\n  name: resnet\n", "model.name: unknown model 'resnet'"),
    # a model section replaces its base's whole: one without a name says which it lacks
    "model-without-name": ("model:\n  fc: 64\n", "model: no name: say which model"),
    "unknown-optimizer": (
        "training:\n  optimizer: rmsprop\n",
        "training.optimizer: input should be 'adam'",
    ),
    "malformed-yaml": ("training: [1\n", "invalid YAML"),
    "empty-file": ("", "the file is empty"),
    "not-a-mapping": ("- 1\n- 2\n", "top level is a list; expected a mapping"),
    "python-tag": ("seed: !!python/object/apply:os.system ['true']\n", "no !!python tags"),
    "duplicated-key": ("seed: 1\nseed: 2\n", "duplicated key 'seed'"),
    "missing-extends": ("extends: nowhere.yaml\n", "extends: no such file"),
    "list-as-key": ("? [a, b]\n: 1\n", "a key that is a list; keys are plain names"),
    "lr-infinite": (
        "training:\n  learning_rate: .inf\n",
        "training.learning_rate: input should be a finite number",
    ),
    "lr-nan": (
        "training:\n  learning_rate: .nan\n",
        "training.learning_rate: input should be a finite number",
    ),
    "dropout-nan": (
        "model:\n  name: mlp\n  dropout: .nan\n",
        "model.dropout: input should be a finite number",
    ),
    "val-fraction-minus-inf": (
        "data:\n  val_fraction: -.inf\n",
        "data.val_fraction: input should be a finite number",
    ),
    "model-a-value": ("model: cnn\n", "model: input should be a valid dictionary"),
}


@pytest.mark.parametrize("text, expected", BAD.values(), ids=BAD.keys())
def test_bad_config_names_file_and_key_and_exits_2(tmp_path, capsys, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and expected in str(err.value)
    # the CLI: exit 2, same message, and no run folder made
    out = tmp_path / "runs"
    assert main(["train", "--config", str(path), "--set", f"output.root={out}"]) == 2
    assert expected in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "override, expected",
    [
        ("training.lr=3", "override training.lr: unknown key"),
        (
            "training.learning_rate=fast",
            "override training.learning_rate: input should be a valid number",
        ),
        ("training.epochs=-1", "override training.epochs"),
        ("seed.deep=1", "seed is a value, not a section"),
        ("novalue", "expected dotted.key=value"),
        (
            "training.learning_rate=.inf",
            "override training.learning_rate: input should be a finite number",
        ),
        ("training.momentum=.nan", "override training.momentum: input should be a finite number"),
    ],
)
def test_bad_override_is_named(tmp_path, capsys, override, expected):
    with pytest.raises(ConfigError, match=expected.split(":")[0]):
        load_config("configs/smoke.yaml", [override])
    assert main(["config", "check", "configs/smoke.yaml", "--set", override]) == 2
    assert expected in capsys.readouterr().err


def test_missing_config_file(capsys):
    assert main(["config", "check", "configs/nope.yaml"]) == 2
    assert "configs/nope.yaml: no such config file" in capsys.readouterr().err


def _not_utf8(folder: Path) -> Path:
    path = folder / "latin1.yaml"
    path.write_bytes("training:\n  optimizer: adam  # r\xe9glage\n".encode("latin-1"))
    return path


def _a_folder(folder: Path) -> Path:
    (folder / "configs.yaml").mkdir()
    return folder / "configs.yaml"


def _a_pipe(folder: Path) -> Path:
    os.mkfifo(folder / "pipe.yaml")  # reading it would block forever
    return folder / "pipe.yaml"


@pytest.mark.parametrize(
    "make, expected",
    [
        (_not_utf8, "not UTF-8 text (byte 32 is b'\\xe9'); save the file as UTF-8"),
        (_a_folder, "is a folder; expected a YAML config file"),
        (_a_pipe, "not a regular file (a device, pipe or socket)"),
        (lambda folder: Path("/dev/zero"), "not a regular file (a device, pipe or socket)"),
    ],
    ids=["not-utf8", "folder", "pipe", "device"],
)
def test_an_unreadable_config_file_is_a_config_error_naming_it(tmp_path, capsys, make, expected):
    path = make(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: {expected}"
    assert main(["config", "check", str(path)]) == 2
    assert f"{path}: {expected}" in capsys.readouterr().err


def test_a_config_file_without_read_permission(tmp_path, monkeypatch, capsys):
    """As root (CI) a mode of 000 still reads, so the refusal is simulated where it happens."""
    path = tmp_path / "secret.yaml"
    path.write_text("seed: 1\n")

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)
    assert main(["config", "check", str(path)]) == 2
    assert f"{path}: cannot read it (Permission denied)" in capsys.readouterr().err


def test_config_check_ok(capsys):
    assert main(["config", "check", "configs/default.yaml", "configs/smoke.yaml"]) == 0
    assert capsys.readouterr().out.count("ok  configs/") == 2


def test_resolved_config_round_trips(tmp_path):
    from shared.config import save_config

    cfg = load_config("configs/smoke.yaml")
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg and again.hash() == cfg.hash()


def test_a_model_given_as_a_value_then_switched_by_override_is_no_traceback(tmp_path):
    """`model: cnn` (a value where a section belongs) with --set model.name=mlp: the switch
    starts the model section afresh, as it does for a section; without it, a clear error."""
    path = tmp_path / "value.yaml"
    path.write_text(f"extends: {REPO / 'configs' / 'default.yaml'}\nmodel: cnn\n")
    assert load_config(path, ["model.name=mlp"]).model.name == "mlp"
    with pytest.raises(ConfigError, match="model: input should be a valid dictionary"):
        load_config(path, ["training.epochs=2"])
