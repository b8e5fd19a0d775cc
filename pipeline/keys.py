"""CurveZMQ keys for workers: make them, load them, and the dispatcher's allow-list.

Layout of a keys folder (``pipeline keys init DIR``)::

    DIR/server.key, DIR/server.key_secret        the dispatcher's key pair
    DIR/workers/NAME.key, NAME.key_secret        one key pair per worker host
    DIR/authorized/NAME.key                      public keys the dispatcher accepts

The front end needs ``server.key_secret`` and ``authorized/``; a worker host needs
``server.key`` and its own ``workers/NAME.key_secret``. Secret files are mode 600. The
files are pyzmq's certificate format (``zmq.auth``), so its tools read them too.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

#: The key pair `pipeline run` gives its own local workers.
LOCAL = "local"


@dataclass(frozen=True)
class ServerKeys:
    public: bytes
    secret: bytes
    authorized: Path  # folder of the public keys allowed to join


@dataclass(frozen=True)
class WorkerKeys:
    public: bytes
    secret: bytes
    server_public: bytes


def init_keys(folder: str | os.PathLike[str], workers: list[str], force: bool = False) -> list[Path]:
    """Make the server's key pair and one per worker name, and allow those workers.

    Returns:
        The files written.

    Raises:
        ConfigError: keys already exist there (and ``force`` is not set).
    """
    import zmq.auth

    root = Path(folder)
    if (root / "server.key_secret").exists() and not force:
        raise ConfigError(f"{root} already holds keys; add workers with `pipeline keys add`, or pass --force")
    for sub in (root, root / "workers", root / "authorized"):
        sub.mkdir(parents=True, exist_ok=True)
        os.chmod(sub, 0o700)
    written = [Path(p) for p in zmq.auth.create_certificates(root, "server")]
    for name in [LOCAL, *workers]:
        written += add_worker(root, name)
    for path in written:
        os.chmod(path, 0o600 if path.name.endswith(".key_secret") else 0o644)
    return written


def add_worker(folder: str | os.PathLike[str], name: str) -> list[Path]:
    """A key pair for one more worker host, allowed at once."""
    import zmq.auth

    root = Path(folder)
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"bad worker key name {name!r}")
    public, secret = (Path(p) for p in zmq.auth.create_certificates(root / "workers", name))
    os.chmod(secret, 0o600)
    allowed = root / "authorized" / public.name
    shutil.copyfile(public, allowed)
    return [public, secret, allowed]


def _load(path: Path, what: str, secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None
    if secret and not secret_key:
        raise ConfigError(f"{path} holds no secret key")
    return public, secret_key


def load_server(folder: str | os.PathLike[str]) -> ServerKeys:
    """The dispatcher's keys and allow-list.

    Raises:
        ConfigError: the folder, the server's secret key or the allow-list is missing,
            unreadable or empty.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"keys folder {root} does not exist; make one with `pipeline keys init {root}`")
    public, secret = _load(root / "server.key_secret", "the server's secret key", secret=True)
    authorized = root / "authorized"
    try:
        allowed = [p for p in authorized.iterdir() if p.suffix == ".key"]
    except OSError as exc:
        raise ConfigError(f"cannot read the worker allow-list {authorized}: {exc.strerror or exc}") from None
    if not allowed:
        raise ConfigError(f"the worker allow-list {authorized} is empty: no worker could join")
    assert secret is not None
    return ServerKeys(public, secret, authorized)


def load_worker(folder: str | os.PathLike[str], name: str) -> WorkerKeys:
    """A worker host's key pair and the server's public key.

    Raises:
        ConfigError: a file is missing or unreadable.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"keys folder {root} does not exist")
    server_public, _ = _load(root / "server.key", "the server's public key", secret=False)
    public, secret = _load(root / "workers" / f"{name}.key_secret", f"worker key {name!r}", secret=True)
    assert secret is not None
    return WorkerKeys(public, secret, server_public)
