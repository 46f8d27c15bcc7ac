"""The local run's console: everything to the log, only progress to the terminal."""

import io
import sys
import threading

from components.common.progress import (
    TrialDone,
    parse_report_line,
    parse_trial_done,
    report,
    trial_done_line,
)
from pipelines.console import StudyConsole


class FakeTerminal(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_trial_line_round_trips():
    done = TrialDone(index=3, total=24, status="failed", reused=True, detail="boom\n  at line 2")
    message = trial_done_line(done)
    assert "\n" not in message
    assert parse_trial_done(message) == TrialDone(3, 24, "failed", True, "boom at line 2")
    assert parse_report_line(f"[train | 0:00:05 elapsed] {message}") == ("train", message)
    assert parse_trial_done("trial 3/24 k1f9: model x on digits") is None


def _study() -> None:
    """What a local run prints: kfp.local noise, stage lines, epochs, trials (two threads)."""
    print('{"executor_input": {"inputs": {}}}')
    sys.stderr.write("UserWarning: settings have no effect locally\n")
    report("plan", "study s-1: 2 architectures x 2 datasets x 1 seeds = 4 trials")

    def task(indexes: list[int]) -> None:
        for i in indexes:
            report("train", f"trial {i}/4 t{i}: model m on digits", 0.0)
            report("train", "epoch 1/3 loss 2.1", 0.0)
            status = "failed" if i == 4 else "ok"
            done = TrialDone(i, 4, status, reused=i == 1, detail=f"top-1 error {i}.0%")
            report("train", trial_done_line(done), 0.0)

    threads = [threading.Thread(target=task, args=(ids,)) for ids in ([1, 3], [2, 4])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("partial line without newline", end="")


def test_console_in_a_log(tmp_path):
    terminal = FakeTerminal(tty=False)
    log = tmp_path / "logs" / "run.log"
    with StudyConsole(log, terminal=terminal) as console:
        _study()
        # The log follows the run line by line (people `tail -f` it while tasks run).
        done_lines = [line for line in log.read_text().splitlines() if "/4 ok" in line]
        assert len(done_lines) == 3 and "trial 4/4 failed" in log.read_text()
    assert sys.stdout is not console and sys.stderr is not console

    shown = terminal.getvalue().splitlines()
    assert shown[0] == "[plan] study s-1: 2 architectures x 2 datasets x 1 seeds = 4 trials"
    trials = [line for line in shown if line.startswith("  trial ")]
    assert len(trials) == 4 and len(shown) == 5, shown
    assert any(line.startswith("  trial 1/4 ok (reused) top-1 error 1.0%") for line in trials)
    assert any(line.startswith("  trial 4/4 failed") for line in trials)
    assert trials[-1].endswith("]") and "[4/4 trials, 1 failed, 0:00:00 elapsed" in trials[-1]
    assert "executor_input" not in terminal.getvalue() and "epoch 1/3" not in terminal.getvalue()

    logged = log.read_text().splitlines()
    assert '{"executor_input": {"inputs": {}}}' in logged
    assert "UserWarning: settings have no effect locally" in logged
    assert sum("epoch 1/3 loss 2.1" in line for line in logged) == 4
    assert logged[-1] == "partial line without newline"
    assert (console.finished, console.failed, console.trained) == (4, 1, 3)


def test_console_on_a_terminal_draws_one_bar(tmp_path):
    terminal = FakeTerminal(tty=True)
    with StudyConsole(tmp_path / "run.log", terminal=terminal, refresh_s=0.01):
        _study()
    text = terminal.getvalue()
    assert "\r\033[K" in text, "the bar is redrawn in place"
    final = text.rsplit("\r\033[K", 1)[1]
    assert final.startswith("[========================] 4/4 trials, 1 failed") and final.endswith(
        "\n"
    )
    assert "  [4/4 trials" not in text, "counts live in the bar, not in each trial line"
