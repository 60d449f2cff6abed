import subprocess
import sys

import tctseg
from tctseg.cli import main


def test_version_and_help(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert tctseg.__version__ in capsys.readouterr().out
    assert main([]) == 0
    assert "Task Consistency Training" in capsys.readouterr().out


def test_console_script_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "tctseg", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "usage: tctseg" in out.stdout
