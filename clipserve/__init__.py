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
    "RemoteError",
    "ServerUnavailableError",
    "__version__",
]


def __getattr__(name: str):  # lazy so `import clipserve` stays cheap for the server
    if name == "Client":
        from clipserve.client import Client

        return Client
    raise AttributeError(name)
