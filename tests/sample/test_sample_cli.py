"""The sampling command line and the JSONL reader/writer."""

import json

import pytest

from components.sample.cli import main
from components.sample.samplers import sample_specs
from components.sample.space import REFERENCE_SPECS, AnyNetSpec, complexity
from components.sample.spec_io import read_specs_jsonl, write_specs_jsonl


def test_cli_writes_specs_and_summary(tmp_path, capsys):
    out, summary = tmp_path / "specs.jsonl", tmp_path / "summary"
    argv = ["--space", "anynetx-d", "--n", "25", "--flops", "360e6:400e6", "--seed", "0"]
    assert main([*argv, "--out", str(out), "--summary-dir", str(summary)]) == 0
    captured = capsys.readouterr()
    assert "rejected" in captured.err  # progress on stderr
    assert captured.out.startswith(f"wrote 25 specs to {out}")  # the result on stdout
    specs = read_specs_jsonl(out)
    assert specs == sample_specs("anynetx_d", 25, seed=0).specs
    record = json.loads(out.read_text().splitlines()[0])
    cx = complexity(specs[0])
    assert record["spec_hash"] == specs[0].spec_hash()
    assert (record["flops"], record["params"], record["acts"]) == (cx.flops, cx.params, cx.acts)
    assert json.loads((summary / "summary.json").read_text())["n"] == 25
    assert "| FLOPs (M) |" in (summary / "summary.md").read_text()
    assert (summary / "histograms.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--space", "nope", "--n", "5"], 1, "unknown design space 'nope'"),
        (["--space", "anynetx_a", "--n", "5", "--flops", "400e6"], 2, "--flops must be LOW:HIGH"),
        (
            ["--space", "anynetx_a", "--n", "5", "--flops", "1:2", "--max-tries", "5000"],
            1,
            "widen",
        ),
        (["--space", "anynetx_a"], 2, "required"),
    ],
)
def test_cli_errors_are_one_line_and_leave_no_file(tmp_path, capsys, argv, code, message):
    """Bad values exit 1, usage errors (argparse) 2; the error is the last line of stderr."""
    out = tmp_path / "specs.jsonl"
    out.write_text("previous\n")
    args = argv if "--n" not in argv else [*argv, "--out", str(out)]
    assert main(args) == code
    captured = capsys.readouterr()
    last = captured.err.strip().splitlines()[-1]
    assert ("error: " in last) and message in last and captured.out == ""
    assert "Traceback" not in captured.err
    assert out.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["specs.jsonl"]


def test_cli_out_in_a_missing_folder_names_that_path(tmp_path, capsys):
    out = tmp_path / "missing" / "x.jsonl"
    assert (
        main(["--space", "anynetx_a", "--n", "2", "--flops", "150e6:250e6", "--out", str(out)]) == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: --out {out}: folder ") and ".tmp" not in err[-1]


def test_cli_help(capsys):
    assert main(["--help"]) == 0
    assert "anynetx_a" in capsys.readouterr().out


def test_write_is_atomic(tmp_path):
    out = tmp_path / "specs.jsonl"
    bad = AnyNetSpec(depths=(1,) * 4, widths=(8, 8, 8, 12), group_widths=(1, 1, 1, 8))
    with pytest.raises(ValueError, match="adjust_compatibility"):
        write_specs_jsonl(out, [REFERENCE_SPECS["regnetx_200mf"], bad])
    assert list(tmp_path.iterdir()) == []


def test_read_round_trips_references(tmp_path):
    out = tmp_path / "refs.jsonl"
    write_specs_jsonl(out, REFERENCE_SPECS.values())
    assert read_specs_jsonl(out) == list(REFERENCE_SPECS.values())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["spec"].update(depthz=[1]), r":2: unknown AnyNetSpec field\(s\) \['depthz'\]"),
        (lambda r: r["spec"].update(widths=[8, 8, "x", 8]), r":2: widths\[2\] must be an int"),
        (lambda r: r.update(spec_hash="0" * 16), ":2: spec_hash"),
        (lambda r: r.pop("spec"), ':2: expected an object with a "spec" field'),
    ],
)
def test_read_names_line_and_field(tmp_path, edit, message):
    out = tmp_path / "specs.jsonl"
    write_specs_jsonl(out, list(REFERENCE_SPECS.values())[:3])
    lines = out.read_text().splitlines()
    record = json.loads(lines[1])
    edit(record)
    lines[1] = json.dumps(record)
    out.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        read_specs_jsonl(out)


def test_read_reports_invalid_json(tmp_path):
    out = tmp_path / "specs.jsonl"
    out.write_text("{not json\n")
    with pytest.raises(ValueError, match=":1: invalid JSON"):
        read_specs_jsonl(out)
