"""kfp.local's indenting ``print`` and the guard that puts the real one back.

kfp 2.17.0's ``indented_print`` (kfp/local/logging_utils.py, lines 83-100) saves
``builtins.print``, installs a wrapper that writes four spaces first, and restores what it saved.
Two tasks of a ParallelFor run it from two threads: when the first to enter is the first to
leave, the second restores the first one's wrapper, which then stays for the whole process.
"""

import builtins
import contextlib


def _interleaved_tasks() -> None:
    """Two overlapping task logs in the order that leaks: A enters, B enters, A leaves, B leaves."""
    from kfp.local.logging_utils import indented_print

    first, second = indented_print(), indented_print()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    second.__exit__(None, None, None)


def test_kfp_local_leaks_its_indenting_print_and_the_guard_restores_it(capsys):
    from pipelines.local import original_print

    real = builtins.print
    try:
        _interleaved_tasks()
        leaked = builtins.print is not real
        print("result")
        out = capsys.readouterr().out
    finally:
        builtins.print = real
    # The leak is real in the pinned kfp: without it the guard would have nothing to do.
    assert leaked and out == "    result\n"

    with original_print():
        _interleaved_tasks()
    print("result")
    assert builtins.print is real and capsys.readouterr().out == "result\n"


def test_the_guard_restores_print_when_the_run_fails():
    from pipelines.local import original_print

    real = builtins.print
    with contextlib.suppress(RuntimeError), original_print():
        _interleaved_tasks()
        raise RuntimeError("a task failed")
    assert builtins.print is real
