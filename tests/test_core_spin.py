"""Spin, then sleep (``core/spin.py``): a thread waiting for a reply on its own
connection polls for it a while before it sleeps in ``poll``, and stops polling on a
connection whose replies come too late for it.

The policy is pure and tested by feeding it outcomes; the channel tests use two TCP
hosts and a real owner thread, and decide whether a reply comes during the poll or after
it with gates, not with timing.
"""
import asyncio

import pytest

from actorrt.core import Actor, Host, spin
from actorrt.core.spin import MAX_BACKOFF, MAX_MISSES, SpinPolicy

from test_core_comm import run  # noqa: F401
from test_core_thread_channel import Outcomes, channel_pair


# --- the policy ------------------------------------------------------------------------
def budgets(policy, n):
    return [policy.next_budget() for _ in range(n)]


def test_a_connection_whose_replies_come_while_it_polls_polls_every_time():
    policy = SpinPolicy(1e-4)
    for _ in range(5):
        assert policy.next_budget() == 1e-4
        policy.polled(True)


def test_a_connection_whose_polls_all_miss_parks_for_twice_as_many_waits_each_time_up_to_the_cap():
    policy = SpinPolicy(1e-4)
    parked = []
    assert policy.next_budget() == 1e-4
    for _ in range(9):
        policy.polled(False)  # the wait that polled missed its reply
        n = 0
        while policy.next_budget() == 0.0:  # (ends on the next wait that polls)
            n += 1
        parked.append(n)
    # One miss is not yet many (an average over ~8 polls); then 1, 2, 4 ... 64.
    assert parked == [0, 1, 2, 4, 8, 16, 32, 64, 64]
    assert MAX_BACKOFF == 64


def test_an_occasional_miss_among_catches_keeps_it_polling():
    policy = SpinPolicy(1e-4)
    for i in range(200):
        assert policy.next_budget() == 1e-4
        policy.polled(i % 10 != 0)  # one in ten missed
    assert policy.misses <= MAX_MISSES


def waits_that_polled(policy, outcomes):
    """Run waits until ``outcomes`` (one per poll) run out; how many of them polled."""
    outcomes, waits, polled = iter(outcomes), 0, 0
    for waits in range(1, 100_000):
        if policy.next_budget():
            polled += 1
            caught = next(outcomes, None)
            if caught is None:
                return polled, waits
            policy.polled(caught)
    raise AssertionError("ran out of waits")


def test_replies_that_come_as_late_as_the_budget_half_the_time_stop_the_polling():
    policy = SpinPolicy(1e-4)
    polled, waits = waits_that_polled(policy, [True, False] * 30)
    assert polled / waits < 0.1  # (polls a wait in ~64 once it has seen that)


def test_polls_that_catch_again_bring_the_polling_back():
    policy = SpinPolicy(1e-4)
    waits_that_polled(policy, [False] * 10)
    assert policy.misses > MAX_MISSES
    waits_that_polled(policy, [True] * 12)  # (the share of misses decays by 1/8 a catch)
    assert policy.misses <= MAX_MISSES
    assert budgets(policy, 5) == [1e-4] * 5


def test_the_budget_comes_from_the_environment_in_microseconds(monkeypatch):
    monkeypatch.setattr(spin, "_cpus", lambda: 2)
    monkeypatch.setenv("ACTORRT_SPIN_US", "250")
    assert spin.default_budget() == pytest.approx(250e-6)
    monkeypatch.setenv("ACTORRT_SPIN_US", "0")
    assert spin.default_budget() == 0.0
    monkeypatch.delenv("ACTORRT_SPIN_US")
    assert spin.default_budget() == pytest.approx(spin.DEFAULT_BUDGET_US / 1e6)


def test_one_cpu_never_polls(monkeypatch):
    monkeypatch.setattr(spin, "_cpus", lambda: 1)
    monkeypatch.setenv("ACTORRT_SPIN_US", "250")
    assert spin.default_budget() == 0.0


@pytest.mark.parametrize("text", ["fast", "-5", "nan", "inf"])
def test_a_malformed_budget_is_refused_by_name_when_the_host_is_made(monkeypatch, text):
    monkeypatch.setenv("ACTORRT_SPIN_US", text)
    with pytest.raises(ValueError, match="ACTORRT_SPIN_US must be a number of microseconds >= 0"):
        Host("tcp://127.0.0.1:0")


# --- on a thread's own connection ------------------------------------------------------
def watch_polls(channel, after=None):
    """Record what each of the owner's polls found (True: the reply came meanwhile);
    ``after(found)`` runs on the owner thread as each poll ends."""
    found = []
    poll = channel.comm.readable_within

    def watched(budget):
        result = poll(budget)
        found.append(result)
        if after is not None:
            after(result)
        return result
    channel.comm.readable_within = watched
    return found


def test_a_reply_that_comes_while_the_owner_polls_is_read_without_sleeping(monkeypatch):
    monkeypatch.setattr(spin, "_cpus", lambda: 2)
    monkeypatch.setenv("ACTORRT_SPIN_US", str(30e6))  # (30 s: the reply is surely in by then)

    async def main():
        async with channel_pair() as (h0, h1, ref, owner, channel):
            found = watch_polls(channel)
            out = Outcomes()

            def call():
                rid = channel.ask(ref.id, "add", {"a": 2, "b": 3}, out.settle("add"), True)
                return channel.wait(rid)

            for _ in range(3):
                assert await owner.do(call) is True
                assert out.got["add"] == (True, 5, owner.ident)
            assert found == [True, True, True]
    run(main())


class Gate(Actor):
    """Answers each ``wait`` once it has both the ask and a value given by ``open``,
    whichever comes last."""

    def __init__(self):
        self.held = self.value = None

    def handle_wait(self, reply):
        self.held = reply
        self._answer()

    def open(self, value):
        self.value = value
        self._answer()

    def _answer(self):
        if self.held is not None and self.value is not None:
            self.held.ok(self.value)
            self.held = self.value = None


def test_replies_held_past_the_poll_are_still_read_and_then_a_wait_parks_at_once(monkeypatch):
    monkeypatch.setattr(spin, "_cpus", lambda: 2)
    monkeypatch.setenv("ACTORRT_SPIN_US", "1000")

    async def main():
        async with channel_pair() as (h0, h1, ref, owner, channel):
            gate = Gate()
            gate_ref = h1.spawn(gate, "gate")
            loop = asyncio.get_running_loop()
            values = iter(range(7, 100))

            def after(found):  # (a held reply is let go only once the owner's poll gave up)
                if not found:
                    loop.call_soon_threadsafe(gate.open, next(values))
            found = watch_polls(channel, after)
            out = Outcomes()

            def call(actor, op, fields, name):
                def go():
                    rid = channel.ask(actor, op, fields, out.settle(name), True)
                    return channel.wait(rid)
                return go

            for name, value in (("held-1", 7), ("held-2", 8)):
                assert await owner.do(call(gate_ref.id, "wait", {}, name)) is True
                assert out.got[name] == (True, value, owner.ident)  # (read by the owner, after sleeping)
            assert found == [False, False]  # (two misses in a row are many)
            assert await owner.do(call(ref.id, "add", {"a": 1}, "parked")) is True
            assert found == [False, False]  # this wait did not poll
            assert await owner.do(call(ref.id, "add", {"a": 2}, "polled")) is True
            assert len(found) == 3  # and this one did again
            assert out.got["parked"][:2] == (True, 1) and out.got["polled"][:2] == (True, 2)
    run(main())


def test_a_budget_of_zero_never_polls(monkeypatch):
    monkeypatch.setenv("ACTORRT_SPIN_US", "0")

    async def main():
        async with channel_pair() as (h0, h1, ref, owner, channel):
            found = watch_polls(channel)
            out = Outcomes()

            def call():
                return channel.wait(channel.ask(ref.id, "echo", {"x": 1}, out.settle("echo"), True))

            assert await owner.do(call) is True
            assert out.got["echo"] == (True, 1, owner.ident) and found == []
    run(main())
