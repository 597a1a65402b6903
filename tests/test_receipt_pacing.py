"""The receipt pacer: slots in turn, the interval stretched while the writer is busy and
brought back as the load falls."""

from __future__ import annotations

from rushhour.server._receipts import BUSY, MAX_STRETCH, SLOTS, ReceiptPacer


def run_round(pacer: ReceiptPacer, busy_ns: int, now_s: float) -> list[int]:
    slots = []
    for _ in range(pacer.slots):
        slots.append(pacer.slot)
        pacer.flushed(busy_ns, now_s)
    return slots


def test_slots_in_turn_and_the_interval_spread_over_them() -> None:
    pacer = ReceiptPacer(250)
    assert pacer.slots == SLOTS
    assert run_round(pacer, 0, 1.0) == list(range(SLOTS))
    assert abs(pacer.tick_s() * SLOTS - 0.25) < 1e-9
    assert ReceiptPacer(5).slots == 1  # too short to split


def test_the_interval_stretches_under_load_and_recovers() -> None:
    pacer = ReceiptPacer(250)
    busy, now = 0, 0.0
    run_round(pacer, busy, now)  # the first round only takes a reading
    assert pacer.current_interval_ms == 250
    seen = []
    for _ in range(4):  # rounds with the writer busy 90 % of the time
        now += 1.0
        busy += int(0.9e9)
        run_round(pacer, busy, now)
        seen.append(pacer.current_interval_ms)
    assert seen == [500, 1000, 250 * MAX_STRETCH, 250 * MAX_STRETCH]
    for _ in range(3):  # load below the threshold
        now += 1.0
        busy += int(BUSY / 2 * 1e9)
        run_round(pacer, busy, now)
    assert pacer.current_interval_ms == 250
