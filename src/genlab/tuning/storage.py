"""Where a study lives, and the trials whose worker died.

    (default)                         sqlite:///STUDY_DIR/study.db — one file beside the trials
    --storage sqlite:///path/x.db     any SQLAlchemy URL; postgresql://user:pass@host/db shares a
    --storage postgresql://...        study between machines (the psycopg driver is used when psycopg2 is absent)
    --storage journal:path/x.log      Optuna's journal file: appends only, safe on one machine's disk (and NFS)

A finished trial is committed to the database (or appended to the journal) the moment it ends,
so killing a worker loses only the trial it was running. That trial stays RUNNING in the
database until someone notices: every worker, before each trial, fails the RUNNING trials of
dead processes on its own machine (trials record their host, process id and the process's
start time, so a reused id is not mistaken for the worker); on database storage a heartbeat
(every HEARTBEAT_S seconds; stale after GRACE_S) catches workers that died on other machines.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import GenlabError

HEARTBEAT_S = 60
GRACE_S = 180
DEFAULT_FILE = "study.db"
HOST = socket.gethostname()
JOURNAL_PREFIX = "journal:"


@dataclass
class StudyStorage:
    storage: object  # an Optuna storage
    url: str  # as a worker reopens it (may hold a password: never printed or written)
    shown: str  # for messages and files: the password hidden
    networked: bool  # a database server other machines may share (not a file on this one)


def default_url(study_dir: Path) -> str:
    return f"sqlite:///{(Path(study_dir) / DEFAULT_FILE).resolve()}"


def open_storage(url: str | None, study_dir: Path) -> StudyStorage:
    """The study database at `url` (default: a SQLite file in `study_dir`), connected: a URL that
    cannot be read or reached is a GenlabError here, before any trial runs."""
    if url is None:
        Path(study_dir).mkdir(parents=True, exist_ok=True)
        url = default_url(study_dir)
    if url.startswith(JOURNAL_PREFIX):
        return _journal(url)
    return _database(url)


def _journal(url: str) -> StudyStorage:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(url[len(JOURNAL_PREFIX):].removeprefix("//")).expanduser()
    if not path.name or not path.parent.is_dir():
        raise GenlabError(f"--storage {url}: the journal's folder {path.parent} does not exist",
                          "write it as journal:PATH/NAME.log in an existing folder")
    try:
        storage = JournalStorage(JournalFileBackend(str(path)))
    except OSError as e:
        raise GenlabError(f"cannot open the journal {path}: {e.strerror or e}", "choose a writable file") from None
    return StudyStorage(storage, url, url, networked=False)


def _database(url: str) -> StudyStorage:
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise GenlabError(f"cannot read --storage {url!r}",
                          "give a SQLAlchemy URL (sqlite:///study.db, postgresql://user@host/db) or journal:PATH") from None
    backend = parsed.get_backend_name()
    if parsed.drivername == "postgresql" and importlib.util.find_spec("psycopg2") is None \
            and importlib.util.find_spec("psycopg") is not None:
        parsed = parsed.set(drivername="postgresql+psycopg")  # genlab pins psycopg 3
    shown = parsed.render_as_string(hide_password=True)
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not Path(parsed.database).expanduser().resolve().parent.is_dir():
        raise GenlabError(f"cannot reach the study database {shown}: its folder does not exist", "create the folder first")
    connect_args = {"timeout": 60} if backend == "sqlite" else {"connect_timeout": 10} if backend == "postgresql" else {}
    return StudyStorage(_connect(parsed.render_as_string(hide_password=False), shown, connect_args), url, shown,
                        networked=backend != "sqlite")


def _connect(url: str, shown: str, connect_args: dict):
    import sqlalchemy.exc
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RDBStorage

    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)  # the heartbeat: experimental since Optuna 2.9
                return RDBStorage(url, engine_kwargs={"connect_args": connect_args}, heartbeat_interval=HEARTBEAT_S,
                                  grace_period=GRACE_S)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as e:
            error = e  # two workers creating the tables of a new database at once: the loser tries again
            if attempt < 2:
                time.sleep(1.0)
                continue
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, RuntimeError, ValueError, OSError) as e:
            error = e
        break
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()
    raise GenlabError(f"cannot reach the study database {shown}: {reason[0][:300] if reason else type(error).__name__}",
                      "check the URL, that the server runs and accepts this user, and its driver "
                      "(psycopg for postgresql://)")


# ----------------------------------------------------------------------------- trials of dead workers


def _process_start(pid: int) -> str | None:
    """The process's start time since boot (Linux), or None when there is no such live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie has ended: only its parent has not reaped it


def worker_identity() -> dict:
    """What a trial records about the process running it."""
    return {"host": HOST, "pid": os.getpid(), "started": _process_start(os.getpid())}


def _alive(worker: dict) -> bool:
    pid = int(worker.get("pid", -1))
    if pid <= 0:
        return False
    if Path("/proc").is_dir():
        return _process_start(pid) == worker.get("started")
    try:  # without /proc: the process id alone
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_lost_trials(study) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker process on this machine is gone; their numbers."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if not worker or worker.get("host") != HOST or _alive(worker):
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "outcome", "lost")
            study._storage.set_trial_user_attr(trial._trial_id, "error", f"its worker (process {worker['pid']}) ended mid-trial")
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # another worker got there first
        failed.append(trial.number)
    return failed
