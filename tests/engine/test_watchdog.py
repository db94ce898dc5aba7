"""The watchdog: a forward pass that runs past ``forward_timeout_s``, or an inference thread
that dies, makes the engine unhealthy; waiting and new calls fail fast; a stuck pass that
returns makes it healthy again. The tests await the health changes themselves."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from clipserve.engine import Engine, TextItem
from clipserve.engine.metrics import Metrics
from clipserve.errors import EngineUnhealthyError
from tests.engine.helpers import CRASH, STUCK, FaultyModel
from tests.waiting import FAILSAFE_S, eventually

TIMEOUT_S = 0.2


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def encode(engine: Engine, *texts: str) -> asyncio.Task:
    return asyncio.create_task(engine.encode([TextItem(t) for t in texts]))


async def test_a_stuck_pass_fails_calls_fast_and_recovery_is_automatic(metrics: Metrics) -> None:
    model = FaultyModel()
    engine = Engine(model, max_batch_size=2, max_wait_ms=0, forward_timeout_s=TIMEOUT_S,
                    max_queue_wait_s=FAILSAFE_S, max_queue_items=4, metrics=metrics)  # fmt: skip
    await engine.start()
    assert engine.health.ok and sample(metrics, "clipserve_engine_healthy") == 1
    stuck = encode(engine, STUCK)
    queued = [encode(engine, f"q{i}") for i in range(3)]  # queued behind the stuck pass
    waiting = encode(engine, "w1", "w2")  # 4 admitted: this one waits for room
    await eventually(lambda: engine._admission.waiting["text"] == 2, "a call waits for room")

    await engine.health.wait_for(False)  # the watchdog fires
    assert "has run for more than 0.2 s" in (engine.health.reason or "")
    assert sample(metrics, "clipserve_engine_healthy") == 0
    for call in (stuck, *queued, waiting):  # every waiting call fails, with the reason
        with pytest.raises(EngineUnhealthyError, match="not healthy: a forward pass"):
            await call
    with pytest.raises(EngineUnhealthyError, match="retry later"):
        await engine.encode([TextItem("new")])  # new calls fail at once
    assert model.forwards == 1  # nothing else reached the model
    assert engine.describe()["health"]["ok"] is False

    model.release.set()  # the pass returns: healthy again, by itself
    await engine.health.wait_for(True)
    assert sample(metrics, "clipserve_engine_healthy") == 1
    (embedding,) = await engine.encode([TextItem("after")])
    assert isinstance(embedding, np.ndarray)
    # the stuck and the 3 queued items; the waiting call was never admitted
    assert sample(metrics, "clipserve_items_total", modality="text", outcome="unhealthy") == 4
    await engine.stop()


async def test_passes_within_the_limit_leave_the_engine_healthy(metrics: Metrics) -> None:
    model = FaultyModel()
    changes: list[bool] = []
    async with Engine(model, forward_timeout_s=FAILSAFE_S, metrics=metrics) as engine:
        engine.health.subscribe(lambda health: changes.append(health.ok))
        results = await asyncio.gather(*(engine.encode([TextItem(f"t{i}")]) for i in range(20)))
    assert all(isinstance(r[0], np.ndarray) for r in results)
    assert changes == [] and engine.health.ok


async def test_a_dead_inference_thread_makes_the_engine_unhealthy(metrics: Metrics) -> None:
    model = FaultyModel()
    engine = Engine(model, max_batch_size=1, forward_timeout_s=FAILSAFE_S, metrics=metrics)
    await engine.start()
    assert engine.describe()["replicas"] == {"wanted": 1, "running": 1}
    with pytest.raises(EngineUnhealthyError, match=r"died: SystemExit\(3\)"):
        await engine.encode([TextItem(CRASH)])  # the call whose pass killed the thread
    await engine.health.wait_for(False)
    assert "the inference thread clipserve-infer-0 died: SystemExit(3)" in (
        engine.health.reason or ""
    )
    with pytest.raises(EngineUnhealthyError, match="died"):
        await engine.encode([TextItem("next")])
    assert engine.describe()["replicas"] == {"wanted": 1, "running": 0}
    await engine.stop()


async def test_one_dead_replica_of_two_still_reports_unhealthy(metrics: Metrics) -> None:
    """Health is the engine's, not a replica's: a supervisor should restart the process."""
    models = [FaultyModel(), FaultyModel()]
    engine = Engine(models, max_batch_size=1, forward_timeout_s=FAILSAFE_S, metrics=metrics)
    await engine.start()
    with pytest.raises(EngineUnhealthyError):
        await engine.encode([TextItem(CRASH)])
    await engine.health.wait_for(False)
    assert engine.describe()["replicas"] == {"wanted": 2, "running": 1}
    await engine.stop()
