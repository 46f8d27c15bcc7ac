"""Memory bombs: a few bytes of input that stand for gigabytes are refused, or skipped and
counted, before the memory is spent.

The command-line cases run ``pipelines.cli.main`` (the ``aprflow`` entry point) in a child
process whose address space is capped (RLIMIT_AS), so that a bomb that is expanded after all
fails the test with a MemoryError in seconds instead of taking the machine's memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from components.common.limits import MAX_BRACE_EXPANSION, MAX_IMAGE_PIXELS, MAX_YAML_BYTES
from components.common.storage import open_store
from components.common.yamlsafe import YamlRefusedError, load_yaml, load_yaml_file
from components.data.build import load_manifest, named_dataset
from components.data.descriptor import DatasetError, DatasetRef
from components.data.sources import expand_braces
from tests.data.imagesets import make_image_folder

REPO = Path(__file__).parents[2]
# Address space the child may add once its modules are imported: room for the build's thread
# pool (each thread's malloc arena reserves 64 MiB) and small images, far below what any bomb
# here expands to (the 12000 x 12000 PNG took 7 GB).
HEADROOM = 1536 * 2**20
# Imports the modules named in argv[2] (so that their import time is not counted), caps the
# address space at what it holds plus argv[1] bytes, runs ``main(argv[3:])`` and prints its
# exit status, the seconds it took and how far the peak resident memory (ru_maxrss, KiB on
# Linux) rose above the memory resident before it.
CHILD = """
import importlib, json, resource, sys, time
for module in sys.argv[2].split(","):
    importlib.import_module(module)
def size(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
limit = size("VmSize:") + int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from pipelines.cli import main
before = size("VmRSS:")
started = time.perf_counter()
status = main(sys.argv[3:])
seconds = time.perf_counter() - started
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
print(json.dumps({"status": status, "seconds": seconds, "grown_mib": grown / 2**20}))
"""
# What `aprflow run` and `aprflow data build` import before they read their input.
RUN_MODULES = (
    "pipelines.config,pipelines.local,pipelines.preflight,pipelines.registry,pipelines.sweep"
)
DATA_MODULES = (
    "components.data.cli,components.data.build,components.data.sources,components.data.summary"
)
# Seven levels of nine aliases in 216 bytes: 9^7 (4.8 million) strings once expanded.
ALIAS_BOMB = (
    "[&a [x,x,x,x,x,x,x,x,x],"
    + ",".join(f"&{b} [{','.join([f'*{a}'] * 9)}]" for a, b in zip("abcdef", "bcdefg", strict=True))
    + "]"
)


def _limited(modules: str, *argv: str) -> tuple[dict, list[str]]:
    """``main(argv)`` in a child process under HEADROOM: (its figures, its stderr lines)."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(HEADROOM), modules, *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1]), done.stderr.splitlines()


def _one_error_line(lines: list[str], *words: str) -> None:
    """Asserts that ``lines`` hold one ``error:`` line, short, with ``words``, and no traceback."""
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(lines), lines[-20:]
    assert len(errors[0]) < 300, errors[0][:1000]
    for word in words:
        assert word in errors[0], errors[0]


def test_a_billion_shard_pattern_is_refused_before_a_name_is_made(local_env):
    pattern = str(local_env / "x-{000000000..999999999}.tar")
    figures, stderr = _limited(DATA_MODULES, "data", "build", "big", "--from", pattern)
    assert figures["status"] == 1
    assert figures["seconds"] < 1
    _one_error_line(stderr, f"more than {MAX_BRACE_EXPANSION:,} shards")


@pytest.mark.parametrize(
    "pattern",
    [
        "{0..1000000}.tar",  # one over the bound
        "s-{0..999}-{0..9999}.tar",  # the product of two small ranges
        "s-{5..3}-{0..9999999999}.tar",  # an empty range does not hide a huge one
    ],
)
def test_patterns_over_the_bound_are_refused(pattern):
    with pytest.raises(DatasetError, match="more than 1,000,000 shards"):
        expand_braces(pattern)


def test_patterns_within_the_bound_expand_as_before():
    assert expand_braces("s-{08..10}-{a,b}.tar") == [
        "s-08-a.tar",
        "s-08-b.tar",
        "s-09-a.tar",
        "s-09-b.tar",
        "s-10-a.tar",
        "s-10-b.tar",
    ]
    assert expand_braces("plain.tar") == ["plain.tar"]
    with pytest.raises(DatasetError, match="nested braces"):
        expand_braces("s-{a,{b,c}}.tar")


def test_alias_bomb_in_set_is_one_short_line(local_env):
    assert len(ALIAS_BOMB) <= 230
    figures, stderr = _limited(
        RUN_MODULES, "run", "apr-study", f"--set=train_seeds={ALIAS_BOMB}", "--dry-run"
    )
    assert figures["status"] == 1
    assert figures["seconds"] < 1
    _one_error_line(stderr, "--set train_seeds", "aliases")


def test_alias_bomb_in_config_file_is_refused(tmp_path):
    from pipelines.config import load_config
    from pipelines.registry import PIPELINES

    config = tmp_path / "bomb.yaml"
    config.write_text(f"train_seeds: {ALIAS_BOMB}\n")
    with pytest.raises(YamlRefusedError, match=f"^config {config}: YAML aliases"):
        load_config(PIPELINES["apr-study"], config, {})


def test_yaml_loader_bounds(tmp_path):
    text = "a: [1, 2.5, x]\nb: {c: null}\n"
    assert load_yaml(text, "t") == yaml.safe_load(text)
    assert load_yaml("", "t") is None
    with pytest.raises(YamlRefusedError, match=r"^t: YAML aliases \(\*a\) are not accepted"):
        load_yaml("a: &a 1\nb: *a\n", "t")
    with pytest.raises(YamlRefusedError, match="nested more than 64 levels"):
        load_yaml("[" * 5000 + "]" * 5000, "t")  # yaml.safe_load: RecursionError
    with pytest.raises(YamlRefusedError, match="more than 4,194,304 bytes"):
        load_yaml("#" * (MAX_YAML_BYTES + 1), "t")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_YAML_BYTES + 1))
    with pytest.raises(YamlRefusedError, match=f"^{big} is more than"):
        load_yaml_file(big, str(big))
    with pytest.raises(yaml.YAMLError):
        load_yaml("a: [1,\n", "t")


@pytest.mark.parametrize("where", ["coarse map", "cluster profile", "recipe"])
def test_every_yaml_reader_refuses_aliases(tmp_path, where):
    from components.data.subsets import read_coarse_map
    from components.train.recipes import parse_recipe_file
    from pipelines.cluster import load_profile

    path = tmp_path / "bomb.yaml"
    path.write_text(f"epochs: {ALIAS_BOMB}\n")
    read = {
        "coarse map": lambda: read_coarse_map(str(path)),
        "cluster profile": lambda: load_profile(path),
        "recipe": lambda: parse_recipe_file("bomb", path.read_text(), str(path)),
    }[where]
    with pytest.raises(YamlRefusedError, match="aliases"):
        read()


def _bilevel_png(path: Path, side: int) -> None:
    """A one-bit black PNG: ``side``² pixels in a few KB (``side``² x 3 bytes decoded as RGB)."""
    Image.new("1", (side, side)).save(path)


def test_decompression_bombs_are_skipped_and_counted(local_env):
    folder = make_image_folder(local_env / "folder")
    # The same build without the bombs: the baseline of the peak memory (thread arenas, the
    # small images), which varies from one machine state to another.
    baseline, _ = _limited(DATA_MODULES, "data", "build", "plain", "--from", str(folder))
    _bilevel_png(folder / "circle" / "bomb.png", 12000)  # PIL itself refuses it
    _bilevel_png(folder / "square" / "large.png", 9000)  # PIL only warns
    assert 2 * MAX_IMAGE_PIXELS < 12000**2 and MAX_IMAGE_PIXELS < 9000**2 <= 2 * MAX_IMAGE_PIXELS
    figures, stderr = _limited(DATA_MODULES, "data", "build", "bombs", "--from", str(folder))
    assert figures["status"] == 0, stderr[-5:]
    assert not any("DecompressionBomb" in line for line in stderr), stderr
    # Decoding the 9000 x 9000 image as RGB would add 232 MiB, the 12000 x 12000 one 412 MiB
    # (the build that included it needed 7 GB).
    assert figures["grown_mib"] - baseline["grown_mib"] < 200, (figures, baseline)
    store = open_store(str(local_env / "store"))
    manifest = load_manifest(store, DatasetRef(**named_dataset(store, "bombs")["ref"]))
    reasons = {s["file"]: s["reason"] for s in manifest["skipped"]}
    for name in ("circle/bomb.png", "square/large.png"):
        assert reasons[name].startswith(f"too many pixels: more than {MAX_IMAGE_PIXELS:,}")
    assert manifest["skipped_by_reason"]["too many pixels"] == 2
