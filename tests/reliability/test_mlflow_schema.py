"""MLflow's SQLite schema: a kill or a second run during its creation never breaks the database.

MLflow migrates a new database in ~60 steps; killed half way, plain MLflow fails on it for good
(``table scorers already exists``). aprflow creates it in a temporary file under an exclusive
lock and renames it into place, and moves aside a half-migrated database that holds no runs.
The migrations run once per MLflow version: new databases are copies of a schema in the
user's cache.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import threading

import pytest
from faults import ROOT, wait_for

from components.common import tracking

INIT = (
    "import sys; from pathlib import Path; from components.common import tracking; "
    "uri = 'sqlite:///' + sys.argv[1]; "
    "tracking.start_study_run(uri, 'exp', sys.argv[2], {'n': 1}); print('ok')"
)


def _start(db, study: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", INIT, str(db), study],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _runs(db) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    return client.search_runs([client.get_experiment_by_name("exp").experiment_id])


def _without_schema_cache(tmp_path, monkeypatch) -> None:
    """No cache folder can be made (its parent is a file): every new database is migrated."""
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))


def test_kill_during_schema_creation_then_rerun_works(tmp_path, monkeypatch):
    _without_schema_cache(tmp_path, monkeypatch)
    db = tmp_path / "mlflow.db"
    process = _start(db, "s1")
    # The point of the kill: migrations running in the temporary file (it has tables).
    wait_for(
        lambda: any(p.stat().st_size > 0 for p in tmp_path.glob("mlflow.db.init-*")),
        timeout=120,
        what="MLflow's schema creation",
        poll=0.005,
    )
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not db.exists(), "killed during creation: no half-built database under the final name"
    assert list(tmp_path.glob("mlflow.db.init-*")), "the kill really hit the creation"
    # The re-run creates the schema, cleans the killed attempt's file, and works.
    parent = tracking.start_study_run(f"sqlite:///{db}", "exp", "s1", {"n": 1})
    assert [r.info.run_id for r in _runs(db)] == [parent]
    assert not list(tmp_path.glob("mlflow.db.init-*"))


def test_two_processes_creating_one_database_both_succeed(tmp_path):
    db = tmp_path / "mlflow.db"
    processes = [_start(db, "s2"), _start(db, "s2")]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    runs = _runs(db)
    assert len(runs) == 1, "one study, one parent run"
    assert runs[0].data.tags[tracking.STUDY_TAG] == "s2"


def _schema(db) -> list:
    """Each table's and index's definition, its lines sorted: MLflow's own migrations write a
    table's constraints in an order that changes from one database to the next."""
    with sqlite3.connect(db) as connection:
        rows = connection.execute("select type, name, sql from sqlite_master order by type, name")
        return [
            (kind, name, sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()))
            for kind, name, sql in rows
        ]


def _experiments(db) -> list:
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "select experiment_id, name, artifact_location, lifecycle_stage, workspace "
            "from experiments"
        ).fetchall()


def test_new_databases_are_copies_of_one_migrated_schema(tmp_path, monkeypatch):
    """A copy of the cached schema is the database MLflow's migrations make: the same tables,
    indexes and revision, and MLflow's default experiment under this process' artifact root;
    MLflow logs to it."""
    import mlflow

    migrated = tmp_path / "migrated" / "mlflow.db"
    migrated.parent.mkdir()
    with monkeypatch.context() as no_cache:
        _without_schema_cache(tmp_path, no_cache)
        tracking.prepare_sqlite(migrated)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    template = tmp_path / "cache" / "aprflow" / f"mlflow-schema-{mlflow.__version__}.db"
    copies = [tmp_path / "a.db", tmp_path / "b.db"]
    for db in copies:
        tracking.prepare_sqlite(db)
    assert template.is_file() and _experiments(template) == []
    for db in copies:
        assert _schema(db) == _schema(migrated)
        assert tracking.database.schema_state(db) == tracking.database.schema_state(migrated)
        assert _experiments(db) == _experiments(migrated)
    parent = tracking.start_study_run(f"sqlite:///{copies[1]}", "exp", "s7", {"n": 1})
    assert [r.info.run_id for r in _runs(copies[1])] == [parent]


def test_a_damaged_cached_schema_is_made_again(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    template = tmp_path / "cache" / "aprflow" / f"mlflow-schema-{mlflow.__version__}.db"
    template.parent.mkdir(parents=True)
    template.write_bytes(b"SQLite format 3\x00" + b"\x00" * 84)  # a header, cut short
    db = tmp_path / "mlflow.db"
    tracking.prepare_sqlite(db)
    assert tracking.database.schema_state(db)[0] is not None
    assert _experiments(db)[0][1] == "Default"
    assert _experiments(template) == [] and tracking.database.schema_state(template)[0]


def test_a_cached_schema_mlflow_refuses_is_dropped_and_the_database_migrated(
    tmp_path, monkeypatch, capsys
):
    """A cached schema that looks whole but that MLflow will not open (here, at an older
    revision) costs the migrations once: the database is migrated, the cache file removed."""
    import mlflow

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tracking.prepare_sqlite(tmp_path / "first.db")  # writes the cached schema
    template = tmp_path / "cache" / "aprflow" / f"mlflow-schema-{mlflow.__version__}.db"
    with sqlite3.connect(template) as connection:
        connection.execute("update alembic_version set version_num = '1a0cddfcaa16'")
    db = tmp_path / "mlflow.db"
    tracking.prepare_sqlite(db)
    assert (
        tracking.database.schema_state(db)[0]
        == tracking.database.schema_state(tmp_path / "first.db")[0]
    )
    assert "cached schema did not serve" in capsys.readouterr().err
    assert not template.exists()
    parent = tracking.start_study_run(f"sqlite:///{db}", "exp", "s8", {"n": 1})
    assert [r.info.run_id for r in _runs(db)] == [parent]


def _half_migrated(db) -> None:
    """A database as a kill in the middle of MLflow's own migrations leaves it: tables of later
    migrations present, the recorded revision older."""
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    with sqlite3.connect(db) as connection:
        connection.execute("update alembic_version set version_num = '1a0cddfcaa16'")
        connection.execute("drop table jobs")


def test_half_migrated_database_without_runs_is_moved_aside(tmp_path, capsys):
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db = tmp_path / "broken.db"
    _half_migrated(db)
    # What plain MLflow does with it (on a copy): fails, every time.
    shutil.copy(db, tmp_path / "copy.db")
    with pytest.raises(Exception, match="already exists"):
        SqlAlchemyStore(f"sqlite:///{tmp_path / 'copy.db'}", str(tmp_path / "artifacts"))
    parent = tracking.start_study_run(f"sqlite:///{db}", "exp", "s3", {"n": 1})
    assert [r.info.run_id for r in _runs(db)] == [parent]
    aside = list(tmp_path.glob("broken.db.half-migrated-*"))
    assert len(aside) == 1, "the broken database is kept, moved aside"
    assert "half-migrated" in capsys.readouterr().err


def test_database_with_runs_at_another_schema_is_one_clear_error(tmp_path):
    db = tmp_path / "old.db"
    tracking.start_study_run(f"sqlite:///{db}", "exp", "s4", {"n": 1})
    with sqlite3.connect(db) as connection:
        connection.execute("update alembic_version set version_num = '1a0cddfcaa16'")
    tracking.database._PREPARED.clear()  # as a new process would
    with pytest.raises(tracking.TrackingError, match="holds 1 runs.*mlflow db upgrade"):
        tracking.start_study_run(f"sqlite:///{db}", "exp", "s4", {"n": 1})
    assert db.exists() and not list(tmp_path.glob("old.db.half-migrated-*"))


@pytest.mark.slow
def test_database_locked_by_another_writer_is_retried(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.start_study_run(uri, "exp", "s5", {"n": 1})
    # Another writer's long transaction: longer than MLflow's 20 s SQLite busy wait, so MLflow
    # raises "database is locked" before the lock goes; aprflow retries.
    errors = []
    judge = tracking.is_transient
    monkeypatch.setattr(
        tracking.client, "is_transient", lambda e: errors.append(str(e)) or judge(e)
    )
    holder = sqlite3.connect(tmp_path / "mlflow.db", check_same_thread=False)
    holder.execute("begin exclusive")
    release = threading.Timer(24, holder.rollback)
    release.start()
    try:
        parent = tracking.start_study_run(uri, "exp", "s6", {"n": 2})
    finally:
        release.join()
        holder.close()
    assert any("database is locked" in e for e in errors), "MLflow really failed on the lock"
    assert {r.info.run_id for r in _runs(tmp_path / "mlflow.db")} >= {parent}
