"""The one table of what an error means on each front-end (``errors_map.ERRORS``)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from clipserve import errors
from clipserve.server.errors_map import (
    ERRORS,
    BodyTooLargeError,
    grpc_status,
    http_status,
    in_band,
    meaning,
    metric_label,
    ws_close_code,
)


def test_every_server_error_of_the_tree_has_its_own_row() -> None:
    for name in ("AuthenticationError", "OverloadedError", "ServerUnavailableError",
                 "ModelUnavailableError", "InputRefusedError", "InvalidInputError",
                 "ModelError", "ClipServeError"):  # fmt: skip
        assert getattr(errors, name) in ERRORS, name


def test_the_most_specific_row_wins() -> None:
    class Custom(errors.InputRefusedError):
        pass

    assert meaning(Custom("x")) == ERRORS[errors.InputRefusedError]
    assert metric_label(errors.ModelUnavailableError("x")) == "error"
    assert http_status(errors.ModelUnavailableError("x")) == 503
    assert http_status(errors.ModelError("x")) == 500
    assert meaning(KeyError("a bug")) == ERRORS[Exception]


def test_an_oversized_body_is_refused_with_413() -> None:
    too_big = BodyTooLargeError("body above the limit")
    assert (metric_label(too_big), http_status(too_big)) == ("refused", 413)
    assert grpc_status(too_big) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("error", "label", "http", "code"),
    [
        (errors.AuthenticationError("x"), "unauthenticated", 401, grpc.StatusCode.UNAUTHENTICATED),
        (errors.OverloadedError("x"), "overloaded", 429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.ServerUnavailableError("x"), "error", 503, grpc.StatusCode.UNAVAILABLE),
        (errors.InputRefusedError("x"), "refused", 400, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.InvalidInputError("x"), "invalid", 400, grpc.StatusCode.INVALID_ARGUMENT),
        (RuntimeError("a bug"), "error", 500, grpc.StatusCode.INTERNAL),
    ],
)
def test_labels_and_codes(error: Exception, label: str, http: int, code: grpc.StatusCode) -> None:
    assert (metric_label(error), http_status(error), grpc_status(error)) == (label, http, code)


def test_which_errors_are_answered_in_band() -> None:
    # gRPC: everything but whole-server problems is an ERROR reply; the stream goes on
    for error in (errors.InvalidInputError("x"), errors.ModelError("x"), RuntimeError("bug")):
        assert in_band(error, "grpc")
    for error in (errors.OverloadedError("x"), errors.ServerUnavailableError("x")):
        assert not in_band(error, "grpc")
    # WebSocket: overload is answered in band; shutdown and bugs close the connection
    assert in_band(errors.OverloadedError("x"), "websocket")
    assert in_band(errors.InvalidInputError("x"), "websocket")
    assert not in_band(errors.ServerUnavailableError("x"), "websocket")
    assert ws_close_code(errors.ServerUnavailableError("x")) == 1001
    assert not in_band(RuntimeError("bug"), "websocket")
    assert ws_close_code(RuntimeError("bug")) == 1011
    assert ws_close_code(errors.InvalidInputError("not a message")) == 1007


def test_a_cancelled_request_has_its_own_label() -> None:
    assert metric_label(asyncio.CancelledError()) == "cancelled"
