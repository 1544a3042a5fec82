from hostos.node.crashes import Crashes, due, exited, started
from hostos.site.model import Restart

ALWAYS = Restart.model_validate({"policy": "always", "backoff": {"initial": "1s", "max": "8s"}})


def test_first_crash_after_a_long_run_restarts_at_once() -> None:
    state = started(Crashes(), now=0.0)
    state = exited(state, ALWAYS, 1, now=100.0)
    assert state.next_retry == 100.0 and due(state, 100.0)


def test_quick_crashes_back_off_exponentially_up_to_the_cap() -> None:
    state, now, delays = Crashes(), 0.0, []
    for _ in range(6):
        state = started(state, now)
        now += 0.5  # crashes half a second after each start
        state = exited(state, ALWAYS, 1, now)
        assert state.next_retry is not None
        delays.append(state.next_retry - now)
        now = state.next_retry
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert state.restarts == 5 and state.last_exit == 1  # the first start is no restart


def test_policies() -> None:
    no = Restart.model_validate("no")
    on_failure = Restart.model_validate("on-failure")
    assert exited(Crashes(), no, 1, 5.0).next_retry is None
    assert exited(Crashes(), on_failure, 0, 5.0).next_retry is None
    assert exited(Crashes(), on_failure, 2, 5.0).next_retry == 5.0
    assert not due(Crashes(), 5.0)
