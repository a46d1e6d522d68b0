"""The supervisor's verdict rules, from referee reports alone (logic only; no Docker)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "sandbox" / "container"))
from supervisor import judge  # noqa: E402

LOADED = {"load": "ok"}


def passed(i):
    return {"check": i, "outcome": "passed", "detail": ""}


def test_all_checks_passed_and_done_is_a_pass():
    v = judge([LOADED, passed(0), passed(1), {"done": True}], 2, False, 5)
    assert v["status"] == "passed"


def test_a_missing_done_is_never_a_pass():
    # Every check passed but the referee did not finish: something killed it.
    assert judge([LOADED, passed(0)], 1, False, 5)["status"] == "error"


def test_a_missing_check_report_is_never_a_pass():
    assert judge([LOADED, passed(0), {"done": True}], 2, False, 5)["status"] == "failed"


def test_timeout_wins_over_partial_passes():
    v = judge([LOADED, passed(0)], 3, True, 5)
    assert v["status"] == "timeout"
    assert [c[0] for c in v["checks"]] == ["passed", "not_run", "not_run"]


def test_load_error_and_setup_error():
    assert judge([{"load": "error", "detail": "SyntaxError"}], 1, False, 5)["status"] == "error"
    assert judge([{"setup_error": "NameError"}], 1, False, 5)["detail"].startswith(
        "test setup failed"
    )


def test_dead_candidate_is_an_error_and_failure_is_failed():
    died = {"check": 0, "outcome": "error", "detail": "CandidateDied", "died": True}
    assert judge([LOADED, died], 2, False, 5)["status"] == "error"
    failed = {"check": 1, "outcome": "failed", "detail": "AssertionError: x"}
    v = judge([LOADED, passed(0), failed, {"done": True}], 2, False, 5)
    assert (v["status"], v["detail"]) == ("failed", "AssertionError: x")


def test_out_of_range_reports_are_ignored():
    bogus = {"check": 7, "outcome": "passed", "detail": ""}
    assert judge([LOADED, bogus, {"done": True}], 1, False, 5)["status"] == "failed"
