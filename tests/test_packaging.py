"""The package as a user meets it: the sdist and wheel build, their metadata
passes `twine check`, and the wheel installed into a fresh virtual
environment runs the README's quick example.

Building does not depend on the Keras backend; these tests run on the JAX
leg of the suite only. No download: the build runs without isolation (with
the setuptools of this environment), and the new environment takes Keras,
NumPy and the backend from this one's site-packages through a `.pth` line,
which adds that directory but not its `.pth` files, so the editable install
of the source tree stays out of sight.
"""

import email.parser
import os
import pathlib
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest

import layerwise
from tests import doc_blocks
from tests.conftest import only_on

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = only_on("jax")


def _run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    # The wheel is built from the sdist, so a file missing from the sdist
    # is missing from the wheel too.
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)])
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


def test_sdist_and_wheel_carry_the_version_and_the_package(dist):
    sdist, wheel = dist
    version = layerwise.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    assert sdist.name == f"keras_layerwise-{version}.tar.gz"
    assert wheel.name == f"keras_layerwise-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = email.parser.Parser().parsestr(archive.read(
            f"keras_layerwise-{version}.dist-info/METADATA").decode())
    assert metadata["Name"] == "keras-layerwise" and metadata["Version"] == version
    assert "keras>=3.15" in metadata.get_all("Requires-Dist")
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert {"layerwise/__init__.py", "layerwise/_version.py", "layerwise/optim/optimizer.py",
            "layerwise/demo/__main__.py"} <= set(names)
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/"))]
    with tarfile.open(sdist) as archive:
        members = {m.name.split("/", 1)[1] for m in archive.getmembers() if "/" in m.name}
    assert {"pyproject.toml", "README.md", "LICENSE", "layerwise/_version.py"} <= members


def test_twine_accepts_the_metadata(dist):
    output = _run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dist)])
    assert output.count("PASSED") == 2, output


def _quick_example():
    """The Python blocks of the README's "Quick example" section, as one
    script."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    start = lines.index("## Quick example") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("## "))
    blocks, _ = doc_blocks.parse(text, "README.md")
    chosen = [b for b in blocks if start < b.line <= end]
    assert len(chosen) >= 2 and not any(b.not_runnable or b.backends for b in chosen)
    return chosen


_SCRIPT = """
import importlib.util, pathlib, sys
import keras, numpy as np
import layerwise
site = pathlib.Path(sys.argv[1]).resolve()
assert pathlib.Path(layerwise.__file__).resolve().is_relative_to(site), layerwise.__file__
spec = importlib.util.spec_from_file_location("doc_blocks", sys.argv[2])
doc_blocks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(doc_blocks)
blocks, _ = doc_blocks.parse(pathlib.Path(sys.argv[3]).read_text(), "README.md", sys.argv[3])
keras.utils.set_random_seed(1234)
namespace = {"__name__": "__main__"}
for number in map(int, sys.argv[4:]):
    doc_blocks.run(blocks[number - 1], namespace)
print("layerwise", layerwise.__version__, "from", layerwise.__file__)
"""


def test_the_wheel_installed_in_a_fresh_environment_runs_the_quick_example(dist, tmp_path):
    _, wheel = dist
    env = tmp_path / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env)])
    python = env / "bin" / "python"
    site = pathlib.Path(_run([str(python), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    base = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "base_environment.pth").write_text("\n".join(sorted(base)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", "--disable-pip-version-check", "-q", str(wheel)])

    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    workdir = tmp_path / "work"
    workdir.mkdir()
    numbers = [str(b.number) for b in _quick_example()]
    output = _run([str(python), "-c", _SCRIPT, str(site), doc_blocks.__file__,
                   str(ROOT / "README.md"), *numbers], cwd=workdir, env=clean)
    assert f"layerwise {layerwise.__version__} from {site}" in output
    # The example printed its plan, as the README shows it.
    assert "4 rules" in output
