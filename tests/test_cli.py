import json
import subprocess
import sys

import hdlfast
from hdlfast import cli


def test_info_reports_backends(capsys):
    assert cli.main(["info"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"cuda", "native", "numba", "default_cpu"}
    assert out["numba"]["built"]
    assert out == {**hdlfast.info()}


def test_demo_runs_on_digits(capsys):
    assert cli.main(["demo", "--k", "5"]) == 0
    out = capsys.readouterr().out
    assert "1797 points" in out and "neighbour accuracy" in out


def test_command_is_installed():
    res = subprocess.run([sys.executable, "-m", "hdlfast.cli", "info"], capture_output=True,
                         text=True, check=True)
    assert "native" in res.stdout
