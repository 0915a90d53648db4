"""LayerwiseOptimizer under tf.distribute.MirroredStrategy (2 logical CPUs)."""

import os
import subprocess
import sys

from tests.conftest import only_on

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "mirrored_equivalence.py")


@only_on("tensorflow")
def test_mirrored_strategy_matches_single_device():
    result = subprocess.run(
        [sys.executable, SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("max_abs_diff")][-1]
    assert float(line.split()[1]) < 1e-6, line
