"""Writing JSON replies: the standard library against orjson, for the HTTP front-end's two
reply shapes (jina's ``/post`` reply and OpenAI's ``/v1/embeddings``).

    python benchmarks/bench_json_replies.py [--docs 128] [--dim 512] [--rounds 20]

Prints the median time to serialize one reply (built as the server builds it) with
``json.dumps`` (what Starlette's JSONResponse uses) and with ``orjson.dumps`` (what
``clipserve.server.http_common.json_response`` uses), and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import orjson

from clipserve.wire.clipserve_wire_pb2 import DataRequestProto
from clipserve.wire.json_codec import request_to_json
from clipserve.wire.ndarray import write_ndarray


def post_reply(docs: int, dim: int) -> dict:
    request = DataRequestProto()
    request.header.request_id = "bench"
    vectors = np.random.default_rng(0).standard_normal((docs, dim)).astype(np.float32)
    for index, vector in enumerate(vectors):
        doc = request.data.docs.docs.add()
        doc.id, doc.text = str(index), f"sentence number {index}"
        write_ndarray(vector, doc.embedding)
    return request_to_json(request)


def openai_reply(docs: int, dim: int) -> dict:
    vectors = np.random.default_rng(1).standard_normal((docs, dim)).astype("<f4")
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": "bench", "usage": {}}


def median_ms(write, body, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        write(body)
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def to_lists(body: dict) -> dict:
    """What the standard library needs: Python lists instead of arrays."""
    return {**body, "data": [{**d, "embedding": d["embedding"].tolist()} for d in body["data"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=128)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    option = orjson.OPT_SERIALIZE_NUMPY
    post, openai = post_reply(args.docs, args.dim), openai_reply(args.docs, args.dim)
    rows = [
        ("/post (jina JSON)", median_ms(json.dumps, post, args.rounds),
         median_ms(lambda b: orjson.dumps(b, option=option), post, args.rounds)),
        ("/v1/embeddings (float)", median_ms(lambda b: json.dumps(to_lists(b)), openai,
                                              args.rounds),
         median_ms(lambda b: orjson.dumps(b, option=option), openai, args.rounds)),
    ]  # fmt: skip
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{args.docs} x {args.dim} float32, median of {args.rounds}; load average {load}\n")
    print("| reply | json.dumps ms | orjson ms | ratio |\n|---|---|---|---|")
    for name, slow, fast in rows:
        print(f"| {name} | {slow:.1f} | {fast:.2f} | {slow / fast:.0f}x |")


if __name__ == "__main__":
    main()
