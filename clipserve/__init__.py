"""clipserve: a CLIP embedding service and its streaming client."""

from clipserve.errors import (
    AuthenticationError,
    ClientTimeoutError,
    ClipServeError,
    InvalidInputError,
    MissingDependencyError,
    ModelError,
    ModelUnavailableError,
    OverloadedError,
    PartialFailureError,
    RateLimitedError,
    RemoteError,
    ServerUnavailableError,
)

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "Client",
    "ClientTimeoutError",
    "ClipServeError",
    "InvalidInputError",
    "MissingDependencyError",
    "ModelError",
    "ModelUnavailableError",
    "OverloadedError",
    "PartialFailureError",
    "RateLimitedError",
    "RemoteError",
    "ServerUnavailableError",
    "__version__",
]


def __getattr__(name: str) -> object:  # lazy: `import clipserve` stays cheap for the server
    if name == "Client":
        from clipserve.client import Client

        globals()["Client"] = Client  # a plain attribute from now on
        return Client
    raise AttributeError(f"module 'clipserve' has no attribute {name!r}")
