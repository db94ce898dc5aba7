"""Settings of the Ray path: the ``ray`` section of the YAML config and the ``--ray*`` flags.

YAML, with Ray Serve's own names for the deployment options::

    ray:
      address: auto              # auto | local | <head>:6379 | ray://<head>:10001
      app: clipserve             # the Serve application (front-ends attach to it by name)
      deploy: auto               # auto | attach | replace
      ray_actor_options: {num_cpus: 4, num_gpus: 1}
      autoscaling_config: {min_replicas: 1, max_replicas: 8, target_ongoing_requests: 4}
      max_ongoing_requests: 8

Flags set the flat shorthands (``num_cpus``, ``num_gpus``, ``min_replicas``,
``max_replicas``, ``target_ongoing_requests``), which are folded into the nested options.
Without an ``autoscaling_config`` the deployment runs ``num_replicas`` replicas
(``--replicas`` when not given here).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ADDRESS_AUTO, ADDRESS_LOCAL = "auto", "local"
DEPLOY_AUTO, DEPLOY_ATTACH, DEPLOY_REPLACE = "auto", "attach", "replace"
DEPLOY_MODES = (DEPLOY_AUTO, DEPLOY_ATTACH, DEPLOY_REPLACE)
DEFAULT_APP = "clipserve"
#: the deployment that holds the model replicas, and the optional front-end deployment
EMBEDDER, FRONTEND = "Embedder", "Frontend"
_ACTOR_SHORTHANDS = ("num_cpus", "num_gpus")
_AUTOSCALING_SHORTHANDS = ("min_replicas", "max_replicas", "target_ongoing_requests")


@dataclass
class RaySettings:
    """Where the cluster is, how the model deployment looks, how the front-end calls it."""

    address: str = ADDRESS_AUTO
    app: str = DEFAULT_APP
    #: auto: deploy when the app is missing, attach when it runs; attach: never deploy;
    #: replace: deploy (update) even when it runs
    deploy: str = DEPLOY_AUTO
    #: leave the app running when the front-end that deployed it exits
    keep_app: bool = False
    # ---- the Serve deployment (Ray Serve's names) ----
    num_replicas: int | None = None
    ray_actor_options: dict[str, Any] = field(default_factory=dict)
    autoscaling_config: dict[str, Any] | None = None
    #: calls one replica works on at once; its engine batches across them
    max_ongoing_requests: int = 8
    max_replicas_per_node: int | None = None
    health_check_period_s: float | None = None
    graceful_shutdown_timeout_s: float | None = None
    # ---- the front-end's side of the handle ----
    #: items per call to a replica (default: max_batch_size, one full batch per call)
    chunk_items: int | None = None
    #: resends of a call whose replica died (the call is idempotent)
    max_retries: int = 3
    #: with no replica running this long, calls fail with ServerUnavailableError
    unavailable_after_s: float = 5.0
    #: how often the front-end reads replica states and per-replica queues
    monitor_interval_s: float = 2.0
    # ---- flag shorthands, folded into the options above ----
    num_cpus: float | None = None
    num_gpus: float | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float | None = None

    def __post_init__(self) -> None:
        self.ray_actor_options = dict(self.ray_actor_options or {})
        for name in _ACTOR_SHORTHANDS:
            if getattr(self, name) is not None:
                self.ray_actor_options[name] = getattr(self, name)
        shorthands = {n: getattr(self, n) for n in _AUTOSCALING_SHORTHANDS}
        if any(value is not None for value in shorthands.values()):
            merged = dict(self.autoscaling_config or {})
            merged.update({n: v for n, v in shorthands.items() if v is not None})
            self.autoscaling_config = merged
        for name in (*_ACTOR_SHORTHANDS, *_AUTOSCALING_SHORTHANDS):
            setattr(self, name, None)
        self.validate()

    def validate(self) -> None:
        if not self.address or not isinstance(self.address, str):
            raise ValueError(
                "ray.address must be auto, local, <host>:<port> or ray://<host>:<port>"
            )
        if self.deploy not in DEPLOY_MODES:
            modes = ", ".join(DEPLOY_MODES)
            raise ValueError(f"ray.deploy must be one of {modes}, got {self.deploy!r}")
        if not self.app or "/" in self.app:
            raise ValueError(f"ray.app must be a non-empty name without '/', got {self.app!r}")
        for name in ("max_ongoing_requests", "max_retries"):
            if int(getattr(self, name)) < (1 if name == "max_ongoing_requests" else 0):
                raise ValueError(f"ray.{name} is out of range: {getattr(self, name)}")
        if self.num_replicas is not None and self.num_replicas < 1:
            raise ValueError(f"ray.num_replicas must be >= 1, got {self.num_replicas}")
        if self.chunk_items is not None and self.chunk_items < 1:
            raise ValueError(f"ray.chunk_items must be >= 1, got {self.chunk_items}")
        if self.unavailable_after_s <= 0 or self.monitor_interval_s <= 0:
            raise ValueError("ray.unavailable_after_s and ray.monitor_interval_s must be > 0")
        scaling = self.autoscaling_config
        if scaling is not None:
            low, high = scaling.get("min_replicas", 1), scaling.get("max_replicas", 1)
            if high < 1 or low < 0 or low > high:
                raise ValueError(
                    f"autoscaling needs 0 <= min_replicas <= max_replicas and max_replicas >= 1; "
                    f"got min {low}, max {high}"
                )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | RaySettings | None) -> RaySettings:
        if isinstance(values, RaySettings):
            return values
        values = {str(k).replace("-", "_"): v for k, v in dict(values or {}).items()}
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown ray setting(s): {', '.join(unknown)}")
        return cls(**values)

    def deployment_options(self, replicas: int) -> dict[str, Any]:
        """The Embedder deployment's options, in Serve's names (``.options()`` and the
        ``deployments:`` entry of a Serve config). ``replicas`` applies without autoscaling."""
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            # one log line per call would cost more than the call
            "logging_config": {"enable_access_log": False},
        }
        if self.autoscaling_config:
            options["autoscaling_config"] = dict(self.autoscaling_config)
        else:
            options["num_replicas"] = self.num_replicas or replicas
        if self.ray_actor_options:
            options["ray_actor_options"] = dict(self.ray_actor_options)
        for name in ("max_replicas_per_node", "health_check_period_s"):
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        if self.graceful_shutdown_timeout_s is not None:
            options["graceful_shutdown_timeout_s"] = self.graceful_shutdown_timeout_s
        return options

    def call_items(self, max_batch_size: int) -> int:
        return self.chunk_items or max_batch_size


def ray_settings_of(config: Any) -> RaySettings | None:
    """The ``ray`` section of a ``ServerConfig``; None when it names no address (no Ray)."""
    section = getattr(config, "ray", None)
    if isinstance(section, RaySettings):
        return section
    if not section or not section.get("address"):
        return None
    return RaySettings.from_mapping(section)
