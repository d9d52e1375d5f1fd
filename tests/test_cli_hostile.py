"""A careless operator's command lines: each is one line on stderr and exit 2 before any work starts.

No traceback, no SIGABRT from gRPC's core, no hang, no huge allocation. Placeholders in the argv
(CERT, KEY, CA, ...) name files made per test. Cases that could abort the process (a TLS
certificate without its key) or serve forever (the cloud) run as a subprocess with a timeout, so a
regression fails the test instead of killing or hanging pytest; the rest run in-process.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from splitleak.cli.main import main

pytest.importorskip("cryptography")
from pki import make_pki  # noqa: E402

# An edge that would fail fast if a check let it through: nothing listens on port 1, no retries.
EDGE = ["edge", "--cloud", "127.0.0.1:1", "--model", "lenet", "--split", "conv1", "--source", "synthetic",
        "--frames", "2", "--size", "32", "--quiet", "--retry-for", "0"]
CLOUD = ["cloud", "--listen", "127.0.0.1:0"]
TAP = ["tap", "--cloud", "127.0.0.1:1", "--record", "OUT"]
LIVE = ["attack-live", "--cloud", "127.0.0.1:1", "--attack", "do", "--out", "OUT"]
ATTACK = ["attack", "--recording", "REC", "--attack", "do"]
EVALUATE = ["evaluate", "--recon", "OUT", "--truth", "OUT"]
VICTIM = ["train-victim", "--epochs", "1"]
PRIOR = ["train-prior", "--source", "synthetic", "--steps", "1"]
UNDER_FILE = "FILE/sub"  # a path under a regular file: nothing can be created there

TLS_PAIRS = {  # (argv tail, reason) for every command that takes TLS files
    "cert without key": (["--tls-cert", "CERT"], "--tls-cert needs --tls-key"),
    "key without cert": (["--tls-key", "KEY"], "--tls-key needs --tls-cert"),
}
TLS_CLIENT_FILES = {
    "missing ca": (["--tls-ca", "MISSING"], "no such file"),
    "ca is a folder": (["--tls-ca", "DIR"], "not a regular file"),
    "ca not pem": (["--tls-ca", "NOTPEM"], "not a PEM certificate"),
    "ca is a key": (["--tls-ca", "KEY"], "not a PEM certificate"),
    "ca garbled": (["--tls-ca", "GARBLED"], "not a usable PEM CA"),
    "cert not pem": (["--tls-cert", "NOTPEM", "--tls-key", "KEY", "--tls-ca", "CA"], "not a PEM certificate"),
    "key not pem": (["--tls-cert", "CERT", "--tls-key", "NOTPEM", "--tls-ca", "CA"], "not a PEM private key"),
    "cert and key do not match": (["--tls-cert", "CERT", "--tls-key", "OTHERKEY", "--tls-ca", "CA"],
                                  "not a matching certificate"),
}

# (id, argv, reason): run in-process.
IN_PROCESS = [
    *[(f"edge {name}", EDGE + tail, reason) for name, (tail, reason) in TLS_CLIENT_FILES.items()],
    *[(f"tap {name}", TAP + tail, reason) for name, (tail, reason) in TLS_CLIENT_FILES.items()
      if name in ("missing ca", "ca not pem", "cert and key do not match")],
    *[(f"attack-live {name}", LIVE + tail, reason) for name, (tail, reason) in TLS_CLIENT_FILES.items()
      if name in ("ca is a folder", "key not pem")],
    ("edge --truth under a file", EDGE + ["--truth", UNDER_FILE], "is a file"),
    ("edge --truth is a file", EDGE + ["--truth", "FILE"], "not a folder"),
    ("edge --stats under a file", EDGE + ["--stats", UNDER_FILE + "/stats.json"], "is a file"),
    ("edge --stats is a folder", EDGE + ["--stats", "DIR"], "is a folder"),
    ("edge --size 100000", EDGE + ["--size", "100000"], "1..1024"),
    ("edge --size 0", EDGE + ["--size", "0"], "1..1024"),
    ("edge --size -1", EDGE + ["--size", "-1"], "1..1024"),
    ("edge --retry-for nan", EDGE + ["--retry-for", "nan"], "finite"),
    ("edge --retry-for inf", EDGE + ["--retry-for", "inf"], "finite"),
    ("edge --retry-for 1e400", EDGE + ["--retry-for", "1e400"], "finite"),
    ("edge --retry-for -1", EDGE + ["--retry-for", "-1"], ">= 0"),
    ("edge --lr nan", EDGE + ["--lr", "nan"], "finite"),
    ("edge --lr -inf", EDGE + ["--lr=-inf"], "finite"),
    ("edge --lr 0", EDGE + ["--lr", "0"], "> 0"),
    ("edge --lr 1e9", EDGE + ["--lr", "1e9"], "<= 100"),
    ("edge --label -1", EDGE + ["--label", "-1"], "class id"),
    ("edge --batch 100000", EDGE + ["--batch", "100000"], "1..1024"),
    ("edge --frames -5", EDGE + ["--frames", "-5"], ">= 1"),
    ("edge --frames 0", EDGE + ["--frames", "0"], ">= 1"),
    ("edge --seed -1", EDGE + ["--seed", "-1"], "got -1"),
    ("edge --seed 2^64", EDGE + ["--seed", str(2**64)], "got 18446744073709551616"),
    ("edge --threads 0", EDGE + ["--threads", "0"], "1..1024"),
    ("edge --threads 100000", EDGE + ["--threads", "100000"], "1..1024"),
    ("edge --cloud port 70000", ["edge", "--cloud", "127.0.0.1:70000", "--quiet"], "HOST:PORT"),
    ("edge --cloud port -1", ["edge", "--cloud", "127.0.0.1:-1", "--quiet"], "HOST:PORT"),
    ("edge --cloud no host", ["edge", "--cloud", ":50051", "--quiet"], "HOST:PORT"),
    ("edge --link rate nan", EDGE + ["--link", "rate=nanmbit"], "link spec"),
    ("edge --link delay -5ms", EDGE + ["--link", "delay=-5ms"], "link spec"),
    ("edge --link window 0", EDGE + ["--link", "window=0"], "link spec"),
    ("edge --link loss 150%", EDGE + ["--link", "loss=150%"], "link spec"),
    ("edge --stream-id ../x", EDGE + ["--stream-id", "../x"], "stream id"),
    ("edge --codec bad", EDGE + ["--codec", "fp64"], "invalid choice"),
    ("tap --record under a file", ["tap", "--cloud", "127.0.0.1:1", "--record", UNDER_FILE], "is a file"),
    ("tap --cloud port 99999", ["tap", "--cloud", "127.0.0.1:99999", "--record", "OUT"], "HOST:PORT"),
    ("tap --limit 0", TAP + ["--limit", "0"], ">= 1"),
    ("attack-live --out under a file", ["attack-live", "--cloud", "127.0.0.1:1", "--attack", "do", "--out",
                                        UNDER_FILE], "is a file"),
    ("attack-live --batch-timeout nan", LIVE + ["--batch-timeout", "nan"], "finite"),
    ("attack-live --batch-timeout -1", LIVE + ["--batch-timeout", "-1"], ">= 0"),
    ("attack-live --batch 100000", LIVE + ["--batch", "100000"], "1..1024"),
    ("attack --out under a file", ATTACK + ["--out", UNDER_FILE], "is a file"),
    ("attack --out is a file", ATTACK + ["--out", "FILE"], "not a folder"),
    ("attack --batch 100000", ATTACK + ["--out", "OUT", "--batch", "100000"], "1..1024"),
    ("attack --seed nan", ATTACK + ["--out", "OUT", "--seed", "nan"], "integer"),
    ("evaluate --out under a file", EVALUATE + ["--out", UNDER_FILE], "is a file"),
    ("evaluate --size 0", EVALUATE + ["--out", "OUT", "--size", "0"], "1..1024"),
    ("evaluate --size 100000", EVALUATE + ["--out", "OUT", "--size", "100000"], "1..1024"),
    ("evaluate --threshold nan", EVALUATE + ["--out", "OUT", "--threshold", "nan"], "finite"),
    ("evaluate --threshold inf", EVALUATE + ["--out", "OUT", "--threshold", "inf"], "finite"),
    ("train-victim --out under a file", VICTIM + ["--out", UNDER_FILE + "/w.pt"], "is a file"),
    ("train-victim --out is a folder", VICTIM + ["--out", "DIR"], "is a folder"),
    ("train-victim --size 5000", VICTIM + ["--out", "OUT/w.pt", "--size", "5000"], "1..1024"),
    ("train-victim --lr nan", VICTIM + ["--out", "OUT/w.pt", "--lr", "nan"], "finite"),
    ("train-victim --batch 0", VICTIM + ["--out", "OUT/w.pt", "--batch", "0"], "1..1024"),
    ("train-prior --out under a file", PRIOR + ["--out", UNDER_FILE], "is a file"),
    ("train-prior --size 100000", PRIOR + ["--out", "OUT", "--size", "100000"], "1..1024"),
    ("train-prior --lr inf", PRIOR + ["--out", "OUT", "--lr", "inf"], "finite"),
    ("train-prior --decoder-steps -1", PRIOR + ["--out", "OUT", "--decoder-steps", "-1"], ">= 0"),
    ("train-prior --preview -1", PRIOR + ["--out", "OUT", "--preview", "-1"], "0..64"),
    ("demo --out under a file", ["demo", "--out", UNDER_FILE], "is a file"),
    ("demo --size 100000", ["demo", "--out", "OUT", "--size", "100000"], "1..1024"),
    ("demo --tv nan", ["demo", "--out", "OUT", "--tv", "nan"], "finite"),
    ("demo --tv -1", ["demo", "--out", "OUT", "--tv", "-1"], ">= 0"),
    ("demo --frames 0", ["demo", "--out", "OUT", "--frames", "0"], ">= 1"),
    ("demo --codec bad", ["demo", "--out", "OUT", "--codec", "fp64"], "invalid choice"),
    ("models --size 0", ["models", "--size", "0"], "1..1024"),
    ("models --size -3", ["models", "--size", "-3"], "1..1024"),
    ("models --size 100000", ["models", "--size", "100000"], "1..1024"),
    ("missing required", ["edge"], "required: --cloud"),
    ("unknown command", ["edgy"], "invalid choice"),
]

# (id, argv, reason): run as a subprocess (gRPC's core would abort, or the cloud would serve forever).
SUBPROCESS = [
    *[(f"{command} {name}", base + tail, reason) for command, base in
      (("edge", EDGE), ("cloud", CLOUD), ("tap", TAP), ("attack-live", LIVE))
      for name, (tail, reason) in TLS_PAIRS.items()],
    ("cloud ca without cert", CLOUD + ["--tls-ca", "CA"], "needs both --tls-cert and --tls-key"),
    ("cloud cert not pem", CLOUD + ["--tls-cert", "NOTPEM", "--tls-key", "KEY"], "not a PEM certificate"),
    ("cloud cert and key do not match", CLOUD + ["--tls-cert", "CERT", "--tls-key", "OTHERKEY"],
     "not a matching certificate"),
    ("cloud missing ca", CLOUD + ["--tls-cert", "CERT", "--tls-key", "KEY", "--tls-ca", "MISSING"], "no such file"),
    ("cloud --record under a file", CLOUD + ["--record", UNDER_FILE], "is a file"),
    ("cloud --round-timeout nan", CLOUD + ["--round-timeout", "nan"], "finite"),
    ("cloud --round-timeout 0", CLOUD + ["--round-timeout", "0"], "> 0"),
    ("cloud --listen port 99999", ["cloud", "--listen", "127.0.0.1:99999"], "HOST:PORT"),
]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """The placeholders' files: a PKI, a plain file, a folder, a non-PEM file, an empty recording."""
    from splitleak.recording import RecordingWriter

    pki = make_pki(tmp_path)
    (tmp_path / "plain.txt").write_text("not a folder\n")
    (tmp_path / "notpem.txt").write_text("hello, I am not a certificate\n")
    (tmp_path / "garbled.pem").write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    (tmp_path / "folder").mkdir()
    RecordingWriter(tmp_path / "rec").close()
    return {"CERT": pki["server"][0], "KEY": pki["server"][1], "OTHERKEY": pki["client"][1], "CA": pki["ca"],
            "NOTPEM": str(tmp_path / "notpem.txt"), "GARBLED": str(tmp_path / "garbled.pem"),
            "FILE": str(tmp_path / "plain.txt"), "DIR": str(tmp_path / "folder"), "REC": str(tmp_path / "rec"),
            "MISSING": str(tmp_path / "missing.pem"), "OUT": str(tmp_path / "out")}


def _fill(argv: list[str], files: dict[str, str]) -> list[str]:
    out = []
    for arg in argv:
        head, sep, rest = arg.partition("/")
        out.append(files[head] + sep + rest if head in files else arg)
    return out


def _assert_one_line(code: int | None, stderr: str, reason: str) -> None:
    lines = stderr.strip().splitlines()
    assert code == 2, (code, lines)
    assert len(lines) == 1, lines
    assert "Traceback" not in stderr
    assert reason.lower() in lines[0].lower(), lines[0]


@pytest.mark.parametrize("argv, reason", [case[1:] for case in IN_PROCESS], ids=[case[0] for case in IN_PROCESS])
def test_in_process(argv, reason, files, capsys):
    try:
        code = main(_fill(argv, files))
    except SystemExit as exit:  # argparse's errors exit; SplitleakError's return 2
        code = exit.code
    _assert_one_line(code, capsys.readouterr().err, reason)
    assert not Path(files["OUT"]).exists(), "a refused command created its output folder"


@pytest.mark.slow  # a Python process per case
@pytest.mark.parametrize("argv, reason", [case[1:] for case in SUBPROCESS], ids=[case[0] for case in SUBPROCESS])
def test_subprocess(argv, reason, files):
    done = subprocess.run([sys.executable, "-m", "splitleak", *_fill(argv, files)], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parent.parent)
    assert done.returncode >= 0, f"killed by signal {-done.returncode}: {done.stderr[-2000:]}"
    _assert_one_line(done.returncode, done.stderr, reason)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
@pytest.mark.parametrize("flag", ["--truth", "--stats"])
def test_edge_output_in_a_read_only_folder(flag, files, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code = main(EDGE + [flag, str(locked / "x")])
    _assert_one_line(code, capsys.readouterr().err, "not writable")
