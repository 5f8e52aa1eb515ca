"""queue/daily.py, the once-a-UTC-day scheduling the DMARC and TLS report services share:
two nodes on one store (SQLite here; the lease itself is in tests/test_store_contract.py)
and a clock the test sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailhaven.queue.daily import DAY, DailyJob, seconds_until_after_midnight, utc_day
from mailhaven.store.sqlite import SQLiteStore

MIDNIGHT = 20_000 * DAY


async def test_once_a_day_on_one_node_and_again_after_a_failure(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store")
    await store.open()
    clock = [MIDNIGHT + 3600.0]
    runs: list[tuple[str, int]] = []
    fail = [False]

    def node(name: str) -> DailyJob:
        async def job(now: float) -> None:
            if fail[0]:
                raise RuntimeError("DNS down")
            runs.append((name, utc_day(now)))
        return DailyJob(store, "reports", name, job, clock=lambda: clock[0])

    a, b = node("a"), node("b")
    try:
        assert await a.run_if_due() and runs == [("a", 20_000)]
        assert not await a.run_if_due()                       # done for today
        await store.acquire_lease("reports", "a", ttl=600.0, now=clock[0])
        assert not await b.run_if_due() and b.done_day == 20_000    # a holds the lease: left to a
        await store.release_lease("reports", "a")
        assert not await b.run_if_due()                       # still a's day
        clock[0] += DAY                                       # the next day, a fails once
        fail[0] = True
        with pytest.raises(RuntimeError):
            await a.run_if_due()
        assert a.done_day == 20_000                           # not done: tried again
        fail[0] = False
        assert await a.run_if_due() and runs[-1] == ("a", 20_001)
        assert await store.acquire_lease("reports", "b", ttl=600.0, now=clock[0])   # a released it
    finally:
        await store.close()


def test_sleep_until_just_after_midnight() -> None:
    assert seconds_until_after_midnight(MIDNIGHT + 3600.0) == DAY - 3600.0 + 300.0
    assert seconds_until_after_midnight(MIDNIGHT) == DAY + 300.0
    assert seconds_until_after_midnight(MIDNIGHT - 1.0, delay=0.0) == 1.0
