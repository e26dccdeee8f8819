"""`make demo` as a user runs it (synthetic data, so the test needs no download): the whole
loop finishes with exit code 0, and its output shows each step happening."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_demo_runs_the_whole_loop(tmp_path, stack_name):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "devstack.demo",
            "--synthetic",
            "--stack-name",
            stack_name,
            "--state-dir",
            str(tmp_path),
            # The path without a Docker engine, whatever this machine has; the container path's
            # parts are tests/containers' (docker run of the image, the docker backend).
            "--training",
            "local",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = done.stdout
    assert done.returncode == 0, output[-3000:] + done.stderr[-3000:]
    assert [int(n) for n in re.findall(r"^\[(\d)/8\]", output, re.MULTILINE)] == list(range(1, 9))
    assert "data: synthetic data (asked for with --synthetic)" in output
    assert "training path: training entrypoint as a local process (asked for)" in output
    first = re.search(r"served model (v\S+) after", output).group(1)
    # Scored over HTTP with the first model, frauds among the transactions.
    assert re.search(rf"POST http://127\.0\.0\.1:\d+/predict\?explain=true -> 200, model {first}", output)
    assert output.count("    FRAUD -> p=") >= 3
    assert "incoming/clean batch.csv: 20,000 rows, status NO_DRIFT" in output
    assert "incoming/later-labelled.csv.gz: 20,000 rows, status DRIFT" in output
    assert "QUARANTINED quarantine/broken.csv: column Time on line 2" in output
    assert re.search(r"retraining: started \(job retrain-", output)
    gate = re.search(r"gate: (PROMOTED|not promoted)", output).group(1)
    answered = re.findall(r"-> 200, model (v\S+)", output)
    # After the retraining /predict answers with the new model when the gate promoted it.
    assert (answered[-1] != first) == (gate == "PROMOTED")
    assert re.search(r"demo finished in \d+ s", output)
    assert (tmp_path / "outputs.json").exists()
