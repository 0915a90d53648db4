"""The command line: `python -m layerwise.demo` and `layerwise-demo`.

Keras chooses its backend once, when it is first imported, and `import
layerwise` imports it: by the time the flags are read, the backend is
fixed. A `--backend` other than the loaded one therefore re-executes the
demo in a fresh interpreter, with `KERAS_BACKEND` (and
`TF_CPP_MIN_LOG_LEVEL=3`) set before anything imports Keras.
"""

import argparse
import contextlib
import os
import subprocess
import sys
import time

import keras

import layerwise
from layerwise.demo import data
from layerwise.demo import experiment
from layerwise.demo import plot
from layerwise.demo import report
from layerwise.demo import results_file

BACKENDS = ("tensorflow", "jax", "torch")
# Set in the re-executed process: if Keras still loads another backend
# there, re-executing again would loop.
_REEXECUTED = "LAYERWISE_DEMO_REEXECUTED"


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m layerwise.demo",
        description="Surgical fine-tuning, measured: a CNN pretrained on "
        "digits 0-4 is fine-tuned to three shifts (input-level: "
        "four corruptions; feature-level: new sub-populations; output-level: "
        "labels remapped) from 10 labels per class by full fine-tuning, "
        "tuning only one block, lw.layer_decay, lw.discriminative, gradual "
        "unfreezing, Auto-RGN and the trust ratio; each strategy's rate "
        "chosen on a validation split, then 5 seeds. Prints the table shift x "
        "strategy and writes a PNG figure.",
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, default=None,
        help="Keras backend (default: the one Keras loaded, from "
        "$KERAS_BACKEND or ~/.keras/keras.json).",
    )
    parser.add_argument(
        "--output", default=None,
        help=f"path of the PNG figure (default: {default_output()}).",
    )
    parser.add_argument(
        "--shift", choices=data.SHIFTS, default=None,
        help="run one shift only (default: all three).",
    )
    parser.add_argument(
        "--save-results", metavar="FILE", default=None,
        help="also write every run's measurements to FILE (JSON).",
    )
    parser.add_argument(
        "--load-results", metavar="FILE", default=None,
        help="run nothing: print the report and draw the figure of FILE "
        "(written by --save-results).",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="a few steps of everything, for tests (the numbers mean nothing).",
    )
    return parser.parse_args(argv)


def default_output():
    """`$XDG_CACHE_HOME/layerwise/demo.png`, else `~/.cache/layerwise/demo.png`:
    outside the source tree and the current directory."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return os.path.join(cache, "layerwise", "demo.png")


def backend_switch(wanted, loaded, environ):
    """The environment to re-execute the demo with, or `None` to run here.

    The new process imports this very copy of `layerwise` (its folder goes
    first on `PYTHONPATH`), wherever it is started from.

    Args:
        wanted: The backend asked for with `--backend`, or `None`.
        loaded: The backend Keras loaded in this process.
        environ: This process's environment (a mapping).

    Returns:
        `None` if `wanted` is `None` or `loaded`; else a copy of `environ`
        with `KERAS_BACKEND=wanted`, `TF_CPP_MIN_LOG_LEVEL` defaulting to
        3, this `layerwise` first on `PYTHONPATH`, and a marker that
        forbids a second switch.

    Raises:
        RuntimeError: if this process was already re-executed for
            `wanted` and Keras still loaded another backend.
    """
    if wanted is None or wanted == loaded:
        return None
    if environ.get(_REEXECUTED):
        raise RuntimeError(
            f"`--backend` must be a backend Keras can load. Received: "
            f"--backend={wanted}, but with KERAS_BACKEND="
            f"{environ.get('KERAS_BACKEND')} Keras loaded {loaded}."
        )
    environ = dict(environ)
    environ["KERAS_BACKEND"] = wanted
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    root = os.path.dirname(os.path.dirname(os.path.abspath(layerwise.__file__)))
    paths = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    environ["PYTHONPATH"] = os.pathsep.join([root] + paths)
    environ[_REEXECUTED] = "1"
    return environ


@contextlib.contextmanager
def _one_thread_per_op(backend):
    if backend != "torch":
        yield
        return
    import torch

    # This network's ops take microseconds: torch's intra-op threads cost
    # more in waiting for each other (spinning, on a busy machine: ten times
    # the CPU time, measured) than they save.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def main(argv=None):
    """Runs the demo; returns the process exit status.

    Args:
        argv: The arguments, without the program name (default:
            `sys.argv[1:]`).

    Returns:
        0, or the exit status of the re-executed demo.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    environ = backend_switch(args.backend, keras.backend.backend(), os.environ)
    if environ is not None:
        command = [sys.executable, "-m", "layerwise.demo", *argv]
        returncode = subprocess.run(command, env=environ).returncode
        since_start = seconds_since_process_start()
        if since_start is not None:
            print(f"The whole command, with the switch of backend, took {since_start:.0f} s wall.")
        return returncode
    run(args)
    return 0


def run(args):
    """Runs the experiment in this process (or reads it from
    `--load-results`), prints the report, writes the figure; returns the
    `Results`."""
    if args.load_results:
        results = results_file.load(args.load_results)
        print(f"Results read from {args.load_results}, measured on {results.backend}.")
        _show(results, args)
        return results
    start_wall = time.perf_counter()
    backend = keras.backend.backend()
    protocol = experiment.QUICK if args.quick else experiment.DEFAULT
    print(
        f"layerwise demo on {backend} (Keras {keras.version()})"
        + (", --quick: the numbers mean nothing" if args.quick else "")
        + "\n",
        flush=True,
    )
    with _one_thread_per_op(backend):
        shifts = data.SHIFTS if args.shift is None else (args.shift,)
        results = experiment.run_experiment(protocol, shifts=shifts)
    _show(results, args)
    if args.save_results:
        results_file.save(results, args.save_results)
        print(f"Results written to {os.path.abspath(args.save_results)}")
    print(_time_taken(time.perf_counter() - start_wall, backend))
    return results


def _show(results, args):
    print("\n" + report.report(results) + "\n")
    output = os.path.abspath(args.output or default_output())
    plot.plot(results, output)
    print(f"Figure written to {output}")


def _time_taken(since_run, backend):
    """The line with the time the command took: wall time since the process
    started (start-up and imports included) where the OS says, CPU time of
    the whole process."""
    since_start = seconds_since_process_start()
    wall = (
        f"{since_start:.0f} s wall since the process started ({since_run:.0f} s "
        "after start-up and imports)"
        if since_start is not None
        else f"{since_run:.0f} s wall after start-up and imports"
    )
    return (
        f"Took {wall}, {time.process_time():.0f} s CPU (user+sys, all threads, "
        f"imports included) on {backend}."
    )


def seconds_since_process_start():
    """Wall seconds since this process started, read from Linux's `/proc`;
    `None` where there is none."""
    try:
        with open("/proc/self/stat") as f:
            # Field 22, the start time in clock ticks after boot; counted
            # after the command name, which may hold spaces.
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
