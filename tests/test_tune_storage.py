"""genlab tune's study database and its workers: several worker processes on one study (SQLite,
a journal file, PostgreSQL started here from Debian's binaries), and a worker killed with SIGKILL
mid-trial (its trial is marked failed, every finished trial is kept, the study resumes)."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import genlab_cmd, subprocess_env
from test_tune import TINY

SPACE = ["--search", "lr=logfloat:1e-3:3e-2", "--search", "model.latent_dim=int:2:8", "--pruner", "none", "--no-plots"]


def _tune(*args: str) -> list[str]:
    return genlab_cmd("tune", "vae-digits", *TINY, *SPACE, *args)


def _study(storage: str, name: str):
    import optuna

    from genlab.tuning.storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(storage, Path(".")).storage)


def _check_shared(trials, expected: int) -> set[int]:
    """`expected` finished trials, numbered 0..expected-1 without a repeat; returns the worker pids."""
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(expected)), numbers
    assert all(t.state.name == "COMPLETE" for t in trials), [(t.number, t.state.name) for t in trials]
    return {t.user_attrs["worker"]["pid"] for t in trials}


def test_two_workers_share_one_study_in_a_journal_file(tmp_path):
    out, url = tmp_path / "study", f"journal:{tmp_path / 'study.log'}"
    result = subprocess.run(_tune("--workers", "2", "--trials", "4", "--study", "shared", "--out", str(out), "--storage", url),
                            env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 workers, 1 thread(s) each" in result.stderr
    pids = _check_shared(_study(url, "shared").trials, 4)
    assert len(pids) == 2  # both workers ran trials
    assert "[worker 0] trial" in result.stderr and "[worker 1] trial" in result.stderr
    assert sorted(p.name for p in (out / "trials").iterdir()) == [f"trial-{n:04d}" for n in range(4)]
    assert not (out / "study.db").exists()  # the journal is the study's only database


# ----------------------------------------------------------------------------- PostgreSQL


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1, in a temporary folder, as a non-root user
    (the server refuses to run as root): initdb, pg_ctl start, and pg_ctl stop after the tests."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (sh scripts/install-postgres.sh installs Debian's postgresql)")
    root = Path(tempfile.mkdtemp(prefix="genlab-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = "postgres" if _user_exists("postgres") else "nobody"
        prefix = ["runuser", "-u", user, "--"]
        shutil.chown(root, user)
    port = _free_port()
    data, log = root / "data", root / "server.log"
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "genlab", "-N", "--no-locale",
                    "-E", "UTF8"], check=True, capture_output=True, timeout=120)
    started = subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                              f"-h 127.0.0.1 -p {port} -k {root} -F", "start"], capture_output=True, text=True, timeout=90)
    assert started.returncode == 0, started.stderr + (log.read_text() if log.exists() else "")
    try:
        yield f"postgresql://genlab@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def test_two_commands_share_a_study_on_postgresql(tmp_path, postgres_url):
    """As two machines would: the same command twice, each with its own study folder, one database."""
    args = ["--trials", "3", "--study", "pg", "--storage", postgres_url]
    first = subprocess.Popen(_tune(*args, "--out", str(tmp_path / "a")), env=subprocess_env(), stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(_tune(*args, "--out", str(tmp_path / "b")), env=subprocess_env(), stderr=subprocess.PIPE,
                              text=True)
    errors = [process.communicate(timeout=180)[1] for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, errors[0][-2000:] + errors[1][-2000:]
    trials = _study(postgres_url, "pg").trials
    pids = _check_shared(trials, 6)
    assert pids == {first.pid, second.pid}  # both wrote trials
    for process, folder in ((first, "a"), (second, "b")):
        mine = [t for t in trials if t.user_attrs["worker"]["pid"] == process.pid]
        assert len(mine) == 3
        assert all(Path(t.user_attrs["run_dir"]).parent == tmp_path / folder / "trials" for t in mine)
    assert all("postgresql+psycopg://genlab@127.0.0.1" in err for err in errors)  # shown with the driver genlab uses
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["counts"]["complete"] >= 3 and summary["storage"].startswith("postgresql+psycopg://genlab@")


# ----------------------------------------------------------------------------- a worker killed mid-trial


def test_two_workers_share_a_sqlite_study_and_one_killed_mid_trial_loses_nothing_finished(tmp_path):
    """--workers 2 on the default SQLite file; once a worker has finished a trial, it is killed
    with SIGKILL in the middle of its next: that trial is marked failed, the other worker goes on,
    every finished trial is kept, and the study resumes by name."""
    out = tmp_path / "study"
    slow = ["steps=240", "train.eval_every=80"]  # long enough trials to be caught mid-way
    command = subprocess.Popen(genlab_cmd("tune", "vae-digits", *TINY, *slow, *SPACE, "--workers", "2", "--trials", "5",
                                          "--study", "killed", "--out", str(out)),
                               env=subprocess_env(), stderr=subprocess.PIPE, text=True)
    url = f"sqlite:///{out / 'study.db'}"
    victim, study = None, None
    deadline = time.time() + 120
    while victim is None and time.time() < deadline and command.poll() is None:
        time.sleep(0.05)
        if study is None and (out / "trials").is_dir():  # the first trial has started: the study exists
            study = _study(url, "killed")
        if study is None:
            continue
        trials = study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state.name == "COMPLETE"]
        workers = {t.user_attrs["worker"]["pid"] for t in finished}
        # A worker that has finished a trial, early in its next one (before step 80 of 240: not near its end).
        # Not "once both have finished one": a worker that starts late may finish its first trial only when the
        # other is on the study's last, and then no trial is early enough to be caught.
        running = [t for t in trials if t.state.name == "RUNNING" and "worker" in t.user_attrs
                   and t.user_attrs["worker"]["pid"] in workers and not t.intermediate_values]
        if running:
            victim = running[0]
            before = {t.number: t.value for t in finished}
            os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
    assert victim is not None, "no trial was caught running"
    err = command.communicate(timeout=180)[1]
    assert command.returncode == 0, err[-3000:]
    assert "ended with signal 9" in err
    trials = {t.number: t for t in _study(url, "killed").trials}
    assert sorted(trials) == list(range(5))  # no number repeats; the other worker went on until the run's trials were used
    assert victim.user_attrs["worker"]["pid"] != command.pid  # a worker process, not the command
    killed = trials[victim.number]
    assert killed.state.name == "FAIL" and killed.user_attrs["outcome"] == "lost"
    assert all(trials[n].state.name == "COMPLETE" and trials[n].value == v for n, v in before.items())
    assert all(t.state.name == "COMPLETE" for n, t in trials.items() if n != victim.number)
    # the study resumes by name: one more trial, everything finished before is kept
    result = subprocess.run(genlab_cmd("tune", "--study", "killed", "--out", str(out), "--trials", "1", "--no-plots"),
                            env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    after = {t.number: t for t in _study(url, "killed").trials}
    assert sorted(after) == list(range(6))
    assert all(after[n].value == t.value and after[n].state == t.state for n, t in trials.items())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"complete": 5, "fail": 1}
