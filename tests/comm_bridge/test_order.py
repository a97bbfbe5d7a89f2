"""comm_bridge.order: page messages back in the order the page sent them (marimo posts each separately)."""

from __future__ import annotations

import random

from comm_bridge.order import HOLD, SOURCES, Reorder


def _msg(src: str, seq: int) -> dict[str, object]:
    return {"op": "body", "id": 1, "src": src, "seq": seq}


def _seqs(out: list[tuple[object, list[memoryview]]]) -> list[int]:
    return [m["seq"] for m, _ in out]  # type: ignore[index]


def test_shuffled_messages_come_out_in_order() -> None:
    order = Reorder()
    seqs = list(range(200))
    random.Random(7).shuffle(seqs)
    out = []
    for seq in seqs:
        out += order.push(_msg("a", seq), [])
    assert _seqs(out) == list(range(200))
    assert order.held == {}


def test_sources_are_ordered_apart() -> None:
    order = Reorder()
    assert order.push(_msg("a", 1), []) == []
    assert _seqs(order.push(_msg("b", 0), [])) == [0]
    assert _seqs(order.push(_msg("a", 0), [])) == [0, 1]


def test_unnumbered_messages_pass_and_repeats_are_dropped() -> None:
    order = Reorder()
    plain = {"op": "ack", "id": 3}
    assert order.push(plain, []) == [(plain, [])]
    assert _seqs(order.push(_msg("a", 0), [])) == [0]
    assert order.push(_msg("a", 0), []) == []


def test_a_gap_that_never_fills_is_given_up_on() -> None:
    order = Reorder()
    out = []
    for seq in range(1, HOLD + 2):
        out += order.push(_msg("a", seq), [])
    assert _seqs(out) == list(range(1, HOLD + 2))
    assert sum(len(h) for h in order.held.values()) == 0


def test_sources_are_bounded() -> None:
    order = Reorder()
    for n in range(SOURCES + 10):
        order.push(_msg(f"s{n}", 1), [])
    assert len(order.next) == SOURCES and len(order.held) <= SOURCES
