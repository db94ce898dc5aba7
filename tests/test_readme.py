"""Every code block of README.md works: the server is started the README's way
(``scripts/serve.sh``, on free ports instead of 51000/51001), then each Python, shell and
JavaScript block of the tour runs against it as written, and each value a block prints
with a comment (``print(x)  # (3, 384): ...``) must be what it prints. Blocks that cannot
run here (installing torch, running the whole suite) are listed with the test or check
that covers them; a block that is neither run nor listed fails the test."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server_process import wait_for_ports
from tests.web.conftest import node  # noqa: F401 - the Node >= 20 fixture

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CLIPSERVE_JS = REPO / "clipserve" / "web" / "static" / "clipserve.js"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
#: `print(...)  # EXPECTED: words` or `console.log(...); // EXPECTED`
PRINTED = re.compile(r"^(?:print\(|console\.log\().*?(?:#|//)\s*([^:]+?)(?::.*)?$")


@dataclass
class Block:
    language: str
    code: str

    def expected_lines(self) -> list[str]:
        return [m.group(1).strip() for m in map(PRINTED.match, self.code.splitlines()) if m]


def readme_blocks() -> list[Block]:
    return [Block(lang, code) for lang, code in FENCE.findall(README.read_text())]


def covered_elsewhere(block: Block) -> str | None:
    """Why a block need not run here, or None if it must. Each reason is checked below."""
    code = block.code
    if "bash scripts/test.sh" in code:
        return "scripts/test.sh is what CI runs (.ci/run); scripts/serve.sh runs here"
    if "CLIPSERVE_TORCH" in code:
        return "install.sh reads CLIPSERVE_TORCH and CLIPSERVE_TORCH_INDEX (checked below)"
    if code.lstrip().startswith("pip install ."):
        return "tests/client_envs installs . and .[docarray]; scripts/install.sh .[server]"
    return None


@dataclass
class Served:
    grpc: int
    http: int

    def localize(self, code: str) -> str:
        code = code.replace("127.0.0.1:51000", f"127.0.0.1:{self.grpc}")
        return code.replace("127.0.0.1:51001", f"127.0.0.1:{self.http}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``bash scripts/serve.sh`` as the README starts it (the install is current, so it
    serves at once), on 127.0.0.1 and free ports."""
    folder = tmp_path_factory.mktemp("serve")
    port_file, log = folder / "ports.json", folder / "serve.log"
    command = ["bash", "scripts/serve.sh", "--host", "127.0.0.1", "--grpc-port", "0",
               "--http-port", "0", "--port-file", str(port_file)]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSERVE_")}
    with open(log, "w") as sink:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, env=environment
        )
    try:
        try:
            ports = wait_for_ports(process, port_file, timeout_s=600)
        except (RuntimeError, AssertionError) as exc:
            pytest.fail(f"scripts/serve.sh did not serve: {exc}\n{log.read_text()[-3000:]}")
        yield Served(ports["grpc"], ports["http"])
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # serve.sh execs clipserve: the same PID
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, jpeg_photos) -> Path:
    """Where the blocks run: the tour's ``cat.jpg`` is a real photo of a cat."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "cat.jpg").write_bytes(jpeg_photos["chelsea"])
    return folder


def run(command: list[str], cwd: Path) -> str:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSERVE_")}
    environment.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=environment, check=False)  # fmt: skip
    assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


def check_printed(block: Block, output: str) -> None:
    expected = block.expected_lines()
    if expected:
        printed = [line.strip() for line in output.strip().splitlines()]
        assert printed[-len(expected) :] == expected, (block.code, output)


def test_every_block_is_run_or_covered(served, workdir, node) -> None:  # noqa: F811
    blocks = readme_blocks()
    assert len(blocks) >= 6, "the README's tour went missing"
    ran = []
    for index, block in enumerate(blocks):
        if covered_elsewhere(block) is not None or "bash scripts/serve.sh" in block.code:
            continue  # serve.sh: the fixture runs it
        code = served.localize(block.code)
        if block.language == "python":
            output = run([sys.executable, "-c", code], workdir)
        elif block.language == "bash":
            output = run(["bash", "-euo", "pipefail", "-c", code], workdir)
            assert output.startswith('{"object":"list"'), output
        elif block.language == "js":
            module = workdir / f"block{index}.mjs"
            module.write_text(code.replace(f"http://127.0.0.1:{served.http}/static/clipserve.js",
                                           CLIPSERVE_JS.as_uri()))  # fmt: skip
            output = run([*node, str(module)], workdir)
        else:
            pytest.fail(f"README block {index} ({block.language or 'no language'}) is neither "
                        f"run nor listed as covered:\n{block.code}")  # fmt: skip
        check_printed(block, output)
        ran.append(block.language)
    assert sorted(set(ran)) == ["bash", "js", "python"], ran


def test_the_blocks_not_run_here_are_covered() -> None:
    install = (REPO / "scripts" / "install.sh").read_text()
    assert "CLIPSERVE_TORCH_INDEX" in install and "CLIPSERVE_TORCH:-" in install
    reasons = [covered_elsewhere(block) for block in readme_blocks()]
    assert sum(reason is not None for reason in reasons) >= 3
    extras = {"docarray", "server"}
    pyproject = (REPO / "pyproject.toml").read_text()
    assert all(f"\n{extra} = [" in pyproject for extra in extras)
    assert (REPO / "tests" / "client_envs" / "test_client_envs.py").is_file()
