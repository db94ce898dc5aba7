"""Where model files live: the Hugging Face hub cache and clipserve's own ONNX cache.

Hub models are looked up in the local cache first (no network). Only when that misses and
the hub is not switched off (``HF_HUB_OFFLINE=1``) do we try to download, after a
connection probe bounded to a few seconds, so an offline machine fails fast with an error
that says what to do instead of hanging.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from clipserve.errors import ModelUnavailableError

#: files a checkpoint needs besides its weights: config, tokenizer (CLIP/Gemma/XLM-R
#: tokenizer.json, CLIP's vocab.json + merges.txt, SigLIP's spiece.model, BERT's vocab.txt,
#: XLM-R's sentencepiece.bpe.model) and image preprocessor config
HUB_FILES = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "preprocessor_config.json",
]
#: transformers weights, preferred first; open_clip/flax/tf copies in the same repos are skipped
SAFETENSORS = ["model.safetensors", "model-*.safetensors", "model.safetensors.index.json"]
PICKLED = ["pytorch_model.bin", "pytorch_model-*.bin", "pytorch_model.bin.index.json"]
CONNECT_TIMEOUT_S = 5.0


def write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """Have ``write`` fill a temporary file beside ``target``, then rename it into place, so
    concurrent starts never read half a file. The temporary file is removed if anything
    fails; errors (``OSError`` for an unwritable directory) reach the caller."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp" + target.suffix)
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)


def hub_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The hub cache used: ``cache_dir/hub`` if given, else HF's own default."""
    if cache_dir is not None:
        return Path(cache_dir) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


#: names clipserve's own cache (ONNX exports, int8 graphs, the built-in model's tables)
CACHE_ENV = "CLIPSERVE_CACHE_DIR"


def clipserve_cache_dir() -> Path:
    """clipserve's own cache: ``$CLIPSERVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/clipserve``,
    else ``~/.cache/clipserve``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "clipserve"


def onnx_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir/onnx``, else ``onnx`` in ``clipserve_cache_dir()``."""
    if cache_dir is not None:
        return Path(cache_dir) / "onnx"
    return clipserve_cache_dir() / "onnx"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cached_snapshot(repo_id: str, cache_dir: str | Path | None = None) -> Path | None:
    """The local snapshot of ``repo_id`` if it is complete enough to load, else None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(
            snapshot_download(
                repo_id,
                cache_dir=hub_cache_dir(cache_dir),
                local_files_only=True,
                allow_patterns=HUB_FILES + SAFETENSORS + PICKLED,
            )
        )
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    has_weights = any(path.glob("model*.safetensors")) or any(path.glob("pytorch_model*.bin"))
    return path if (path / "config.json").is_file() and has_weights else None


def fetch_snapshot(name: str, repo_id: str, cache_dir: str | Path | None = None) -> Path:
    """A local directory holding ``repo_id``: cached, or downloaded now into the hub cache."""
    local = cached_snapshot(repo_id, cache_dir)
    if local is not None:
        return local
    cache = hub_cache_dir(cache_dir)
    if hub_offline():
        raise _unavailable(name, repo_id, cache, "HF_HUB_OFFLINE is set and it is not cached")
    from huggingface_hub import HfApi, constants, snapshot_download

    reason = _probe(constants.ENDPOINT)
    if reason:
        raise _unavailable(name, repo_id, cache, reason)
    try:
        files = HfApi().list_repo_files(repo_id)
        weights = SAFETENSORS if any(_is_safetensors(f) for f in files) else PICKLED
        path = snapshot_download(
            repo_id,
            cache_dir=cache,
            allow_patterns=HUB_FILES + weights,
            etag_timeout=CONNECT_TIMEOUT_S,
        )
    except Exception as exc:  # network, auth, missing repo: all mean "not available"
        raise _unavailable(name, repo_id, cache, f"download failed: {exc}") from exc
    return Path(path)


def _is_safetensors(filename: str) -> bool:
    return filename.startswith("model") and filename.endswith(".safetensors")


def _probe(endpoint: str) -> str | None:
    """None if a TCP connection to the hub opens within the timeout, else why not."""
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"the hub at {endpoint} is unreachable ({exc or type(exc).__name__})"


def _unavailable(name: str, repo_id: str, cache: Path, reason: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"model {name!r} (Hugging Face repo {repo_id}) is not available: {reason}. "
        f"Looked in the hub cache at {cache}. To supply it: pass a local directory in HF "
        f"format (the checkpoint's files) as the model name; or pre-populate the cache on a "
        f"connected machine (`hf download {repo_id}` with HF_HUB_CACHE={cache}) and copy it here; "
        f"or use the built-in model (name 'builtin', needs no download)."
    )


def weights_fingerprint(directory: Path) -> str:
    """A short hash identifying the weight files in ``directory``.

    Hub snapshots link each file to a blob named by its sha256, so the link target is used
    when present; plain files are hashed by content.
    """
    digest = hashlib.sha256()
    weights = sorted(directory.glob("model*.safetensors")) + sorted(
        directory.glob("pytorch_model*.bin")
    )
    for path in weights:
        digest.update(path.name.encode())
        if path.is_symlink():
            digest.update(Path(os.readlink(path)).name.encode())
            continue
        with path.open("rb") as handle:
            for chunk in iter(lambda handle=handle: handle.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]
