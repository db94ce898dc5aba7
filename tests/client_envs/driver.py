"""Runs inside a client-only venv (see venvs.py): clipserve's client, without or with the
docarray extra, against real servers the test started. Never imports the tests or the
server. Usage: python driver.py JOB.json, the job being
    {"mode": "base" | "documents", "servers": {"grpc": url, "http": url, "websocket": url},
     "texts": [str], "image_file": path, "tensor_file": path, "out_dir": path}
Writes out_dir/results.json (name -> record) and embeddings as out_dir/<name>.npy; the test
asserts on them (an op that raises is recorded with its error, not left out)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HEAVY = ("numpy", "docarray", "grpc", "httpx", "websockets", "rich", "torch", "uvicorn")


def main(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    out = Path(job["out_dir"])
    results: dict[str, Any] = {}

    def record(name: str, op: Callable[[], dict[str, Any]]) -> None:
        try:
            results[name] = {"ok": True, **op()}
        except Exception as exc:  # recorded for the test to judge
            trace = traceback.format_exc()[-3000:]
            results[name] = {"ok": False, "error_type": type(exc).__name__,
                             "error": str(exc), "trace": trace}  # fmt: skip

    from clipserve import Client  # first, to see what importing the client loads

    record("import", lambda: {"loaded": [m for m in HEAVY if m in sys.modules]})
    record("python", lambda: {"version": list(sys.version_info[:2])})
    ops = BASE if job["mode"] == "base" else DOCUMENTS
    for protocol, url in job["servers"].items():
        with Client(url) as client:
            for name, op in ops.items():
                call = lambda op=op, c=client, p=protocol: op(c, job, out, p)  # noqa: E731
                record(f"{name}_{protocol}", call)
    if job["mode"] == "base":
        for command in (["serve", "--model", "hash"], ["models"], ["prepare"]):
            record(f"cli_{command[0]}", lambda command=command: cli(job, command))
    (out / "results.json").write_text(json.dumps(results))


def kind(value: Any) -> str:
    """``DocumentArray`` for any of docarray's DocumentArray classes, else the type name."""
    docarray = sys.modules.get("docarray")
    if docarray is not None and isinstance(value, docarray.DocumentArray):
        return "DocumentArray"
    return type(value).__name__


def save(out: Path, name: str, array: Any) -> list[int]:
    import numpy as np

    np.save(out / f"{name}.npy", np.asarray(array))
    return list(np.shape(array))


# ---- the base install: strings only -------------------------------------------------


def encode_strings(client: Any, job: dict, out: Path, protocol: str) -> dict[str, Any]:
    result = client.encode([*job["texts"], job["image_file"]])
    return {"type": kind(result), "shape": save(out, f"strings_{protocol}", result)}


def response_docs(client: Any, job: dict, out: Path, protocol: str) -> dict[str, Any]:
    seen: list[Any] = []
    client.encode(job["texts"], on_done=seen.append)
    try:
        _ = seen[0].docs
    except ImportError as exc:
        return {"error_type": type(exc).__name__, "error": str(exc)}
    return {"error_type": None}


def not_an_input(client: Any, job: dict, out: Path, protocol: str) -> dict[str, Any]:
    try:
        client.encode([{"text": "a dict is not a Document"}])
    except TypeError as exc:
        return {"error": str(exc)}
    return {"error": None}


def cli(job: dict, command: list[str]) -> dict[str, Any]:
    executable = Path(sys.executable).parent / "clipserve"
    done = subprocess.run([str(executable), *command], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    return {"returncode": done.returncode, "stderr": done.stderr[-2000:]}


BASE = {"strings": encode_strings, "response_docs": response_docs, "not_an_input": not_an_input}


# ---- with clipserve[docarray]: the spec's Document API --------------------------------


def documents(job: dict) -> Any:
    import numpy as np
    from docarray import Document, DocumentArray

    image = Path(job["image_file"])
    return DocumentArray(
        [Document(id=f"t{i}", text=text) for i, text in enumerate(job["texts"])]
        + [
            Document(id="blob", blob=image.read_bytes()),
            Document(id="uri", uri=str(image)),
            Document(id="tensor", tensor=np.load(job["tensor_file"])),
        ]
    )


def encode_document_array(client: Any, job: dict, out: Path, protocol: str) -> dict[str, Any]:
    given = documents(job)
    result = client.encode(given)
    return {
        "type": kind(result),
        "ids": [d.id for d in result],
        "same_objects": all(a is b for a, b in zip(result, given, strict=True)),
        "shape": save(out, f"docs_{protocol}", result.embeddings),
    }


def encode_list_and_generator(client: Any, job: dict, out: Path, protocol: str) -> dict:
    as_list = client.encode(list(documents(job)))
    as_generator = client.encode(d for d in documents(job))
    save(out, f"generator_{protocol}", as_generator.embeddings)
    return {"types": [kind(as_list), kind(as_generator)],
            "lengths": [len(as_list), len(as_generator)]}  # fmt: skip


def aencode_documents(client: Any, job: dict, out: Path, protocol: str) -> dict[str, Any]:
    result = asyncio.run(client.aencode(documents(job)))
    shape = save(out, f"async_{protocol}", result.embeddings)
    return {"type": kind(result), "shape": shape}


def rank(client: Any, job: dict, out: Path, protocol: str) -> dict[str, Any]:
    from docarray import Document

    query = Document(uri=job["image_file"], matches=[Document(text=t) for t in job["texts"]])
    ranked = client.rank([query])
    texts, scores = ranked["@m", ["text", "scores__clip_score__value"]]
    cosines = [m.scores["clip_score_cosine"].value for m in ranked[0].matches]
    return {"type": kind(ranked), "texts": texts, "scores": scores, "cosines": cosines}


def callback_docs(client: Any, job: dict, out: Path, protocol: str) -> dict[str, Any]:
    seen: list[Any] = []
    client.encode(documents(job), on_done=seen.append)
    docs = seen[0].docs
    return {"type": kind(docs), "ids": [d.id for d in docs],
            "shape": save(out, f"callback_{protocol}", docs.embeddings)}  # fmt: skip


DOCUMENTS = {
    "document_array": encode_document_array,
    "list_and_generator": encode_list_and_generator,
    "aencode": aencode_documents,
    "rank": rank,
    "callback_docs": callback_docs,
}

if __name__ == "__main__":
    main(sys.argv[1])
