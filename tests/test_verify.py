"""`polarref verify` passes good backends and catches broken ones."""
import pytest

from polarref import cli, verify
from polarref.backends import load_backend
from polarref.strategies import SMALL

BROKEN = {
    "tests.broken_backends:no_midpoint": {"matches_golden_decode", "matches_golden_scores"},
    "tests.broken_backends:swapped_pairing": {"matches_golden_codes", "pairings_agree"},
    "tests.broken_backends:unclipped_max": {"extremes_in_end_bins", "radius_within_half_step",
                                            "matches_golden_codes"},
    "tests.broken_backends:float32_params": {"matches_golden_codes", "matches_golden_decode"},
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_backend_fails_the_properties_it_breaks(name):
    backend = load_backend(name)
    by_name = {p.name: p for p in verify.PROPERTIES}
    for prop_name in sorted(BROKEN[name]):
        result = verify.run_property(by_name[prop_name], backend, examples=50, seed=0, limits=SMALL)
        assert result.status == "FAIL", f"{prop_name} did not catch {name}"
        # Hypothesis says "Falsifying example" or, in newer versions, "Failing test case"
        assert any("Falsifying example" in note or "Failing test case" in note
                   for note in result.notes), result.notes


def test_subset_backend_reports_not_applicable():
    backend = load_backend("tests.broken_backends:no_midpoint")   # decode and scores only
    result = verify.run_property(verify.PROPERTIES[0], backend)   # codes_in_range needs encode
    assert result.status == "n/a" and "encode" in result.message


def test_cli_exit_codes(capsys):
    assert cli.main(["verify", "--backend", "numpy", "--examples", "5"]) == 0
    assert "0 failed" in capsys.readouterr().out
    assert cli.main(["verify", "--backend", "tests.broken_backends:no_midpoint", "--examples", "20",
                     "--property", "matches_golden_scores"]) == 1
    out = capsys.readouterr().out
    assert "FAIL matches_golden_scores" in out and "replay: polarref verify" in out
    assert cli.main(["verify", "--backend", "no.such.module"]) == 2
