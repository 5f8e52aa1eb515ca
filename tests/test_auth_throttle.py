"""The shared login throttle (auth/throttle.py) against a real store, with an injected
clock and sleep: delays, limits, what a success forgets, IPv6 /64 keys, the gate."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mailhaven.auth.throttle import LoginBlocked, LoginThrottle, source_address
from mailhaven.config import SecurityConfig

POLICY = SecurityConfig(login_failures_per_address=6, login_failures_per_account=3, login_window=600.0,
                        login_block=900.0, login_delay=1.0, login_max_delay=4.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.fixture
async def env(store: Any) -> tuple[LoginThrottle, Clock]:
    await store.add_domain("x.example")
    await store.add_account("bob@x.example", "right")
    clock = Clock()
    return LoginThrottle(store, POLICY, clock=clock, sleep=clock.sleep), clock


def test_source_address_groups_ipv6_by_64() -> None:
    assert source_address("192.0.2.5") == "192.0.2.5"
    assert source_address("2001:db8:1:2:aaaa::1") == source_address("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert source_address("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert source_address("::ffff:192.0.2.5") == "192.0.2.5"
    assert source_address("fe80::1%eth0") == "fe80::/64"


async def test_delays_double_and_the_pair_blocks_first(env: tuple[LoginThrottle, Clock]) -> None:
    t, clock = env
    for _ in range(2):
        assert await t.authenticate("192.0.2.5", "bob@x.example", "wrong") is None
    with pytest.raises(LoginBlocked):                     # the pair's third failure
        await t.authenticate("192.0.2.5", "BOB@x.example", "wrong")
    assert clock.slept == [1.0, 2.0, 4.0]
    with pytest.raises(LoginBlocked) as blocked:          # even the right password, before checking it
        await t.authenticate("192.0.2.5", "bob@x.example", "right")
    assert blocked.value.retry_after == pytest.approx(900.0)
    assert clock.slept == [1.0, 2.0, 4.0]
    assert await t.authenticate("192.0.2.99", "bob@x.example", "right") is not None   # the owner elsewhere
    assert await t.authenticate("192.0.2.5", "carol@x.example", "wrong") is None       # other names: not yet
    clock.now += 901
    assert await t.authenticate("192.0.2.5", "bob@x.example", "right") is not None


async def test_the_address_blocks_across_names_and_success_does_not_reset_it(env: tuple[LoginThrottle, Clock]) -> None:
    t, clock = env
    for i in range(5):
        assert await t.authenticate("2001:db8::1", f"u{i}@x.example", "wrong") is None
        assert await t.authenticate("2001:db8::2", "bob@x.example", "right") is not None  # one of them owns bob
    with pytest.raises(LoginBlocked):
        await t.authenticate("2001:db8::3", "u9@x.example", "wrong")       # the /64's sixth failure
    with pytest.raises(LoginBlocked):
        await t.check("2001:db8::ffff")
    await t.check("2001:db8:0:1::1")                                       # the next /64 is another address
    assert max(clock.slept) == 4.0


async def test_parallel_attempts_from_one_address_are_answered_one_at_a_time(store: Any) -> None:
    await store.add_domain("x.example")
    await store.add_account("bob@x.example", "right")
    policy = SecurityConfig(login_failures_per_address=4, login_failures_per_account=0,
                            login_delay=0.1, login_max_delay=0.1)
    t = LoginThrottle(store, policy)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def guess(i: int) -> str:
        try:
            return "no" if await t.authenticate("192.0.2.5", f"u{i}@x.example", "wrong") is None else "ok"
        except LoginBlocked:
            return "blocked"

    outcomes = await asyncio.gather(*(guess(i) for i in range(10)),
                                    t.authenticate("192.0.2.6", "bob@x.example", "right"))
    assert sorted(outcomes[:10]) == ["blocked"] * 7 + ["no"] * 3
    assert outcomes[10] is not None                        # another address is not held up
    assert loop.time() - started >= 0.4 - 0.02             # four delays in a row
