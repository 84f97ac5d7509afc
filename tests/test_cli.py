"""The workbook CLI end to end, as a learner types it: exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def workbook(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "workbook.cli", *args], capture_output=True, text=True, **kw
    )


COMMANDS = [
    "bench", "config", "data", "demo", "grade", "labs", "nb", "release", "run", "site", "train",
]  # fmt: skip


def test_every_command_has_its_own_help_and_handler(capsys):
    """Each command parses on its own (its --help exits 0 with its own usage line), and the
    top-level help lists exactly these (a command added without a test shows up here)."""
    from workbook import cli

    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert sorted(sub.choices) == COMMANDS
    for name in COMMANDS:
        with pytest.raises(SystemExit) as done:
            cli.main([name, "--help"])
        assert done.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: workbook {name}")


def test_no_command_is_bad_usage():
    assert workbook().returncode == 2


def test_train_smoke_then_resume_a_finished_run(tmp_path):
    done = workbook("train", "--config", "configs/smoke.yaml", "--set", f"output.root={tmp_path}")
    assert done.returncode == 0, done.stderr
    (run_dir,) = tmp_path.iterdir()
    assert f"run {run_dir}" in done.stdout and "test accuracy 0." in done.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    again = workbook("train", "--config", "configs/smoke.yaml", "--set", f"output.root={tmp_path}",
                     "--resume", str(run_dir))  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["test"] == metrics["test"]


def test_resume_without_checkpoint_is_bad_usage(tmp_path):
    out = workbook("train", "--config", "configs/smoke.yaml", "--resume", str(tmp_path))
    assert out.returncode == 2 and "no checkpoint.pt" in out.stderr


def test_train_turns_the_package_errors_into_one_line_and_keeps_other_tracebacks(
    monkeypatch, capsys
):
    from shared import train
    from workbook import cli

    def no_gpu(*args, **kwargs):
        raise train.DeviceError("training.device: 'cuda' requested but no CUDA GPU is available")

    monkeypatch.setattr(train, "fit", no_gpu)
    assert cli.main(["train", "--config", "configs/smoke.yaml"]) == 1
    assert capsys.readouterr().err == (
        "workbook train: training.device: 'cuda' requested but no CUDA GPU is available\n"
    )

    def torch_fails(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (64x784 and 10x10)")

    monkeypatch.setattr(train, "fit", torch_fails)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        cli.main(["train", "--config", "configs/smoke.yaml"])


def test_train_on_missing_data_fails_with_exit_1(tmp_path):
    out = workbook("train", "--config", "configs/smoke.yaml", "--set", f"data.root={tmp_path}",
                   "--set", f"output.root={tmp_path / 'runs'}")  # fmt: skip
    assert out.returncode == 1 and "workbook data fetch" in out.stderr


@pytest.mark.usefixtures("mnist_root")
def test_data_validate_reports_json():
    out = workbook("data", "validate")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and report["test"]["class_counts"][1] == 1135


def test_data_validate_on_damaged_files_exits_1(tmp_path, mnist_root):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (mnist_root / "MNIST" / "raw").iterdir():
        (raw / f.name).write_bytes(f.read_bytes())
    labels = raw / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-1] + b"\x07")
    out = workbook("data", "validate", "--root", str(tmp_path))
    assert out.returncode == 1
    assert "t10k-labels-idx1-ubyte: sha256" in out.stderr


@pytest.mark.kernel
def test_nb_execute_never_overwrites_its_input_with_a_failed_run(tmp_path, sandbox):
    """A notebook whose cell raises: the command exits 1 naming the cell and the error, the
    notebook is byte for byte as it was, and papermill's failed copy sits under runs/."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("1 / 0")]
    path = tmp_path / "02_broken.ipynb"
    nbformat.write(nb, path)
    before = path.read_bytes()
    done = workbook("nb", "execute", str(path))
    assert done.returncode == 1, done.stderr
    assert "ZeroDivisionError" in done.stderr and "is unchanged" in done.stderr
    assert path.read_bytes() == before
    failed = sandbox / "runs" / "nb-execute" / path.name
    assert failed.is_file() and "ZeroDivisionError" in failed.read_text()
    nb.cells = nb.cells[:1]  # fixed: now it runs, and the executed notebook replaces it
    nbformat.write(nb, path)
    assert workbook("nb", "execute", str(path)).returncode == 0
    assert nbformat.read(path, as_version=4).cells[0].execution_count == 1
    assert not failed.exists()
