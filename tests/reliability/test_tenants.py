"""Tokens per tenant: ``--auth-tokens-file`` beside the single ``--auth-token``, per-tenant
counters on /metrics (named, never the token), token-bucket rate limits that hold under
concurrency on every protocol (429 / RateLimitedError with a retry-after hint that
clipserve's client honours), and reloads that add and remove tokens, ending a removed
token's open streams cleanly."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import signal
import subprocess
import sys

import grpc
import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect

from clipserve import Client
from clipserve.errors import RateLimitedError
from clipserve.server import auth as auth_module
from clipserve.server import logs
from clipserve.server.auth import TokenAuth
from clipserve.server.tenants import load_tokens_file
from clipserve.wire import GRPC_METHOD, WS_SUBPROTOCOL, DataRequestProto
from tests.reliability.gated import GatedModel, texts_request
from tests.reliability.tenants import (
    send_as,
    sha256_hex,
    tenant_sample,
    tenant_server,
    write_tokens,
)
from tests.server_process import wait_for_ports
from tests.waiting import FAILSAFE_S, wait_until

ALICE, BOB, CAROL, SINGLE = "alice-7f3c9d2e", "bob-51aa08c4", "carol-e2b6f117", "single-90d4"
PROTOCOLS = ("grpc", "http", "websocket")
#: refills so slowly that nothing comes back during a test: only the burst counts
NEVER = 0.0001


async def test_each_tenant_is_counted_by_name_on_every_protocol(tmp_path, hash_model) -> None:
    entries = {"alice": ALICE, "bob": f"sha256:{sha256_hex(BOB)}"}
    with tenant_server(tmp_path, entries, hash_model, auth_token=SINGLE) as (server, metrics, _):
        sent = {"alice": 0, "bob": 0, "default": 0}
        for protocol in PROTOCOLS:
            for index in range(2):
                outcome = await send_as(server, protocol, ALICE, texts_request(f"a{index}", 3))
                assert outcome.ok, outcome
                sent["alice"] += 1
            assert (await send_as(server, protocol, f"Bearer {BOB}", texts_request("b", 2))).ok
            sent["bob"] += 1
        assert (await send_as(server, "http", SINGLE, texts_request("s", 1))).ok  # --auth-token
        sent["default"] += 1
        wrong = await send_as(server, "grpc", "not-a-token", texts_request("w", 1))
        assert wrong.code == grpc.StatusCode.UNAUTHENTICATED

        for name, count in sent.items():
            requests = tenant_sample(metrics, "clipserve_tenant_requests_total", tenant=name,
                                     status="ok")  # fmt: skip
            assert requests == count, name
        documents = {"alice": 18, "bob": 6, "default": 1}
        for name, count in documents.items():
            assert tenant_sample(metrics, "clipserve_tenant_documents_total", tenant=name) == count
        async with httpx.AsyncClient() as http:
            exposition = (await http.get(server.urls["http"] + "/metrics")).text
        assert 'tenant="alice"' in exposition and 'tenant="bob"' in exposition
        for secret in (ALICE, BOB, SINGLE, sha256_hex(BOB)):
            assert secret not in exposition  # named, never the token


async def test_the_access_log_names_the_tenant_never_the_token(tmp_path, hash_model, caplog):
    caplog.set_level(logging.INFO, logger=logs.ACCESS.name)
    entries = {"alice": ALICE}
    with tenant_server(tmp_path, entries, hash_model, auth_token=SINGLE) as (server, _, _):
        for protocol in PROTOCOLS:
            assert (await send_as(server, protocol, ALICE, texts_request(protocol, 2))).ok
        assert (await send_as(server, "http", SINGLE, texts_request("single", 1))).ok
    lines = [r for r in caplog.records if r.name == logs.ACCESS.name]
    fields = [r.fields for r in lines]  # type: ignore[attr-defined]
    alice = [f for f in fields if f.get("tenant") == "alice"]
    assert sorted(f["protocol"] for f in alice) == sorted(PROTOCOLS)
    assert all(f["status"] == "ok" and f["client"].startswith("127.0.0.1:") for f in alice)
    assert any(f.get("tenant") == "default" for f in fields)  # the single --auth-token
    assert all("tenant=alice" in r.getMessage() for r in lines if r.fields in alice)  # type: ignore[attr-defined]
    for secret in (ALICE, SINGLE):
        assert all(secret not in r.getMessage() and secret not in str(r.fields) for r in lines)  # type: ignore[attr-defined]


async def test_a_request_rate_limit_holds_under_concurrency(tmp_path, hash_model) -> None:
    entries = {"limited": {"token": ALICE, "requests_per_s": NEVER, "requests_burst": 5}}
    with tenant_server(tmp_path, entries, hash_model) as (server, metrics, _):
        calls = [
            send_as(server, PROTOCOLS[index % 3], ALICE, texts_request(f"r{index}", 2))
            for index in range(21)
        ]
        outcomes = await asyncio.gather(*calls)  # 7 per protocol, all at once
        assert sum(outcome.ok for outcome in outcomes) == 5
        refused = [outcome for outcome in outcomes if not outcome.ok]
        assert len(refused) == 16
        for outcome in refused:
            assert outcome.error == "RateLimitedError", outcome
            assert outcome.retry_after is not None and outcome.retry_after > 1000
            assert "rate limit of tenant 'limited'" in outcome.message
        http_refusals = [outcome for outcome in refused if outcome.code == 429]
        assert http_refusals  # HTTP: 429 (gRPC and WebSocket: the request's ERROR reply)
        assert tenant_sample(metrics, "clipserve_tenant_requests_total", tenant="limited",
                             status="rate_limited") == 16  # fmt: skip
        assert tenant_sample(metrics, "clipserve_items_total", modality="text",
                             outcome="ok") == 10  # fmt: skip


async def test_a_document_rate_limit_holds_under_concurrency(tmp_path, hash_model) -> None:
    entries = {"docs": {"token": ALICE, "documents_per_s": NEVER, "documents_burst": 10}}
    with tenant_server(tmp_path, entries, hash_model) as (server, metrics, _):
        calls = [
            send_as(server, PROTOCOLS[index % 3], ALICE, texts_request(f"d{index}", 3))
            for index in range(9)
        ]
        outcomes = await asyncio.gather(*calls)
        assert sum(outcome.ok for outcome in outcomes) == 3  # 9 documents of 10; 3 more won't fit
        assert {o.error for o in outcomes if not o.ok} == {"RateLimitedError"}
        too_big = await send_as(server, "http", ALICE, texts_request("big", 11))
        assert too_big.code == 400 and "documents_burst 10" in too_big.message
        assert tenant_sample(metrics, "clipserve_tenant_documents_total", tenant="docs") == 9


@pytest.mark.parametrize("scheme", ["grpc", "http", "ws"])
def test_clients_retries_honour_the_retry_after_hint(tmp_path, hash_model, scheme) -> None:
    """20 requests at 25/s from a burst of 2: with retries the job completes, every
    embedding in order; the refusals stay few (each refused request waits for its hint
    instead of being resent at once); without retries the client raises with the hint."""
    entries = {"paced": {"token": ALICE, "requests_per_s": 25, "requests_burst": 2}}
    texts = [f"{scheme} paced {i}" for i in range(40)]
    with tenant_server(tmp_path, entries, hash_model) as (server, metrics, _):
        with Client(server.urls[scheme], ALICE, retries=5, retry_backoff=0.0) as client:
            result = client.encode(texts, batch_size=2, prefetch=4)
        np.testing.assert_array_equal(result, hash_model.encode_texts(texts))
        refusals = tenant_sample(metrics, "clipserve_tenant_requests_total", tenant="paced",
                                 status="rate_limited")  # fmt: skip
        assert 0 < refusals <= 4 * 20  # at most the window each time the bucket runs dry
        client = Client(server.urls[scheme], ALICE, retries=0)
        with client, pytest.raises(RateLimitedError) as info:
            client.encode(texts, batch_size=2, prefetch=8)
        assert info.value.retry_after is not None and 0 < info.value.retry_after <= 0.04 + 1e-3


async def test_reload_adds_and_removes_tokens_and_ends_a_removed_tokens_streams(
    tmp_path,
) -> None:
    model = GatedModel()
    entries = {"alice": ALICE, "bob": BOB}
    with tenant_server(tmp_path, entries, model, max_batch_size=1) as (server, metrics, tokens):
        model.hold()
        bob_grpc = await _open_grpc(server, BOB)
        await bob_grpc.write(texts_request("bob-g", 1))  # held in the model
        assert await asyncio.to_thread(model.entered.wait, FAILSAFE_S)
        bob_ws = await _open_ws(server, BOB)
        await bob_ws.send(texts_request("bob-w", 1).SerializeToString())  # queued behind
        alice_ws = await _open_ws(server, ALICE)

        write_tokens(tokens, {"alice": ALICE, "carol": CAROL})
        assert server.call(server.server.reload_auth) == (["carol"], ["bob"])
        model.gate.set()

        reply = await bob_grpc.read()  # the request in flight is answered ...
        assert reply.header.request_id == "bob-g" and reply.header.status.code == 0
        with pytest.raises(grpc.aio.AioRpcError) as ended:  # ... then the call ends
            await bob_grpc.read()
        assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "tenant 'bob' was revoked" in (ended.value.details() or "")
        reply = DataRequestProto.FromString(await bob_ws.recv())
        assert reply.header.request_id == "bob-w" and reply.header.status.code == 0
        await bob_ws.wait_closed()
        assert bob_ws.close_code == 1008 and "revoked" in (bob_ws.close_reason or "")

        await alice_ws.send(texts_request("alice-after", 1).SerializeToString())
        assert DataRequestProto.FromString(await alice_ws.recv()).header.status.code == 0
        await alice_ws.close()
        for protocol in PROTOCOLS:
            assert not (await send_as(server, protocol, BOB, texts_request("b2", 1))).ok
            assert (await send_as(server, protocol, CAROL, texts_request("c", 1))).ok
            assert (await send_as(server, protocol, ALICE, texts_request("a", 1))).ok

        tokens.write_text("carol: [not, a, token]\n")  # a bad file: the old tokens stay
        with pytest.raises(ValueError, match="tenant 'carol'"):
            server.call(server.server.reload_auth)
        assert (await send_as(server, "http", CAROL, texts_request("still", 1))).ok
    for channel in OPEN_CHANNELS:
        await channel.close()


OPEN_CHANNELS: list[grpc.aio.Channel] = []


def test_sighup_reloads_the_tokens_file(tmp_path) -> None:
    tokens = write_tokens(tmp_path / "tokens.yaml", {"alice": ALICE})
    port_file, log = tmp_path / "ports.json", tmp_path / "serve.log"
    command = [sys.executable, "-m", "clipserve", "serve", "--model", "hash",
               "--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0",
               "--port-file", str(port_file), "--auth-tokens-file", str(tokens)]  # fmt: skip
    with open(log, "w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        ports = wait_for_ports(process, port_file)
        url = f"http://127.0.0.1:{ports['http']}/post"
        body = {"data": [{"text": "hello"}]}

        def status(token: str) -> int:
            headers = {"authorization": token}
            return httpx.post(url, json=body, headers=headers, timeout=FAILSAFE_S).status_code

        assert (status(ALICE), status(BOB)) == (200, 401)
        write_tokens(tokens, {"bob": BOB})
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: "auth tokens reloaded" in log.read_text(), "the server reloads")
        assert (status(ALICE), status(BOB)) == (401, 200)
        tokens.write_text("not: [a, valid, file]\n")
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: "NOT reloaded" in log.read_text(), "the server refuses the file")
        assert status(BOB) == 200 and process.poll() is None
    finally:
        process.kill()
        process.wait()


async def _open_grpc(server, token: str):
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    OPEN_CHANNELS.append(channel)
    call = channel.stream_stream(
        GRPC_METHOD,
        request_serializer=DataRequestProto.SerializeToString,
        response_deserializer=DataRequestProto.FromString,
    )(metadata=(("authorization", token),))
    return call


async def _open_ws(server, token: str):
    return await connect(server.urls["ws"], subprotocols=[WS_SUBPROTOCOL],  # type: ignore[list-item]
                         additional_headers={"authorization": token})  # fmt: skip


def test_token_comparison_is_constant_time(tmp_path, monkeypatch) -> None:
    """Every tenant's digest is compared, whatever matches (no early exit), and only
    fixed-length digests are compared, never the presented token itself."""
    entries = {f"t{i}": f"token-number-{i}" for i in range(7)}
    auth = TokenAuth("the-single-token", write_tokens(tmp_path / "t.yaml", entries))
    compared: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", counting)
    for credential in ("token-number-0", "token-number-6", "the-single-token", "wrong", "x" * 999):
        compared.clear()
        auth.identify(credential)
        assert compared == [(32, 32)] * 8, credential
    assert auth.identify("token-number-3").name == "t3"
    assert auth.identify("Bearer token-number-3").name == "t3"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"a": {"token": "x", "requests_per_s": 1, "colour": "red"}}, "unknown key"),
        ({"a": {"token": "x", "token_sha256": "ab"}}, "exactly one of token or token_sha256"),
        ({"a": "sha256:1234"}, "64 hex digits"),
        ({"a": "same", "b": "same"}, "same token as tenant 'a'"),
        ({"a": {"token": "x", "documents_per_s": -2}}, "positive number"),
        ({"a": {"token": "x", "requests_burst": 3}}, "requests_burst needs requests_per_s"),
        ({"a": ""}, "non-empty"),
    ],
)
def test_tokens_file_mistakes_are_named(tmp_path, entries, message) -> None:
    with pytest.raises(ValueError, match=message):
        load_tokens_file(write_tokens(tmp_path / "t.yaml", entries))


def test_a_json_tokens_file_works_too(tmp_path) -> None:
    path = tmp_path / "tokens.json"
    digest = hashlib.sha256(BOB.encode()).hexdigest()
    path.write_text(json.dumps({"alice": ALICE, "bob": {"token_sha256": digest}}))
    auth = TokenAuth(tokens_file=path)
    assert auth.identify(ALICE).name == "alice" and auth.identify(BOB).name == "bob"
    assert auth.identify(digest) is None  # the hash is not itself a token
