"""The degraded state's transitions (hub.sources.health_state.CheckState.grade/fail), and stored states
from before it existed."""

from __future__ import annotations

from hub.sources.health_state import CheckState


def kinds(st: CheckState) -> list[str]:
    return [p["kind"] for p in st.pending]


def test_degraded_after_n_slow_answers_and_up_after_m_good_ones() -> None:
    st = CheckState()
    st.grade("api", "slow", 1.0, after=2, back_after=2)
    assert (st.state, kinds(st)) == ("up", [])
    st.grade("api", "slow", 2.0, after=2, back_after=2)
    assert (st.state, kinds(st), st.pending[0]["reason"]) == ("degraded", ["degraded"], "slow")
    assert st.spell == "1970-01-01T00:00:01.000Z"  # named by the first slow answer of the run
    st.grade("api", None, 3.0, after=2, back_after=2)
    st.grade("api", "slow", 4.0, after=2, back_after=2)  # a slow one in between starts the count again
    st.grade("api", None, 5.0, after=2, back_after=2)
    assert st.state == "degraded"
    st.grade("api", None, 6.0, after=2, back_after=2)
    assert (st.state, kinds(st), st.pending[1]["down_for"]) == ("up", ["degraded", "restored"], 4.0)


def test_a_check_that_goes_down_is_no_longer_degraded() -> None:
    st = CheckState()
    st.grade("api", "slow", 1.0, after=1, back_after=1)
    st.up = False  # what the source does at failures_before_down
    st.fail()
    assert (st.state, st.degraded, st.slow) == ("down", False, 0)
    st.grade("api", "slow", 2.0, after=1, back_after=1)  # slow answers while down change nothing yet
    assert (st.state, kinds(st)) == ("down", ["degraded"])


def test_a_state_stored_before_the_degraded_state_loads_as_not_degraded() -> None:
    old = {"up": True, "since": None, "since_ts": 5.0, "failures": 0}
    st = CheckState.from_dict(old)
    assert (st.state, st.slow, st.fast, st.spell) == ("up", 0, 0, "")
    st.grade("api", "slow", 1.0, after=1, back_after=1)
    assert CheckState.from_dict(st.to_dict()).to_dict() == st.to_dict()
