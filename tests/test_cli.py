"""Every command exits non-zero with a one-line reason on bad input."""
import subprocess
import sys

import pytest

from splitleak.cli.main import main

BAD = [
    (["edge", "--cloud", "127.0.0.1:1", "--model", "alexnet9000", "--frames", "1"], "unknown model"),
    (["edge", "--cloud", "127.0.0.1:1", "--model", "resnet18", "--split", "layer9"], "split"),
    (["edge", "--cloud", "127.0.0.1:1", "--source", "/no/such/clip.mp4"], "no such file"),
    (["edge", "--cloud", "127.0.0.1:1", "--link", "rate=fast"], "rate"),
    (["edge", "--cloud", "127.0.0.1:1", "--link", "loss=150%"], "loss"),
    (["edge", "--cloud", "nohostport"], "HOST:PORT"),
    (["edge", "--cloud", "127.0.0.1:1", "--weights", "/no/such/weights.pt"], "not found"),
    (["edge", "--cloud", "127.0.0.1:1", "--model", "lenet", "--split", "conv1", "--source", "synthetic",
      "--frames", "2", "--retry-for", "0.3", "--quiet"], "unreachable"),
    (["attack", "--recording", "/no/such/rec", "--attack", "do", "--out", "OUT"], "not found"),
    (["attack", "--recording", "REC", "--attack", "nope", "--out", "OUT"], "unknown attack"),
    (["attack", "--recording", "REC", "--attack", "do", "--out", "OUT", "--option", "warp=9"], "unknown option 'warp'"),
    (["evaluate", "--recon", "/no/such", "--truth", "/no/such", "--out", "OUT"], "not found"),
    (["cloud", "--listen", "127.0.0.1:http"], "HOST:PORT"),
    (["cloud", "--listen", "127.0.0.1:0", "--tls-cert", "/no/cert.pem", "--tls-key", "/no/key.pem"], "cannot read"),
    (["cloud", "--listen", "127.0.0.1:0", "--token", "a", "--tap-token", "a"], "must differ"),
    (["attack", "--recording", "REC", "--attack", "do", "--out", "OUT", "--device", "cuda:7"], "device"),
]


@pytest.mark.parametrize("argv, reason", BAD, ids=[" ".join(a[:1] + [reason]) for a, reason in BAD])
def test_bad_input_gives_one_line_and_exit_2(argv, reason, tmp_path, capsys):
    from splitleak.recording import RecordingWriter

    RecordingWriter(tmp_path / "rec").close()
    argv = [a.replace("REC", str(tmp_path / "rec")).replace("OUT", str(tmp_path / "out")) for a in argv]
    if "cuda" in " ".join(argv):
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and reason.lower() in err[-1].lower(), err
    assert not any("Traceback" in line for line in err)


@pytest.mark.slow
def test_console_script_reports_and_exits_non_zero():
    done = subprocess.run([sys.executable, "-m", "splitleak", "edge", "--cloud", "127.0.0.1:1", "--model", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("splitleak edge: error:")


def test_models_lists_split_points(capsys):
    assert main(["models", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out and "layer2" in out and "128x8x8" in out


COMMANDS = ["models", "cloud", "edge", "tap", "attack", "evaluate", "attack-live", "train-victim", "train-prior",
            "enhance", "train-sr", "report", "audit", "run", "demo"]
HELP_WITHOUT_TORCH = """
import argparse, contextlib, io, sys
from splitleak.cli.main import build_parser, main
sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
print("commands:", *sub.choices)
for argv in [["--help"]] + [[command, "--help"] for command in sys.argv[1:]]:
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
        main(argv)
    print(argv[0], "usage:" in text.getvalue())
print("torch loaded:", sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


def test_help_lists_every_command_and_loads_no_torch():
    """The parser is built from the actors' cli modules, and no --help pays for importing torch."""
    done = subprocess.run([sys.executable, "-c", HELP_WITHOUT_TORCH, *COMMANDS], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "commands: " + " ".join(COMMANDS)
    assert lines[1:-1] == [f"{command} True" for command in ["--help", *COMMANDS]]
    assert lines[-1] == "torch loaded: []"
