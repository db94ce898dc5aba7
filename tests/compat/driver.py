"""Drives the published clip-client 0.8.3 for the compatibility tests and benchmarks.

Runs inside the clip-client venv (never clipserve's): it must not import clipserve.
Usage: python driver.py JOB.json, where the job is
    {"out_dir": str,
     "clients": {key: {"server": "grpc://127.0.0.1:1234", "credential": {...} | null}},
     "ops": [{"name": str, "op": "encode" | "aencode" | "encode_docs" | "rank" | "profile"
              | "post" (jina's raw Client.post) | "encode_tree" (nested Documents),
              "client": key, "timeout": seconds, ...op arguments}]}
Each op runs in turn (in a worker thread, so a hung op is reported instead of blocking the
rest) and appends one JSON line to out_dir/results.jsonl: name, ok, error_type, error,
seconds, cpu_seconds, plus op-specific fields. Embeddings go to out_dir/<name>.npy.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from clip_client import Client
from docarray import Document, DocumentArray


def make_doc(spec: dict[str, Any]) -> Document:
    """A Document from {"text"} | {"uri"} | {"blob_file"} | {"blob_text"} | {"tensor_file"}
    | {} (no content: only with "chunks"/"matches"), plus an optional "id" and nested
    "chunks"/"matches" specs."""
    kwargs: dict[str, Any] = {}
    if "id" in spec:
        kwargs["id"] = spec["id"]
    if "text" in spec:
        kwargs["text"] = spec["text"]
    elif "uri" in spec:
        kwargs["uri"] = spec["uri"]
    elif "blob_file" in spec:
        kwargs["blob"] = Path(spec["blob_file"]).read_bytes()
    elif "blob_text" in spec:
        kwargs["blob"] = spec["blob_text"].encode()
    elif "tensor_file" in spec:
        kwargs["tensor"] = np.load(spec["tensor_file"])
    elif not ("chunks" in spec or "matches" in spec or spec.get("empty")):
        raise ValueError(f"unknown doc spec {spec}")
    doc = Document(**kwargs)
    for name in ("chunks", "matches"):
        if name in spec:
            setattr(doc, name, [make_doc(child) for child in spec[name]])
    return doc


def describe_tree(docs: Any, out_dir: Path, name: str) -> list[dict[str, Any]]:
    """Every document of a reply, depth first, with where it sits (#0.chunks[1]), what it
    still holds, and its embedding's row in out_dir/<name>.npy (or None)."""
    records: list[dict[str, Any]] = []
    rows: list[np.ndarray] = []

    def walk(level: Any, parent: str | None, field: str) -> None:
        for index, doc in enumerate(level):
            place = f"#{index}" if parent is None else f"{parent}.{field}[{index}]"
            row = None
            if doc.embedding is not None:
                row = len(rows)
                rows.append(np.asarray(doc.embedding))
            records.append({
                "place": place, "id": doc.id, "text": doc.text or None, "uri": doc.uri or None,
                "has_blob": bool(doc.blob), "has_tensor": doc.tensor is not None,
                "embedding_row": row,
            })  # fmt: skip
            walk(doc.chunks, place, "chunks")
            walk(doc.matches, place, "matches")

    walk(docs, None, "")
    if rows:
        np.save(out_dir / f"{name}.npy", np.stack(rows))
    return records


def jina_client(server: str) -> Any:
    """jina's own Client for a clip-client server URL, as the issue's snippet builds it."""
    from jina import Client as JinaClient

    scheme, _, address = server.partition("://")
    host, _, port = address.rpartition(":")
    scheme = {"ws": "websocket", "wss": "websocket"}.get(scheme, scheme)
    return JinaClient(host=f"{scheme}://{host}", port=int(port))


def op_post(client: Client, op: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """jina's raw ``Client.post`` (no clip-client): documents go as they are, nested."""
    docs = DocumentArray([make_doc(spec) for spec in op["docs"]])
    result = jina_client(op["server"]).post(
        on=op.get("endpoint", "/"), inputs=docs, parameters=op.get("parameters") or {}
    )
    return {"type": type_of(result), "tree": describe_tree(result, out_dir, op["name"])}


def op_encode_tree(client: Client, op: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """clip-client's ``encode`` of Documents with chunks; the nested reply is read in
    ``on_done`` (clip-client itself copies back only the top-level embeddings)."""
    docs = DocumentArray([make_doc(spec) for spec in op["docs"]])
    replies: list[Document] = []
    kwargs = dict(op.get("kwargs", {}))
    if op.get("on_done", True):
        kwargs["on_done"] = lambda response: replies.extend(response.docs)
    result = client.encode(docs, **kwargs)
    tree = describe_tree(replies if op.get("on_done", True) else docs, out_dir, op["name"])
    return {"type": type_of(result), "tree": tree}


def type_of(result: Any) -> str:
    return "DocumentArray" if isinstance(result, DocumentArray) else type(result).__name__


def save_embeddings(out_dir: Path, name: str, embeddings: Any) -> list[int]:
    array = np.asarray(embeddings)
    np.save(out_dir / f"{name}.npy", array)
    return list(array.shape)


def op_encode(client: Client, op: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    result = client.encode(op["content"], **op.get("kwargs", {}))
    return {"type": type_of(result), "shape": save_embeddings(out_dir, op["name"], result)}


def op_aencode(client: Client, op: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    async def run() -> Any:
        # Something else runs concurrently, as the spec's aencode example does.
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            return await client.aencode(op["content"], **op.get("kwargs", {})), ticks
        finally:
            task.cancel()

    result, ticks = asyncio.run(run())
    shape = save_embeddings(out_dir, op["name"], result)
    return {"type": type_of(result), "shape": shape, "ticks": ticks}


def op_encode_docs(client: Client, op: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    docs = [make_doc(spec) for spec in op["docs"]]
    ids_in = [d.id for d in docs]
    content = DocumentArray(docs) if op.get("as_document_array", True) else docs
    result = client.encode(content, **op.get("kwargs", {}))
    ids_out = [d.id for d in result]
    shape = save_embeddings(out_dir, op["name"], result.embeddings)
    return {"type": type_of(result), "shape": shape, "ids_in": ids_in, "ids_out": ids_out}


def describe_match(match: Document) -> dict[str, Any]:
    clip = match.scores.get("clip_score")
    cosine = match.scores.get("clip_score_cosine")
    return {
        "id": match.id,
        "text": match.text or None,
        "uri": match.uri or None,
        "clip_score": None if clip is None else clip.value,
        "clip_score_op": None if clip is None else clip.op_name,
        "cosine": None if cosine is None else cosine.value,
        "cosine_op": None if cosine is None else cosine.op_name,
        "has_embedding": match.embedding is not None,
    }


def op_rank(client: Client, op: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    queries = []
    for spec in op["queries"]:
        query = make_doc(spec["query"])
        query.matches = [make_doc(m) for m in spec["matches"]]
        queries.append(query)
    result = client.rank(queries, **op.get("kwargs", {}))
    return {
        "type": type_of(result),
        "queries": [
            {"id": q.id, "matches": [describe_match(m) for m in q.matches]} for q in result
        ],
    }


def op_profile(client: Client, op: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    return {"report": client.profile(op.get("content", ""))}


OPS = {
    "encode": op_encode,
    "aencode": op_aencode,
    "encode_docs": op_encode_docs,
    "rank": op_rank,
    "profile": op_profile,
    "post": op_post,
    "encode_tree": op_encode_tree,
}


def run_op(client: Client, op: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Runs one op in a daemon thread, so a hang becomes a 'timeout' record."""
    record: dict[str, Any] = {"name": op["name"], "ok": False, "error_type": None, "error": None}
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["fields"] = OPS[op["op"]](client, op, out_dir)
        except BaseException as exc:  # noqa: BLE001 - every failure is reported, none is fatal
            box["exc"] = exc
            box["trace"] = traceback.format_exc(limit=6)

    started, cpu_started = time.perf_counter(), time.process_time()
    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(op.get("timeout", 120))
    record["seconds"] = time.perf_counter() - started
    record["cpu_seconds"] = time.process_time() - cpu_started  # the whole client process
    if worker.is_alive():
        record.update(error_type="Timeout", error=f"no result after {op.get('timeout', 120)} s")
    elif "exc" in box:
        exc = box["exc"]
        record.update(error_type=type(exc).__name__, error=f"{exc}"[:2000], trace=box["trace"])
    else:
        record.update(ok=True, **box["fields"])
    return record


def main() -> int:
    job = json.loads(Path(sys.argv[1]).read_text())
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    clients = {
        key: Client(spec["server"], credential=spec.get("credential") or {})
        for key, spec in job["clients"].items()
    }
    with open(out_dir / "results.jsonl", "a") as results:
        for op in job["ops"]:
            key = op.get("client", "default")
            op.setdefault("server", job["clients"][key]["server"])
            record = run_op(clients[key], op, out_dir)
            results.write(json.dumps(record) + "\n")
            results.flush()
    sys.stdout.flush()
    # A timed-out op leaves a thread behind: leave without waiting for it.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
