"""The decoded-pixel budget: decoding inside a scope charges the pixels it will decode,
waits while they do not fit, and gives them back when the scope ends."""

from __future__ import annotations

import io
import threading

import numpy as np
from PIL import Image

from clipserve.models.images import decode_image
from clipserve.models.pixel_budget import PixelBudget, charge_decoded_pixels
from tests.waiting import FAILSAFE_S, wait_until


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_decoding_in_a_scope_charges_its_pixels_then_gives_them_back() -> None:
    budget = PixelBudget(10_000_000)
    with budget.held():
        decode_image(png(2000, 1000))
        assert budget.held_pixels == 2_000_000
        decode_image(np.zeros((100, 50, 3), np.uint8))  # a tensor's conversion counts too
        assert budget.held_pixels == 2_005_000
    assert budget.held_pixels == 0 and budget.peak == 2_005_000
    decode_image(png(300, 300))  # outside a scope: not counted, not limited
    assert budget.peak == 2_005_000


def test_a_thread_waits_until_its_pixels_fit() -> None:
    """A holds 2 MP of a 3 MP budget; B's 2 MP image waits until A is done: the budget
    never holds more than 3 MP."""
    budget = PixelBudget(3_000_000)
    a_holds, a_may_finish, b_decoded = threading.Event(), threading.Event(), threading.Event()

    def thread_a() -> None:
        with budget.held():
            charge_decoded_pixels(2_000_000)
            a_holds.set()
            assert a_may_finish.wait(FAILSAFE_S)

    def thread_b() -> None:
        assert a_holds.wait(FAILSAFE_S)
        with budget.held():
            decode_image(png(2000, 1000))
            b_decoded.set()

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for thread in threads:
        thread.start()
    wait_until(lambda: budget.waiting == 1, "B waits for room")
    assert not b_decoded.is_set() and budget.held_pixels == 2_000_000
    a_may_finish.set()
    for thread in threads:
        thread.join(FAILSAFE_S)
    assert b_decoded.is_set()
    assert budget.peak == 2_000_000 and budget.held_pixels == 0


def test_an_image_larger_than_the_budget_decodes_alone() -> None:
    budget = PixelBudget(1_000_000)
    with budget.held():
        image = decode_image(png(2000, 1500))
    assert image.size == (2000, 1500) and budget.peak == 3_000_000


def test_more_pixels_in_a_scope_that_already_holds_some_never_wait_for_itself() -> None:
    budget = PixelBudget(1_000_000)
    with budget.held():
        charge_decoded_pixels(800_000)
        charge_decoded_pixels(800_000)  # would not fit, but waiting would wait for itself
    assert budget.peak == 1_600_000 and budget.held_pixels == 0
