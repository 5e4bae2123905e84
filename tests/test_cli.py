"""Command lines: --help before TensorFlow, one-line errors with exit status 2, --debug, quiet TF."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from strongpose import cli

REPO = Path(__file__).resolve().parents[1]
ORACLE = REPO / "benchmarks" / "decode_oracle.py"
SPEED = REPO / "benchmarks" / "model_speed.py"
CONVERT = "strongpose.convert_checkpoint"
HEAVY = ("tensorflow", "keras", "jax")

# Runs one command line in a fresh interpreter as `python -m ...` / `python script.py` would,
# then reports its exit status and which heavy modules it had imported.
_PROBE = """
import runpy, sys
target, argv = sys.argv[1], sys.argv[2:]
sys.argv = [target, *argv]
try:
    if target.endswith(".py"):
        runpy.run_path(target, run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as exc:
    code = exc.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(%r))
print("PROBE", code, ",".join(heavy) or "-")
""" % (HEAVY,)


def _env() -> dict:
    """The user's environment: no TF_CPP_MIN_LOG_LEVEL (conftest sets one for this process)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def probe(target, *argv):
    """(exit status, heavy modules imported, stdout without the probe line, stderr)."""
    out = subprocess.run([sys.executable, "-c", _PROBE, str(target), *argv], capture_output=True,
                         text=True, cwd=REPO, env=_env(), timeout=300)
    lines = out.stdout.splitlines()
    _, code, heavy = lines[-1].split(" ")
    return int(code if code != "None" else 0), heavy, "\n".join(lines[:-1]), out.stderr


def run_cli(*args):
    """A command line as a user types it: ``python <args>``."""
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=_env(), timeout=300)


# ------------------------------------------------------------------- --help
@pytest.mark.parametrize("target", [CONVERT, ORACLE, SPEED], ids=["convert_checkpoint", "decode_oracle", "model_speed"])
def test_help_is_fast_and_imports_no_tensorflow(target):
    code, heavy, stdout, stderr = probe(target, "--help")
    assert code == 0 and heavy == "-", (heavy, stderr)
    assert "usage:" in stdout and "--debug" in stdout
    assert stderr == ""


# ----------------------------------------------------------- one-line errors
@pytest.mark.parametrize("args, needle", [
    (["-m", CONVERT, "ckpt", "out.h5"], "must end in .weights.h5"),
    (["-m", CONVERT, "no_such.ckpt", "out.weights.h5", "--depth", "tiny"], "no_such.ckpt"),
    (["-m", CONVERT, "a.ckpt", "b.weights.h5", "--depth", "34"], "argument --depth"),
    ([SPEED, "--config", "no_such_preset"], "no preset 'no_such_preset'"),
    ([SPEED, "codec.disk_radius=.inf"], "codec.disk_radius: inf is not a finite number"),
    ([SPEED, "--size", "400"], "model.input_size"),
    ([SPEED, "--batch", "0"], "--batch"),
    ([ORACLE, "--annotations", "x.json", "--stride", "4"], "argument --stride"),
    ([ORACLE], "--annotations"),
], ids=["convert-output", "convert-missing", "convert-depth", "speed-preset", "speed-inf",
        "speed-size", "speed-batch", "oracle-stride", "oracle-required"])
def test_bad_input_is_one_line_and_status_2(args, needle):
    out = run_cli(*args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert ": error: " in lines[0] and needle in lines[0]
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_error_after_tensorflow_loads_is_one_quiet_line(tmp_path):
    """decode_oracle imports TensorFlow before it reads the file: no TF start-up lines either."""
    out = run_cli(ORACLE, "--annotations", tmp_path / "missing.json")
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("decode_oracle.py: error: "), out.stderr
    assert "missing.json" in lines[0]


def test_debug_shows_the_traceback():
    out = run_cli("-m", CONVERT, "ckpt", "out.h5", "--debug")
    assert out.returncode == 1
    assert "Traceback (most recent call last)" in out.stderr
    assert out.stderr.rstrip().endswith("ValueError: output 'out.h5' must end in .weights.h5")
    out = run_cli(SPEED, "--config", "no_such_preset", "--debug")
    assert out.returncode == 1 and "ConfigError: config: no preset" in out.stderr


# --------------------------------------------------------------- cli.run itself
def _raiser(exc):
    def main(argv):
        raise exc
    return main


@pytest.mark.parametrize("exc, text", [
    (ValueError("bad value"), "tool: error: bad value"),
    (FileNotFoundError(2, "No such file or directory", "x.json"),
     "tool: error: [Errno 2] No such file or directory: 'x.json'"),
    (KeyError("annotations"), "tool: error: KeyError: 'annotations'"),
])
def test_run_maps_expected_errors_to_status_2(exc, text, capsys):
    assert cli.run(_raiser(exc), [], prog="tool") == 2
    assert capsys.readouterr().err == text + "\n"
    with pytest.raises(type(exc)):
        cli.run(_raiser(exc), ["--debug"], prog="tool")


def test_run_returns_the_status_and_lets_bugs_raise(capsys):
    assert cli.run(lambda argv: 0, []) == 0
    assert cli.run(lambda argv: 3, []) == 3
    assert cli.run(lambda argv: {"AP": 1.0}, []) == 0          # a benchmark's summary
    assert cli.run(lambda argv: None, []) == 0
    with pytest.raises(TypeError):                              # not bad input: a bug
        cli.run(_raiser(TypeError("oops")), [], prog="tool")
    assert cli.run(_raiser(KeyboardInterrupt()), [], prog="tool") == 130
    assert capsys.readouterr().err == "tool: interrupted\n"
    seen = []
    cli.run(lambda argv: seen.append(argv), ["a", "--debug"])
    assert seen == [["a", "--debug"]]                           # main parses --debug itself


def test_long_messages_are_capped(capsys):
    cli.run(_raiser(ValueError("\n".join(f"line {i}" for i in range(40)))), [], prog="tool")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "tool: error: line 0" and len(err) == 13 and "28 more lines" in err[-1]


def test_argument_parser_has_debug_and_one_line_errors(capsys):
    parser = cli.ArgumentParser(prog="tool")
    parser.add_argument("--n", type=int)
    assert parser.parse_args(["--debug"]).debug is True
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--n", "x"])
    assert info.value.code == 2
    assert capsys.readouterr().err == "tool: error: argument --n: invalid int value: 'x' (see --help)\n"


def test_startup_noise_follows_the_log_level():
    onednn = ("I0000 00:00:1795780001.900036    4933 port.cc:153] oneDNN custom operations are on. "
              "You may see slightly different numerical results ...")
    cuda = "E0000 00:00:1795780001.9  4933 cuda_dnn.cc:8579] Unable to register cuDNN factory"
    notice = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
    assert cli.is_startup_noise(onednn, 1) and not cli.is_startup_noise(onednn, 0)
    assert cli.is_startup_noise(cuda, 3) and not cli.is_startup_noise(cuda, 2)
    assert cli.is_startup_noise(notice, 3) and not cli.is_startup_noise(notice, 0)
    assert not cli.is_startup_noise("Traceback (most recent call last):", 3)
    assert not cli.is_startup_noise("UserWarning: something real", 3)
