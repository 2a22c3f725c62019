"""The collector settings of a run (connector/extract/heap.py): applied while runs last,
restored after the last one, and cycles still collected."""

from __future__ import annotations

import gc
import weakref

from connector.extract.heap import YOUNG_THRESHOLD, parsing_heap


def test_settings_hold_while_any_run_lasts_and_are_restored_after_the_last():
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    first, second = parsing_heap(), parsing_heap()
    first.__enter__()
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD and gc.get_freeze_count() > frozen
    second.__enter__()  # a second run in another thread, overlapping
    first.__exit__(None, None, None)
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD  # the second still runs
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen


def test_a_cycle_made_during_a_run_is_still_collected():
    class Node:
        pass

    with parsing_heap():
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None


def test_an_error_in_the_run_restores_the_settings():
    before = gc.get_threshold()
    try:
        with parsing_heap():
            raise ValueError("the run failed")
    except ValueError:
        pass
    assert gc.get_threshold() == before
