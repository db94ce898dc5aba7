"""CUDA graphs for a fixed-shape tower: one captured graph per batch-size bucket.

A ViT's image batch has one shape per batch size, so its hundreds of kernel launches can be
captured once and replayed as one. Batches are padded up to the next bucket (the padding
rows cost compute, at most a third more, and their outputs are dropped); graphs are captured
the first time a bucket is met (a warm-up on a side stream, then the capture) and share one
memory pool, which is safe because replays never overlap and each output is copied out
before the next replay. Batches above the largest bucket run eagerly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

#: batch sizes graphs are captured for (at most a third of a replay is padding)
BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


class GraphedTower:
    """Calls ``forward`` (one tensor in, one out) through bucketed CUDA graphs."""

    def __init__(
        self, forward: Callable[[torch.Tensor], torch.Tensor], buckets: Sequence[int] = BUCKETS
    ) -> None:
        self.forward = forward
        self.buckets = tuple(sorted(buckets))
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._pool: tuple[int, int] | None = None

    @property
    def captured(self) -> list[int]:
        return sorted(key[0] for key in self._graphs)

    def bucket_of(self, count: int) -> int | None:
        return next((bucket for bucket in self.buckets if bucket >= count), None)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        count = int(batch.shape[0])
        bucket = self.bucket_of(count)
        if bucket is None or batch.device.type != "cuda":
            return self.forward(batch)
        key = (bucket, tuple(batch.shape[1:]), batch.dtype, batch.device)
        if key not in self._graphs:
            self._graphs[key] = self._capture(bucket, batch)
        graph, static_input, static_output = self._graphs[key]
        static_input[:count].copy_(batch)
        graph.replay()
        return static_output[:count].clone()

    def _capture(
        self, bucket: int, example: torch.Tensor
    ) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        device = example.device
        static_input = torch.zeros((bucket, *example.shape[1:]), dtype=example.dtype, device=device)
        static_input[: example.shape[0]].copy_(example)
        # warm-up on a side stream first (library handles, autotuning), as torch advises
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self.forward(static_input)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            static_output = self.forward(static_input)
        self._pool = graph.pool()
        return graph, static_input, static_output
