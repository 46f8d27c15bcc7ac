"""The local SQLite tracking database: created whole, checked once per process, in WAL mode.

MLflow's public path makes the schema: a ``SqlAlchemyStore`` (what ``MlflowClient`` opens for
a ``sqlite:///`` URI) creates every table of an empty database and refuses one at another
schema version (mlflow/mlflow v3.17.2: mlflow/store/tracking/sqlalchemy_store.py,
``SqlAlchemyStore.__init__``, lines 405-409 and 432). What aprflow adds:

* a new database is made in a temporary file under an exclusive file lock and renamed into
  place, so a kill or a second run during MLflow's ~60 migrations never leaves a half-migrated
  ``mlflow.db``;
* MLflow's migrations run once per MLflow version, not once per database (about a second each
  time; every local run and many tests make one): a new database starts as a copy of a schema
  kept in the user's cache (:func:`schema_template`), without MLflow's default experiment,
  which MLflow adds when it opens the copy, under this process' artifact root, as it does in
  a database it migrated (sqlalchemy_store.py, ``SqlAlchemyStore.__init__``, lines 511-517);
* an existing database is compared, by its ``alembic_version``, with the revision this MLflow
  creates (remembered per MLflow version in ``<db>.schema.json``): one left half-migrated and
  holding no runs is copied aside and rebuilt in place; one with runs at another version is one
  clear error with the fix (``mlflow db upgrade``), never migrated behind the user's back;
* the database is switched to SQLite's write-ahead log (WAL): readers no longer wait for a
  writer, which is what parallel tasks on one file do most (MLflow waits up to 20 s for a lock
  itself: ``PRAGMA busy_timeout = 20000`` in mlflow/store/db/utils.py, line 157). WAL needs a
  local file system (not NFS), which is where the default ``runs/mlflow.db`` lies.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

from components.common.files import user_cache_dir
from components.common.progress import report
from components.common.tracking.client import TRACKING_ENV, TrackingError, is_transient

_PREPARED: set[Path] = set()


def prepare_sqlite(db: Path) -> None:
    """Makes ``db`` a complete MLflow database in WAL mode, once per process and path.

    Under an exclusive lock on ``<db>.lock`` (two runs starting at once take turns): a missing
    or empty database is created (:func:`_create`); one at another schema version is handled as
    the module says.
    """
    db = db.resolve()
    if db in _PREPARED:
        return
    try:
        import alembic  # noqa: F401 - MLflow's SQL store migrates with these
        import sqlalchemy  # noqa: F401
    except ImportError:
        # The GPU image carries the MLflow client only (mlflow-skinny): its pods log to a server.
        raise TrackingError(
            f"the tracking store sqlite:///{db} needs the full mlflow package (SQLAlchemy, "
            f"alembic), which this environment lacks (mlflow-skinny): set {TRACKING_ENV} to an "
            "MLflow server (the chart's aprflow-mlflow)"
        ) from None
    with open(db.with_name(f"{db.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            # What a killed creation left (this process holds the lock).
            for stale in db.parent.glob(f"{db.name}.init-*"):
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)
            if not db.exists() or db.stat().st_size == 0:
                _create(db)
            else:
                _check(db)
            _use_wal(db)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _PREPARED.add(db)


def _new_schema(path: Path) -> str:
    """Creates MLflow's schema in the new file ``path`` and returns its revision: a copy of
    :func:`schema_template` that MLflow opens (it adds its default experiment), or, without a
    usable template, MLflow's migrations.

    The store's engine is disposed (SQLAlchemy's ``Engine.dispose``), so no connection of this
    process stays open on the file once it is renamed or removed.
    """
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    template = None
    try:
        template = schema_template()
        if template is not None:
            shutil.copyfile(template, path)
            return _open_schema(path)
    except (OSError, sqlite3.DatabaseError, SQLAlchemyError, MlflowException, TrackingError) as e:
        # A cache must never stop a run: migrate, and make the template again next time.
        report("tracking", f"MLflow's cached schema did not serve ({e}): migrating {path.name}")
        if template is not None:
            with contextlib.suppress(OSError):
                template.unlink()
        path.unlink(missing_ok=True)
        # Under another name: MLflow keeps one engine per URI for the process (mlflow/mlflow
        # v3.17.2: sqlalchemy_store.py, _get_or_create_engine, lines 373-381), and the one
        # that failed on the copy still holds a connection to it.
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f"{path.name}.") as folder:
            scratch = Path(folder) / path.name
            revision = _open_schema(scratch)
            os.replace(scratch, path)
        return revision
    return _open_schema(path)


def _open_schema(path: Path) -> str:
    """Opens ``path`` with MLflow's SQL store, which migrates an empty file and adds its default
    experiment where there is none; returns the schema revision."""
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(f"sqlite:///{path}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH).engine.dispose()
    revision, _ = schema_state(path)
    if revision is None:
        raise TrackingError(f"MLflow created no schema version in {path}")
    return revision


def schema_template() -> Path | None:
    """``<user cache>/mlflow-schema-<MLflow version>.db``: MLflow's schema with no experiment,
    made once (migrations, then the default experiment removed) and checked at each use; None
    when the cache folder cannot be written (the caller migrates).

    Raises:
        sqlalchemy.exc.SQLAlchemyError, mlflow.exceptions.MlflowException: the migrations
            failed (a full disk).
    """
    import mlflow

    path = user_cache_dir() / f"mlflow-schema-{mlflow.__version__}.db"
    with contextlib.suppress(OSError, sqlite3.DatabaseError):
        if _is_empty_schema(path):
            return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as folder:
            scratch = Path(folder) / "schema.db"
            _open_schema(scratch)
            with contextlib.closing(sqlite3.connect(scratch)) as connection, connection:
                connection.execute("delete from experiments")
            os.replace(scratch, path)  # atomic: a reader sees a whole template or none
    except (OSError, sqlite3.DatabaseError):
        return None
    return path


def _is_empty_schema(db: Path) -> bool:
    """Whether ``db`` holds a schema version and no experiment (a template, whole)."""
    if not db.is_file():
        return False
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as connection:
        version = connection.execute("select version_num from alembic_version").fetchone()
        experiments = connection.execute("select count(*) from experiments").fetchone()[0]
    return version is not None and experiments == 0


def _create(db: Path) -> None:
    """Makes MLflow's schema (:func:`_new_schema`) in a temporary file next to ``db``, then
    renames it into place: a kill leaves at most a temporary file, never a half-migrated
    database."""
    temporary = db.with_name(f"{db.name}.init-{uuid.uuid4().hex[:12]}")
    _remember_head(db, _new_schema(temporary))
    os.replace(temporary, db)
    descriptor = os.open(db.parent, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _check(db: Path) -> None:
    """Leaves a database at this MLflow's schema version alone; rebuilds one left half-migrated
    without runs (a copy kept aside); refuses one with runs at another version."""
    revision, runs = schema_state(db)
    head = _head_revision(db)
    if revision == head:
        return
    if runs:
        raise TrackingError(
            f"the MLflow database {db} holds {runs} runs at schema version {revision}, not "
            f"{head}: back it up, then run `mlflow db upgrade sqlite:///{db}`; if that fails too "
            f"(a migration killed half way), move the file aside (its runs stay readable with an "
            f"older MLflow) or set {TRACKING_ENV} to another database"
        )
    aside = db.with_name(f"{db.name}.half-migrated-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.copyfile(db, aside)
    _rebuild_in_place(db)
    report(
        "tracking",
        f"the MLflow database {db} was half-migrated (schema {revision}) and held no runs: "
        f"copied aside to {aside.name} and created again",
    )


def _rebuild_in_place(db: Path) -> None:
    """Replaces the content of ``db`` with a new schema through SQLite's backup API: the file
    stays the same, so a connection this process already holds on it stays valid."""
    with tempfile.TemporaryDirectory(dir=db.parent, prefix=f"{db.name}.init-") as folder:
        fresh = Path(folder) / "fresh.db"
        _new_schema(fresh)
        with (
            contextlib.closing(sqlite3.connect(fresh)) as source,
            contextlib.closing(sqlite3.connect(db, timeout=30)) as target,
        ):
            source.backup(target)


def schema_state(db: Path) -> tuple[str | None, int]:
    """``(alembic revision or None, number of runs)`` of an existing SQLite database."""
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as connection:
        tables = {row[0] for row in connection.execute("select name from sqlite_master")}
        revision = None
        if "alembic_version" in tables:
            row = connection.execute("select version_num from alembic_version").fetchone()
            revision = row[0] if row else None
        runs = (
            connection.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0
        )
    return revision, runs


def _head_file(db: Path) -> Path:
    return db.with_name(f"{db.name}.schema.json")


def _remember_head(db: Path, revision: str) -> None:
    import mlflow

    _head_file(db).write_text(json.dumps({"mlflow": mlflow.__version__, "revision": revision}))


def _head_revision(db: Path) -> str:
    """The schema revision this MLflow creates: remembered next to ``db`` when aprflow created
    it with this MLflow version, else found by creating a schema in a scratch file (once per
    MLflow version: seconds)."""
    import mlflow

    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        remembered = json.loads(_head_file(db).read_text())
        if remembered["mlflow"] == mlflow.__version__:
            return str(remembered["revision"])
    with tempfile.TemporaryDirectory(dir=db.parent, prefix=f"{db.name}.init-") as folder:
        head = _new_schema(Path(folder) / "reference.db")
    _remember_head(db, head)
    return head


def _use_wal(db: Path) -> None:
    """Switches ``db`` to the write-ahead log (persistent in the file); a database another
    process holds in a transaction right now keeps its mode until the next process starts."""
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=10)) as connection:
            connection.execute("pragma journal_mode=wal")
    except sqlite3.OperationalError as e:
        if not is_transient(e):
            raise TrackingError(f"cannot open the MLflow database {db}: {e}") from None
