"""``/v1/embeddings`` and ``/v1/models`` driven by the official ``openai`` package (sync and
async clients) against a real server with the built-in model: texts and images, float and
base64, the token as the API key, ``dimensions``, and every error raised as the package's
own exception class. Embeddings are compared with the in-process model."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import openai
import pytest

from clipserve.models.hashing import HashModel
from clipserve.server.app import RunningServer, loopback_config, running_server

TOKEN = "sk-clipserve-test"
TEXTS = ["a photo of a cat", "a diagram of a power plant"]


def api(server: RunningServer, key: str = "unused", **options) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.urls["http"] + "/v1", api_key=key, max_retries=0, **options
    )


def async_api(server: RunningServer, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.urls["http"] + "/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def photo_site(jpeg_photos) -> Iterator[str]:
    """Real photos over HTTP on 127.0.0.1, standing in for an image host."""

    class Photos(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = jpeg_photos.get(self.path.strip("/").removesuffix(".jpg"))
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    site = ThreadingHTTPServer(("127.0.0.1", 0), Photos)
    site.daemon_threads = True
    threading.Thread(target=site.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{site.server_address[1]}"
    site.shutdown()
    site.server_close()


@pytest.fixture(scope="module")
def server(builtin_model) -> Iterator[RunningServer]:
    """The built-in model behind a token, fetching URLs from 127.0.0.1 only."""
    policy = {"enabled": True, "allowed_schemes": ("http",), "allowed_hosts": ("127.0.0.1",),
              "allow_private": True}  # fmt: skip
    config = loopback_config(model="builtin", auth_token=TOKEN, uri_policy=policy)
    with running_server(config, model=builtin_model) as running:
        yield running


@pytest.fixture(scope="module")
def strict_server(builtin_model) -> Iterator[RunningServer]:
    """The default URI policy (public URLs only: the loopback photo site is refused) and a
    queue that takes 4 items at most."""
    config = loopback_config(
        model="builtin", max_queue_items=4, max_queue_wait_s=0, cache_mb=0
    )  # no cache: it would answer repeated inputs without the queue
    with running_server(config, model=builtin_model) as running:
        yield running


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def vectors(response) -> np.ndarray:
    return np.array([item.embedding for item in response.data], dtype=np.float32)


def test_texts_in_base64_the_package_default(server, builtin_model) -> None:
    response = api(server, TOKEN).embeddings.create(model="builtin", input=TEXTS)
    np.testing.assert_allclose(vectors(response), builtin_model.encode_texts(TEXTS), atol=1e-5)
    assert [item.index for item in response.data] == [0, 1]
    assert response.model == "builtin" and response.usage.prompt_tokens == 11  # words


def test_texts_as_floats_and_as_explicit_base64(server, builtin_model) -> None:
    client = api(server, TOKEN)
    wanted = builtin_model.encode_texts(TEXTS[:1])[0]
    floats = client.embeddings.create(model="builtin", input=TEXTS[0], encoding_format="float")
    assert isinstance(floats.data[0].embedding, list)
    np.testing.assert_allclose(floats.data[0].embedding, wanted, atol=1e-6)
    packed = client.embeddings.create(model="builtin", input=TEXTS[0], encoding_format="base64")
    raw = packed.data[0].embedding
    assert isinstance(raw, str)
    np.testing.assert_allclose(np.frombuffer(base64.b64decode(raw), "<f4"), wanted, atol=1e-6)


def test_images_as_data_uris_and_urls(server, builtin_model, jpeg_photos, photo_site) -> None:
    names = ["astronaut", "chelsea"]
    inputs = [data_uri(jpeg_photos[names[0]]), f"{photo_site}/{names[1]}.jpg"]
    response = api(server, TOKEN).embeddings.create(
        model="builtin", input=inputs, extra_body={"modality": "image"}
    )
    wanted = builtin_model.encode_images([jpeg_photos[n] for n in names])
    np.testing.assert_allclose(vectors(response), wanted, atol=1e-5)
    assert response.usage.prompt_tokens == 0


def test_urls_obey_the_uri_policy(strict_server, jpeg_photos, photo_site) -> None:
    inputs = [data_uri(jpeg_photos["china"]), f"{photo_site}/chelsea.jpg"]
    with pytest.raises(openai.BadRequestError) as info:
        api(strict_server).embeddings.create(
            model="builtin", input=inputs, extra_body={"modality": "image"}
        )
    message = info.value.message
    assert "input[1]" in message and "127.0.0.1 is a loopback address" in message
    assert "--uri-allow-private" in message  # the rule's remedy
    assert info.value.param == "input" and info.value.code == "refused"


def test_the_token_is_the_api_key(server) -> None:
    """The package sends ``Authorization: Bearer <api_key>``; the right key is tested by
    every other test here."""
    wrong = api(server, "sk-wrong")
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.embeddings.create(model="builtin", input="x")
    assert info.value.status_code == 401 and info.value.code == "unauthenticated"
    assert "wrong credential" in info.value.message
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_errors_have_openai_shape_and_name_the_field(server) -> None:
    client = api(server, TOKEN)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    error = info.value
    assert error.param == "model" and error.code == "invalid" and error.type == "InvalidInputError"
    assert "not served here" in error.message
    assert set(error.body) >= {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError, match="token arrays are not supported"):
        client.embeddings.create(model="builtin", input=[[1, 2, 3]])


def test_dimensions_are_refused_for_a_model_not_trained_for_them(server) -> None:
    client = api(server, TOKEN)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="builtin", input="x", dimensions=8)
    assert info.value.param == "dimensions"
    assert "not trained for shorter embeddings" in info.value.message
    full = client.embeddings.create(model="builtin", input="x", dimensions=384)
    assert len(full.data[0].embedding) == 384  # the model's own size is fine


def test_dimensions_for_a_model_trained_for_them() -> None:
    """A model declaring Matryoshka sizes: the first n components, renormalised."""
    model = HashModel(32)
    model.matryoshka_dims = (8, 16)
    with running_server(loopback_config(), model=model) as running:
        client = api(running)
        response = client.embeddings.create(model="hash::32", input=TEXTS, dimensions=8)
        with pytest.raises(openai.BadRequestError, match="trained for 32, 16, 8"):
            client.embeddings.create(model="hash::32", input="x", dimensions=12)
    got = vectors(response)
    head = model.encode_texts(TEXTS)[:, :8]
    np.testing.assert_allclose(got, head / np.linalg.norm(head, axis=1, keepdims=True), atol=1e-6)


def test_overload_is_a_rate_limit_error(strict_server) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        api(strict_server).embeddings.create(model="builtin", input=[f"x{i}" for i in range(5)])
    assert info.value.status_code == 429 and info.value.code == "overloaded"


def test_models_list_and_retrieve(server) -> None:
    client = api(server, TOKEN)
    assert [model.id for model in client.models.list()] == ["builtin"]
    model = client.models.retrieve("builtin")
    assert model.id == "builtin" and model.owned_by == "clipserve" and model.created > 0
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-4o")
    assert info.value.param == "model" and "not served here" in info.value.message


async def test_the_async_client(server, builtin_model, jpeg_photos) -> None:
    client = async_api(server, TOKEN)
    try:
        texts = await client.embeddings.create(model="builtin", input=TEXTS)
        image = await client.embeddings.create(
            model="builtin",
            input=data_uri(jpeg_photos["flower"]),
            encoding_format="float",
            extra_body={"modality": "image"},
        )
        listed = await client.models.list()
        with pytest.raises(openai.BadRequestError, match="'modality' must be"):
            await client.embeddings.create(
                model="builtin", input="x", extra_body={"modality": "audio"}
            )
    finally:
        await client.close()
    np.testing.assert_allclose(vectors(texts), builtin_model.encode_texts(TEXTS), atol=1e-5)
    wanted = builtin_model.encode_images([jpeg_photos["flower"]])
    np.testing.assert_allclose(vectors(image), wanted, atol=1e-5)
    assert [model.id for model in listed.data] == ["builtin"]


def test_float_replies_are_json_arrays_readable_by_any_parser(server) -> None:
    """orjson writes the reply; the standard library reads it back the same."""
    import json

    import httpx

    reply = httpx.post(
        server.urls["http"] + "/v1/embeddings",
        json={"input": TEXTS, "encoding_format": "float"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    body = json.load(io.BytesIO(reply.content))
    assert reply.headers["content-type"] == "application/json"
    assert len(body["data"][1]["embedding"]) == 384
