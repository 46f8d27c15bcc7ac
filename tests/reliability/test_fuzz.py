"""Seeded fuzzing of what a user types: config keys, ``--set`` values, recipe fields, spec lines.

Every generated input must end in exit 0, or in exit 1/2 with one ``error:`` line of at most
300 characters and no traceback, within 30 s and 1 GB. The cases run in one child process
(``_driver``) that calls ``aprflow``'s entry point in-process, each under ``signal.alarm`` and
with its peak-memory growth measured, so a hang or a memory bomb fails the test, not the
machine. The generator is seeded: a failing case is reproduced by its printed argv.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

SEED = 20261204
CASES = 150
TIME_LIMIT_S = 30
MEMORY_LIMIT_BYTES = 1 << 30
MAX_LINE = 300

# Values that break parsers in different ways: huge, negative, non-finite, wrong type, nested,
# YAML specials and aliases, control characters, long text.
NASTY = [
    "0",
    "-1",
    "1e308",
    "1000000000000",
    "-1e-3",
    "1e-3",
    ".nan",
    ".inf",
    "~",
    "null",
    "true",
    "[]",
    "{}",
    "[1, [2, [3]]]",
    "{a: {b: {c: 1}}}",
    "'x' * 3",
    "&a [*a]",
    "&a [1,2] ",
    "!!python/object:os.system ls",
    "\x00",
    "\u202e",
    "a\nb",
    "../../etc/passwd",
    "s3://user:pass@bucket/x",
    "x" * 5000,
    "[" * 200,
    "{" * 200,
]
# Values that are often valid, so that the fuzzed runs also get past the config checks.
PLAUSIBLE = [
    "1",
    "2",
    "3",
    "16",
    "0.1",
    "1e-3",
    "[0, 1]",
    "[digits, shapes]",
    "digits",
    "torch",
    "cpu",
]
KEYS = [
    "n_models",
    "flops_min",
    "flops_max",
    "datasets",
    "resolution",
    "epochs",
    "seed",
    "train_seeds",
    "engine",
    "zero_stage",
    "precision",
    "device",
    "gpus_per_trial",
    "trials_per_gpu",
    "chunk_size",
    "max_attempts",
    "trial_timeout_s",
    "task_cpu",
    "study_name",
    "reference",
    "recipe",
    "dataset_settings",
    "recipe_overrides",
    "recipe.epochs",
    "recipe.lr",
    "recipe.batch_size",
    "recipe.mixup",
    "recipe.aug_repeats",
    "recipe.crop_padding",
    "recipe.warmup_epochs",
    "nosuchkey",
]
SPEC_FIELDS = ["depths", "widths", "strides", "bottleneck_ratios", "group_widths", "stem_width"]


def generate(rng: random.Random, folder: Path) -> list[list[str]]:
    """Argv lists: ``run --dry-run`` with one to three fuzzed ``--set``s, and ``train`` on a
    spec file with one fuzzed field and a dataset that does not exist (so nothing trains)."""
    cases = []
    for i in range(CASES):
        if i % 3 == 2:
            spec = {
                "depths": [1, 1, 1, 1],
                "widths": [8, 16, 32, 64],
                "strides": [2, 2, 2, 2],
                "bottleneck_ratios": [1, 1, 1, 1],
                "group_widths": [8, 8, 8, 8],
                "stem_width": 8,
            }
            field = rng.choice(SPEC_FIELDS)
            value = rng.choice(
                [rng.choice(NASTY), [rng.choice([0, -1, 2**20, 10**6, 1.5, "x"])] * 4, None]
            )
            spec[field] = value
            path = folder / f"spec-{i}.json"
            path.write_text(json.dumps(spec))
            cases.append(["train", "--spec", str(path), "--dataset", "no-such-dataset"])
        else:
            sets = [
                f"--set={rng.choice(KEYS)}={rng.choice(rng.choice([NASTY, PLAUSIBLE]))}"
                for _ in range(rng.randint(1, 3))
            ]
            cases.append(["run", "apr-study", "--dry-run", *sets])
    return cases


def _driver(cases_file: str) -> None:
    """Runs each case in this process and prints one JSON line per case."""
    import contextlib
    import io
    import resource
    import signal

    from pipelines.cli import main

    def alarm(*_):
        raise TimeoutError

    signal.signal(signal.SIGALRM, alarm)
    for argv in json.loads(Path(cases_file).read_text()):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out, err = io.StringIO(), io.StringIO()
        signal.alarm(TIME_LIMIT_S)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
            outcome = {"code": code}
        except TimeoutError:
            outcome = {"timeout": True}
        except BaseException as e:  # noqa: BLE001 - an escaping exception is the finding
            outcome = {"exception": f"{type(e).__name__}: {str(e)[:200]}"}
        finally:
            signal.alarm(0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        outcome |= {"argv": argv, "stderr": err.getvalue()[-2000:], "grew": peak - before}
        print(json.dumps(outcome), flush=True)


@pytest.mark.slow
def test_fuzzed_inputs_end_in_one_short_line(tmp_path):
    cases = generate(random.Random(SEED), tmp_path)
    cases_file = tmp_path / "cases.json"
    cases_file.write_text(json.dumps(cases))
    env = os.environ | {
        "APRFLOW_STORE_URI": str(tmp_path / "store"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    env.pop("APRFLOW_S3_ENDPOINT_URL", None)
    done = subprocess.run(
        [sys.executable, __file__, str(cases_file)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parents[2],
        timeout=CASES * TIME_LIMIT_S,
    )
    outcomes = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(outcomes) == len(cases), done.stderr[-3000:]
    problems = []
    for outcome in outcomes:
        argv = " ".join(outcome["argv"])[:300]
        lines = [line for line in outcome["stderr"].splitlines() if line.strip()]
        if "timeout" in outcome or "exception" in outcome:
            problems.append(f"{argv}: {outcome.get('exception', 'over 30 s')}")
        elif outcome["grew"] > MEMORY_LIMIT_BYTES:
            problems.append(f"{argv}: memory grew by {outcome['grew'] / 2**30:.1f} GiB")
        elif outcome["code"] not in (0, 1, 2):
            problems.append(f"{argv}: exit {outcome['code']}")
        elif outcome["code"] != 0:
            errors = [line for line in lines if line.startswith("error:")]
            if (
                len(errors) != 1
                or len(errors[0]) > MAX_LINE
                or "internal error" in errors[0]
                or "Traceback" in outcome["stderr"]
            ):
                problems.append(f"{argv}: {lines[-3:]}")
    assert not problems, "\n".join(problems)
    # The generator reaches both outcomes: refusals and accepted dry runs.
    codes = {o["code"] for o in outcomes if "code" in o}
    assert 0 in codes and 2 in codes, codes


if __name__ == "__main__":
    _driver(sys.argv[1])
