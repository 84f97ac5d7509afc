"""Typed training configs: YAML in, a validated ``Config`` out, loud on anything wrong.

The course reads ``config['training']['learning_rate']``; that works here, and so does
``config.training.learning_rate`` (typed, with completion in JupyterLab).

A config file may start with ``extends: other.yaml`` (relative to itself) and then list only
what differs. Overrides such as ``training.learning_rate=0.01`` are parsed as YAML values and
validated exactly like the file. Every problem is reported as ``FILE: dotted.key: what was
expected`` through ``ConfigError``, before any run folder exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.io import atomic_write_text
from shared.paths import project_root, resolve


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the file and the dotted key."""


class _Section(BaseModel):
    """Strict sections: unknown keys fail, and values are not silently coerced."""

    # allow_inf_nan=False: `.inf` and `.nan` are valid YAML floats, never a valid setting.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    def __getitem__(self, key: str) -> Any:
        """``config['training']['batch_size']``, as the course text writes it."""
        if key not in type(self).model_fields:
            raise KeyError(f"{key!r}; known keys: {', '.join(type(self).model_fields)}")
        return getattr(self, key)


class DataConfig(_Section):
    # Relative paths are taken from the project root, so notebooks in labs/ find data/.
    root: str = "data"
    # 6,000 of the 60,000 training images held out: enough to compare runs to ~0.25 %.
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    # Class-balanced subset of the training set for smoke runs; None = all 60,000.
    subset: int | None = Field(default=None, ge=10, le=60_000)  # at most the training split
    # "tensor": whole splits held as tensors (fast); "dataloader": torchvision + DataLoader
    # with per-sample transforms (the classic way, ~8x slower on CPU for an MLP).
    loader: Literal["tensor", "dataloader"] = "tensor"


class MLPConfig(_Section):
    name: Literal["mlp"]
    hidden_sizes: list[Annotated[int, Field(ge=1)]] = [128]  # 784-128-10 reaches ~97 %
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class CNNConfig(_Section):
    # The defaults are configs/default.yaml's (its comments give the measurements).
    name: Literal["cnn"]
    # Output channels of the two conv layers (5x5, then 3x3; each followed by 2x2 max-pooling).
    channels: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=2, max_length=2)] = [
        24,
        32,
    ]
    fc: int = Field(default=128, ge=1)  # hidden units before the 10-way output
    batch_norm: bool = False  # BatchNorm after each conv: steadier, but slower per epoch
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


ModelConfig = Annotated[MLPConfig | CNNConfig, Field(discriminator="name")]


Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class TrainingConfig(_Section):
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=128, ge=1)
    learning_rate: float = Field(default=0.008, gt=0.0)
    optimizer: Literal["adam", "adamw", "sgd", "adadelta"] = "adam"
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)  # sgd only
    # adam/adamw only: the decay rates of the gradient's running mean and of its square
    # (torch's defaults are [0.9, 0.999]; a one-epoch run does better with shorter memories).
    betas: Annotated[list[Beta], Field(min_length=2, max_length=2)] = [0.7, 0.9]
    weight_decay: float = Field(default=0.0, ge=0.0)
    # "onecycle" warms up then anneals per batch: the fastest route to 99 % we measured.
    scheduler: Literal["none", "onecycle", "step", "cosine"] = "onecycle"
    step_gamma: float = Field(default=0.7, gt=0.0, le=1.0)  # "step" only, per epoch
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    progress: bool = True  # tqdm bars; display only, not part of the config hash


class OutputConfig(_Section):
    root: str = "runs"  # relative to the project root
    name: str = Field(default="run", pattern=r"^[A-Za-z0-9_.-]+$")  # run id = <name>-<hash>


class Config(_Section):
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = CNNConfig(name="cnn")
    training: TrainingConfig = TrainingConfig()
    output: OutputConfig = OutputConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every value, defaults included."""
        return self.model_dump(mode="json")

    def hash(self) -> str:
        """Stable 10-hex-digit hash of everything that affects results.

        ``output`` (where the run goes) and ``training.progress`` (bars on or off) are left
        out: moving a run or hiding its progress bar does not make it a different experiment.
        """
        d = self.to_dict()
        d.pop("output")
        d["training"].pop("progress")
        canonical = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:10]

    def run_id(self) -> str:
        return f"{self.output.name}-{self.hash()}"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------- YAML reading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader (no python/* tags, so no code runs) that also refuses duplicated keys."""

    def construct_mapping(self, node, deep=False):  # noqa: D102 - yaml API
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:  # `? [a, b]` makes a list a key: YAML allows it, a config not
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key that is a {type(key).__name__}; keys are plain names", key_node.start_mark,
                ) from None  # fmt: skip
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicated key {key!r}", key_node.start_mark
                )
            seen[key] = True
        return super().construct_mapping(node, deep=deep)


def _real_timestamp(loader: _StrictLoader, node):
    """YAML reads 2024-01-05 as a date; one that does not exist (0000-00-00, 2024-02-30)
    is an error of the text, with its line, not a ValueError from inside the parser."""
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError as exc:
        raise yaml.constructor.ConstructorError(
            None, None, f"{node.value!r} is not a real date ({exc})", node.start_mark
        ) from None


_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _real_timestamp)

# YAML 1.1 reads `1e-3` as a string (it wants `1.0e-3`); learners write 1e-3, so read it as
# the float it obviously is. Same pattern as PyYAML's own float resolver, with an optional dot.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_value(text: str) -> Any:
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is safe


def _read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a config file. Every way a file can be unusable (missing, a folder, a
    device or pipe, unreadable, not UTF-8) is a ConfigError naming it, never a traceback."""
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise ConfigError(f"{path}: is a folder; expected a YAML config file")
    if not stat.S_ISREG(mode):  # /dev/zero would never end, a pipe would block
        raise ConfigError(f"{path}: not a regular file (a device, pipe or socket)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start : exc.start + 1]!r}); "
            "save the file as UTF-8"
        ) from None
    except OSError as exc:  # permissions, I/O errors
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return _parse_yaml(text, str(path))


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = _yaml_value(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(exc, "problem", None) or str(exc)
        if "could not determine a constructor" in str(problem) or "tag" in str(problem):
            problem = f"{problem}; only plain YAML is allowed (no !!python tags)"
        raise ConfigError(f"{source}{where}: invalid YAML: {problem}") from None
    if data is None:
        raise ConfigError(
            f"{source}: the file is empty; expected a mapping such as 'training: ...'"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level is a {type(data).__name__}; expected a mapping")
    return data


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _resolve_extends(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"{path}: extends: cycle {cycle}")
    return _merge_parent(_read_yaml(path), path.parent, str(path), (*chain, path))


def _merge_parent(
    data: dict[str, Any], folder: Path, source: str, chain: tuple[Path, ...]
) -> dict[str, Any]:
    """``data`` on top of the file its ``extends`` names (relative to ``folder``)."""
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{source}: extends: expected a file name, got {type(parent).__name__}")
    parent_path = folder / parent
    if not parent_path.is_file():
        raise ConfigError(f"{source}: extends: no such file {parent_path}")
    # The model section is replaced, not merged: a cnn base must not leak `channels` into an mlp.
    base = _resolve_extends(parent_path, chain)
    if "model" in data:
        base.pop("model", None)
    return _deep_merge(base, data)


def parse_override(text: str) -> tuple[str, Any]:
    """``"training.learning_rate=0.01"`` -> ``("training.learning_rate", 0.01)``."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected dotted.key=value")
    try:
        value = _yaml_value(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def _apply_override(data: dict[str, Any], key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {'.'.join(parts[: i + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


_MODELS = {"mlp": MLPConfig, "cnn": CNNConfig}


def _section_keys(loc: Sequence[Any]) -> list[str]:
    """The keys allowed where ``loc`` points (its last element is the unknown key)."""
    section: type[BaseModel] = Config
    for part in loc[:-1]:
        if part in _MODELS:
            section = _MODELS[part]
            continue
        field = section.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            section = annotation
    return list(section.model_fields)


#: Spellings from tutorials that difflib would not match to our keys.
_ABBREVIATIONS = {
    "lr": "learning_rate",
    "bs": "batch_size",
    "wd": "weight_decay",
}


def _unknown_key(loc: Sequence[Any]) -> str:
    import difflib

    known = _section_keys(loc)
    key = str(loc[-1])
    close = [_ABBREVIATIONS[key]] if _ABBREVIATIONS.get(key) in known else []
    close = close or difflib.get_close_matches(key, known, n=1)
    maybe = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key; {maybe}known keys here: {', '.join(known)}"


def _expected(err: Mapping[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    got = err.get("input")
    if kind == "extra_forbidden":
        return _unknown_key(err["loc"])
    if kind == "union_tag_invalid":
        return f"unknown model {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        # a model section replaces the base's whole (its keys depend on which model it is)
        return (f"no name: say which model this section is (name: mlp or name: cnn); a "
                f"model: section replaces its base's whole, so it restates the name; got {got!r}")  # fmt: skip
    if kind == "missing":
        return "required key is missing"
    return f"{err['msg'].lower()}; got {got!r}"


def _validated(
    data: Mapping[str, Any], source: str, overrides: Sequence[tuple[str, Any]] = ()
) -> Config:
    """Validate a raw dict, naming ``source`` (or the override) and the dotted key on error."""
    try:
        return Config.model_validate(dict(data))
    except ValidationError as exc:
        lines = []
        override_keys = {k for k, _ in overrides}
        for err in exc.errors():
            loc = [str(p) for p in err["loc"] if not str(p).startswith(("cnn", "mlp"))]
            if err["type"] == "union_tag_invalid":
                loc.append("name")
            dotted = ".".join(loc) or "(top level)"
            kind = "override " if dotted in override_keys else ""
            lines.append(f"{source}: {kind}{dotted}: {_expected(err)}")
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Config:
    """Load, merge ``extends``, apply ``key=value`` overrides, validate. Raises ConfigError."""

    return _finish(_resolve_extends(resolve(path)), overrides, str(path))


def load_config_text(
    text: str,
    overrides: Sequence[str] = (),
    folder: str | os.PathLike[str] | None = None,
    source: str = "your config",
) -> Config:
    """A config from YAML text, as if it were a file in ``folder`` (default: the project's
    configs/, so ``extends: default.yaml`` works): how a notebook loads the YAML a learner
    wrote in a cell. Errors name ``source`` instead of a file."""

    if not isinstance(text, str):
        raise ConfigError(f"{source}: expected YAML text, got {type(text).__name__}")
    base = Path(folder) if folder is not None else project_root() / "configs"
    data = _merge_parent(_parse_yaml(text, source), base.resolve(), source, ())
    return _finish(data, overrides, source)


def _finish(data: dict[str, Any], overrides: Sequence[str], source: str) -> Config:
    parsed = [parse_override(o) for o in overrides]
    # Switching model (model.name=mlp on a cnn config) starts the model section afresh, so
    # the old model's sizes do not trip the new one's schema; later overrides still apply.
    new_name = dict(parsed).get("model.name")
    model = data.get("model")
    if new_name is not None and new_name != (
        model.get("name") if isinstance(model, dict) else None
    ):
        data["model"] = {}
    for (key, value), text in zip(parsed, overrides, strict=True):
        _apply_override(data, key, value, f"override {text!r}")
    return _validated(data, source, parsed)


def save_config(config: Config, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config (every value, defaults included) atomically as YAML."""

    header = f"# resolved config, hash {config.hash()}\n"
    return atomic_write_text(path, header + config.to_yaml())


def check_files(files: Sequence[str], overrides: Sequence[str] = ()) -> list[Config] | None:
    """Load and validate each config, printing each one's errors (file, key, expectation) to
    stderr, a line each; None when any failed. What ``python -m shared.config`` and
    ``workbook config check`` run."""
    import sys

    loaded, failed = [], False
    for f in files:
        try:
            loaded.append(load_config(f, overrides))
        except ConfigError as exc:
            print(f"config error: {exc}".replace("\n", "\nconfig error: "), file=sys.stderr)
            failed = True
    return None if failed else loaded


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m shared.config FILE... [--set KEY=VALUE]``: check configs from a terminal,
    as a CI job or an Airflow task would; exit 0 when every one is valid, 2 otherwise."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m shared.config", description="Load and validate training configs."
    )
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one value, e.g. --set training.learning_rate=0.01")  # fmt: skip
    args = parser.parse_args(argv)
    configs = check_files(args.files, args.set)
    if configs is None:
        return 2
    for f, config in zip(args.files, configs, strict=True):
        print(f"ok  {f}  (run id {config.run_id()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
