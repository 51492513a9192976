"""``Pipeline.process`` pauses the cyclic garbage collector for its batch (a batch keeps every
event alive until its outcomes are folded: collections would only re-scan them) and leaves it
as it found it: on after a batch when it was on, also when delivery raised; off when it was off;
still paused while another batch holds the pause."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence

import pytest

from heap_forwarder.heap.items import HeapItem
from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.outcome import DELIVERED, Outcome
from heap_forwarder.pipeline import Pipeline, collector_paused
from sample_events import raw as load_raw


class _Recorder:
    """Delivers everything; notes whether the collector was on while it did."""

    def __init__(self, fail: bool = False) -> None:
        self.collecting: list[bool] = []
        self.fail = fail

    def deliver(self, items: Sequence[HeapItem], *, deadline: float | None = None) -> list[Outcome]:
        self.collecting.append(gc.isenabled())
        if self.fail:
            raise RuntimeError("delivery broke")
        return [DELIVERED] * len(items)


def _pipeline(deliverer: _Recorder) -> Pipeline:
    return Pipeline(Mapper(build_playbook(), {"MY_APP_ID": "demo-app-id"}), deliverer)


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


def test_the_collector_is_off_during_a_batch_and_on_again_after_it() -> None:
    gc.enable()
    recorder = _Recorder()
    outcomes = _pipeline(recorder).process([load_raw("order_completed"), load_raw("page")])
    assert outcomes == [DELIVERED, DELIVERED]
    assert recorder.collecting == [False]
    assert gc.isenabled()


def test_the_collector_is_on_again_when_delivery_raises() -> None:
    gc.enable()
    with pytest.raises(RuntimeError, match="delivery broke"):
        _pipeline(_Recorder(fail=True)).process([load_raw("order_completed")])
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    _pipeline(_Recorder()).process([load_raw("order_completed")])
    assert not gc.isenabled()


def test_a_batch_inside_another_pause_leaves_the_collector_to_the_last_one_out() -> None:
    gc.enable()
    recorder = _Recorder()
    with collector_paused():
        _pipeline(recorder).process([load_raw("order_completed")])
        assert not gc.isenabled()
    assert recorder.collecting == [False]
    assert gc.isenabled()
