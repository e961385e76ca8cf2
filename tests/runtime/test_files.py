import subprocess
import sys

import pytest

from tinyship.runtime.files import writing_directory


def test_a_write_removes_leftovers_of_killed_writes_but_not_of_running_ones(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        killed = tmp_path / f".out.tmp-{dead.stdout.strip()}"
        other = tmp_path / f".out.tmp-{running.pid}"
        for leftover in (killed, other, tmp_path / f".out.old-{dead.stdout.strip()}"):
            leftover.mkdir()
        with writing_directory(tmp_path / "out") as tmp:
            (tmp / "file").write_text("whole")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", other.name])
        assert (tmp_path / "out" / "file").read_text() == "whole"
    finally:
        running.kill()


def test_a_failed_write_leaves_nothing_and_the_previous_version_stands(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "file").write_text("before")
    with pytest.raises(RuntimeError), writing_directory(out) as tmp:
        (tmp / "file").write_text("half")
        raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "file").read_text() == "before"
