"""Processes started as forks of a local run's warm process (components/common/warm_start.py):
what they get (arguments, folder, environment, file descriptors), how they end (exit status,
signals, a killed launcher), what is refused, and the two users: a training task's fork
server and the analysis' model logging."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
# A warm process that imported a module no test command imports itself.
SERVER = """
import os, socket, sys
from components.common.warm_start import preload, serve
environ = dict(os.environ)
preload(["xml.dom.minidom"])
print("ready", flush=True)
run = serve(socket.socket(fileno=int(sys.argv[1])), environ)
if run is not None:
    run()
"""
# What a started process reports about itself.
REPORT = """
import json, os, sys
fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))[:-1]  # without the listing's own
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "x": os.environ.get("X"),
                  "warm": "xml.dom.minidom" in sys.modules, "pid": os.getpid(), "fds": fds}))
"""


class WarmServer:
    def __init__(self, folder: Path) -> None:
        from components.common.warm_start import write_launcher

        address = str(folder / "socket")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(address)
        listener.listen(8)
        self.launcher = str(write_launcher(folder, address))
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(listener.fileno())],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=(listener.fileno(),),
        )
        listener.close()
        assert self.process.stdout.readline().strip() == "ready"

    def run(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("cwd", ROOT)
        return subprocess.run(
            [self.launcher, *args], capture_output=True, text=True, timeout=60, **kwargs
        )

    def stop(self) -> None:
        self.process.stdin.close()
        assert self.process.wait(30) == 0


@pytest.fixture
def warm(tmp_path):
    server = WarmServer(tmp_path)
    yield server
    if server.process.poll() is None:
        server.stop()


def test_a_command_runs_in_a_fork_of_the_warm_process_with_the_launchers_state(warm, tmp_path):
    env = os.environ | {"X": "1"}
    done = warm.run(["-c", REPORT + "\nsys.exit(3)", "a", "b"], cwd=tmp_path, env=env)
    assert done.returncode == 3, done.stderr
    assert done.stderr == ""
    report = json.loads(done.stdout)
    assert report["argv"] == ["-c", "a", "b"]
    assert report["cwd"] == str(tmp_path)
    assert report["x"] == "1"
    assert report["warm"]  # a fork: the warm process' import is there
    assert report["fds"] == [0, 1, 2]  # the launcher's, nothing of the server's


def test_a_module_reads_the_launchers_standard_input(warm):
    done = warm.run(["-m", "json.tool"], input='{"a": [1]}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"a": [1]}
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("code", "status", "stderr"),
    [
        ("import sys; sys.exit('no dataset')", 1, "no dataset"),
        ("raise ValueError('bad spec')", 1, "ValueError: bad spec"),
        ("raise KeyboardInterrupt", -signal.SIGINT, "KeyboardInterrupt"),
    ],
)
def test_a_command_ends_as_a_new_interpreter_would(warm, code, status, stderr):
    done = warm.run(["-c", code])
    assert done.returncode == status
    assert stderr in done.stderr
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert fresh.returncode == status


def test_threads_are_waited_for_and_atexit_functions_run(warm):
    code = textwrap.dedent("""
        import atexit, threading, time
        atexit.register(lambda: print("atexit", flush=True))
        threading.Thread(target=lambda: (time.sleep(0.5), print("thread", flush=True))).start()
    """)
    done = warm.run(["-c", code])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["thread", "atexit"]


def _started(warm: WarmServer) -> tuple[subprocess.Popen, int]:
    code = "import os, time; print(os.getpid(), flush=True); time.sleep(120)"
    launcher = subprocess.Popen([warm.launcher, "-c", code], stdout=subprocess.PIPE, text=True)
    return launcher, int(launcher.stdout.readline())


def test_a_signal_to_the_launcher_reaches_the_process(warm):
    launcher, pid = _started(warm)
    assert pid != launcher.pid
    assert psutil.Process(pid).parent().parent().pid == warm.process.pid
    launcher.terminate()
    assert launcher.wait(30) == -signal.SIGTERM
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_killed_launcher_takes_the_process_with_it(warm):
    launcher, pid = _started(warm)
    launcher.kill()
    launcher.wait(30)
    deadline = time.monotonic() + 30
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(pid)


@pytest.mark.parametrize(
    ("args", "env", "why"),
    [
        (["-O", "-c", REPORT], {}, "only -c or -m"),
        (["-c", REPORT], {"PYTHONHASHSEED": "7"}, "PYTHONHASHSEED"),
        (["-c", REPORT], {"OMP_PROC_BIND": "true"}, "OMP_PROC_BIND"),
    ],
)
def test_what_a_fork_cannot_change_gets_a_new_interpreter(warm, args, env, why):
    done = warm.run(args, env=os.environ | env)
    assert done.returncode == 0, done.stderr
    assert why in done.stderr and "starting a new interpreter" in done.stderr
    assert not json.loads(done.stdout)["warm"]


def test_a_threaded_warm_process_refuses():
    from components.common.warm_start import Request, refusal

    request = Request(["-c", "pass"], "/", {}, [], [])
    assert refusal(request, {}, threads=1) is None
    assert "runs 3 Python threads" in refusal(request, {}, threads=3)


def test_what_torch_reads_when_used_is_not_refused(warm):
    env = os.environ | {"OMP_NUM_THREADS": "8", "PYTORCH_NVML_BASED_CUDA_CHECK": "1", "X": "2"}
    done = warm.run(["-B", "-c", REPORT], env=env)
    assert done.returncode == 0 and done.stderr == ""
    assert json.loads(done.stdout)["warm"]


def test_without_a_warm_process_the_launcher_starts_a_new_interpreter(warm):
    warm.stop()
    done = warm.run(["-c", REPORT, "a"])
    assert done.returncode == 0 and done.stderr == ""
    report = json.loads(done.stdout)
    assert report["argv"] == ["-c", "a"] and not report["warm"]


def test_a_killed_warm_process_costs_no_started_process(warm):
    code = "import sys; print('started', flush=True); sys.stdin.read(); sys.exit(5)"
    launcher = subprocess.Popen(
        [warm.launcher, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert launcher.stdout.readline().strip() == "started"
    warm.process.kill()
    warm.process.wait(30)
    launcher.stdin.close()  # the started process ends now, after the warm process
    assert launcher.wait(30) == 5
    done = warm.run(["-c", REPORT])
    assert done.returncode == 0 and not json.loads(done.stdout)["warm"]


@pytest.fixture(scope="module")
def local_warm_up(tmp_path_factory):
    """`aprflow run`'s warm process, as a local run has it."""
    from components.common.warm_start import WARM_PYTHON_ENV
    from pipelines.local import LocalWarmUp

    folder = tmp_path_factory.mktemp("warm")
    saved = dict(os.environ)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    os.environ.pop(WARM_PYTHON_ENV, None)
    warm_up = LocalWarmUp()
    try:
        yield warm_up, os.environ[WARM_PYTHON_ENV]
    finally:
        warm_up.close()
        os.environ.clear()
        os.environ.update(saved)


# A chunk task's fork server, started as in a local run; prints the ancestry of a process
# forked from it (the trial's parent is the fork server, whose parent answers the launcher).
FORK_SERVER = """
import json, psutil
from components.train.chunk import fork_server
process = fork_server().Process(target=print, args=("trial",))
process.start()
server = psutil.Process(process.pid).parent()
print(json.dumps({"chain": [server.pid, server.parent().pid, server.parent().parent().pid]}))
process.join()
print(json.dumps({"exitcode": process.exitcode}))
"""


@pytest.mark.slow
def test_a_chunks_fork_server_is_a_fork_of_the_warm_process(local_warm_up):
    warm_up, launcher = local_warm_up
    done = subprocess.run(
        [sys.executable, "-B", "-c", FORK_SERVER],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"OMP_NUM_THREADS": "8"},  # as kfp.local hands a training task
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warm-start" not in done.stderr
    lines = done.stdout.splitlines()
    chain = json.loads(lines[0])["chain"]
    assert chain[2] == warm_up._process.pid  # the fork server's answerer is the warm process'
    assert "trial" in lines and json.loads(lines[-1]) == {"exitcode": 0}


@pytest.mark.slow
def test_the_model_logging_starts_from_the_warm_process(local_warm_up):
    from components.common.warm_start import python_executable

    warm_up, launcher = local_warm_up
    assert python_executable() == launcher
    code = "import psutil, sys\nwarm = psutil.Process().parent().parent()\n"
    code += "print(warm.pid, 'timm' in sys.modules)"
    done = subprocess.run([launcher, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.split() == [str(warm_up._process.pid), "True"], done.stderr


def test_the_local_warm_up_cleans_up_after_itself(tmp_path, monkeypatch):
    from components.common.warm_start import WARM_PYTHON_ENV
    from pipelines.local import LocalWarmUp

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv(WARM_PYTHON_ENV, raising=False)
    warm_up = LocalWarmUp()
    launcher = Path(os.environ[WARM_PYTHON_ENV])
    warm_up.close()
    assert warm_up._process.returncode == 0  # it ended when its standard input did
    assert WARM_PYTHON_ENV not in os.environ
    assert not launcher.parent.exists()
