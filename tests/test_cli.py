"""The `polarref` command: demo prints its table, and the delegating subcommands get their options."""
import pytest

from polarref import cli


def test_demo_prints_each_configuration(capsys):
    assert cli.main(["demo", "--bits", "r4t4", "r2t2"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("r4t4", "r2t2"))}
    assert set(rows) == {"r4t4", "r2t2"}
    # stored: one byte per pair; packed: r + t bits per pair; plus 4 fp16 parameters per pair and group of 128
    assert rows["r4t4"][1:3] == ["4.250", "4.250"] and rows["r2t2"][1:3] == ["4.250", "2.250"]
    assert "numba" in out.split("backends:")[1]


@pytest.mark.parametrize("argv, words", [
    (["--bits", "r4x4"], ["--bits", "r4x4"]),
    (["--bits", "r9t9"], ["--bits", "r + t <= 8"]),
    (["--bits", "r0t4"], ["--bits", "r >= 1"]),
    (["--group-size", "0"], ["--group-size", "at least 1"]),
])
def test_demo_rejects_bad_arguments(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert all(word in err for word in words), err


def test_demo_refuses_missing_file_and_oversized_group(tmp_path, capsys):
    assert cli.main(["demo", "--keys", str(tmp_path / "none.npz")]) == 2
    assert "--keys" in capsys.readouterr().err
    assert cli.main(["demo", "--group-size", "4096"]) == 2     # the sample has 512 tokens
    assert "nothing would be quantized" in capsys.readouterr().err


def test_verify_replay_line_keeps_the_shapes(capsys):
    argv = ["verify", "--backend", "tests.broken_backends:no_midpoint", "--examples", "10", "--small",
            "--property", "matches_golden_scores"]
    assert cli.main(argv) == 1
    assert "--small --property matches_golden_scores" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["verify", "--examples", "0"])


def test_analyze_receives_its_options(tmp_path, monkeypatch):
    """`polarref analyze --out X ...` reaches analysis.report.main untouched (argparse once ate them)."""
    from analysis import report

    seen = []
    monkeypatch.setattr(report, "main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["analyze", "--out", str(tmp_path), "--bits", "r4t4"]) == 0
    assert seen == [["--out", str(tmp_path), "--bits", "r4t4"]]


@pytest.mark.parametrize("command", ["analyze", "capture", "bench"])
def test_delegated_help(command, capsys):
    try:
        code = cli.main([command, "--help"])
    except SystemExit as exit_:     # argparse's own --help exits; analysis.report returns instead
        code = exit_.code
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: polarref " + command)
    assert ("--json" in out) or ("--out" in out)


def test_bench_gpu_flag_selects_the_gpu_benchmark(monkeypatch):
    from benchmarks import cpu, gpu

    calls = []
    monkeypatch.setattr(cpu, "main", lambda argv: calls.append(("cpu", argv)) or 0)
    monkeypatch.setattr(gpu, "main", lambda argv: calls.append(("gpu", argv)) or 0)
    assert cli.main(["bench", "--gpu", "--quick"]) == 0
    assert cli.main(["bench", "--repeats", "3"]) == 0
    assert calls == [("gpu", ["--quick"]), ("cpu", ["--repeats", "3"])]
