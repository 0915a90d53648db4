"""The command line: backend switching, the default output, the flags."""

import os
import subprocess
import sys

import keras
import pytest

import layerwise
from layerwise.demo import cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_no_switch_when_the_backend_is_unset_or_already_loaded():
    assert cli.backend_switch(None, "tensorflow", {}) is None
    assert cli.backend_switch("jax", "jax", {}) is None


def test_switch_sets_the_backend_before_keras_loads():
    environ = {"PATH": "/bin"}
    switched = cli.backend_switch("torch", "tensorflow", environ)
    assert switched["KERAS_BACKEND"] == "torch"
    assert switched["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert switched["PATH"] == "/bin"
    assert environ == {"PATH": "/bin"}  # a copy; this process is untouched
    # The new process imports this copy of layerwise, wherever it starts.
    root = switched["PYTHONPATH"].split(os.pathsep)[0]
    assert os.path.samefile(os.path.join(root, "layerwise"), os.path.dirname(layerwise.__file__))


def test_switch_keeps_the_users_tensorflow_log_level():
    switched = cli.backend_switch("jax", "tensorflow", {"TF_CPP_MIN_LOG_LEVEL": "1"})
    assert switched["TF_CPP_MIN_LOG_LEVEL"] == "1"


def test_a_switched_process_never_switches_again():
    switched = cli.backend_switch("jax", "tensorflow", {})
    with pytest.raises(RuntimeError, match="--backend=jax"):
        cli.backend_switch("jax", "tensorflow", switched)


def test_default_output_is_outside_the_current_directory_and_the_source(
    tmp_path, monkeypatch
):
    clone = tmp_path / "clone"
    clone.mkdir()
    monkeypatch.chdir(clone)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    output = os.path.abspath(cli.default_output())
    assert not output.startswith(str(clone) + os.sep)
    assert not output.startswith(REPO + os.sep)
    assert not output.startswith(os.path.dirname(layerwise.__file__))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cli.default_output() == str(tmp_path / "cache" / "layerwise" / "demo.png")


def test_backend_flag_runs_the_demo_on_that_backend(tmp_path):
    # Another backend than this process's (the quickest to run): the console
    # script's entry point loads Keras first, so it must re-execute.
    loaded = keras.backend.backend()
    wanted = "torch" if loaded != "torch" else "tensorflow"
    output = tmp_path / "figure.png"
    environ = dict(os.environ, KERAS_BACKEND=loaded, XDG_CACHE_HOME=str(tmp_path))
    environ.pop("LAYERWISE_DEMO_REEXECUTED", None)
    entry_point = "import sys; from layerwise.demo.__main__ import main; sys.exit(main())"
    completed = subprocess.run(
        [sys.executable, "-c", entry_point, "--backend", wanted, "--quick",
         "--output", str(output)],
        cwd=REPO, env=environ, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"layerwise demo on {wanted} " in completed.stdout
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if "tensorflow" not in (loaded, wanted):
        # Nothing imported TensorFlow, so none of its log lines.
        assert "oneDNN" not in completed.stderr and "absl" not in completed.stderr


def test_shift_flag_names_one_shift():
    assert cli.parse_args([]).shift is None
    assert cli.parse_args(["--shift", "feature"]).shift == "feature"
    with pytest.raises(SystemExit):
        cli.parse_args(["--shift", "weather"])
