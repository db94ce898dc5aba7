"""The page and clipserve.js as the server serves them: open without a token while the
data routes stay closed, JavaScript served as JavaScript, a content security policy on the
page, the facts the page reads first, and ``--no-ui``."""

from __future__ import annotations

import httpx
import pytest

from clipserve.cli import build_parser, config_from_args
from clipserve.server.app import loopback_config, running_server

TOKEN = "t0ken"


@pytest.fixture(scope="module")
def guarded():
    config = loopback_config(auth_token=TOKEN, protocols=("http", "websocket"))
    with running_server(config) as server:
        yield server


def test_the_page_and_the_client_are_open_while_the_data_routes_need_the_token(guarded) -> None:
    base = guarded.urls["http"]
    with httpx.Client(base_url=base) as http:
        page = http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "connect-src 'self'" in page.headers["content-security-policy"]
        assert '<script type="module" src="static/app/main.js">' in page.text
        for path in ("/static/clipserve.js", "/static/clipserve/client.js", "/static/app/main.js"):
            module = http.get(path)
            assert module.status_code == 200, path
            assert module.headers["content-type"] == "text/javascript; charset=utf-8"
            assert module.headers["x-content-type-options"] == "nosniff"
        types = http.get("/static/clipserve.d.ts")
        assert types.headers["content-type"].startswith("application/typescript")
        assert "export declare class Client" in types.text
        assert http.get("/static/style.css").headers["content-type"].startswith("text/css")
        assert http.get("/ui/server.json").json() == {
            "auth_required": True,
            "protocols": ["http", "websocket"],
        }
        for escape in ("/static/%2e%2e/__init__.py", "/static/%2e%2e%2f__init__.py"):
            assert http.get(escape).status_code == 404  # no way out of the static folder
        assert http.post("/post", json={"data": [{"text": "x"}]}).status_code == 401
        authorized = {"Authorization": TOKEN}
        assert http.post("/post", json={"data": [{"text": "x"}]}, headers=authorized).is_success


def test_no_ui_keeps_only_the_client_module() -> None:
    config = config_from_args(build_parser().parse_args(["serve", "--no-ui"]))
    assert config.ui is False
    assert config_from_args(build_parser().parse_args(["serve"])).ui is True
    with (
        running_server(loopback_config(ui=False)) as server,
        httpx.Client(base_url=server.urls["http"]) as http,
    ):
        assert http.get("/").status_code == 404
        assert http.get("/ui/server.json").status_code == 404
        assert http.get("/static/app/main.js").status_code == 404
        assert http.get("/static/index.html").status_code == 404
        assert http.get("/static/clipserve.js").status_code == 200
        assert http.get("/static/clipserve/jobs.js").status_code == 200
        assert http.post("/post", json={"data": [{"text": "x"}]}).is_success
