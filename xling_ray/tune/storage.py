"""Where a sweep is written: a local folder, an NFS mount, or an object store.

``--storage`` is what Ray Tune calls ``storage_path``: a local path, or a URI that
pyarrow's filesystems understand (``s3://bucket/runs``, ``gs://bucket/runs``,
``file:///abs/path``). Every trial writes its results and checkpoints there, from
whichever node it runs on, so a run on several nodes needs storage that every node
sees at the same address: an object store, or a network filesystem (NFS, EFS,
Filestore) mounted at the same path on every node. Ray itself only finds out at a
trial's first checkpoint on a second node; :func:`check_shared_storage` and
:func:`check_cluster_storage` refuse such a run before any trial starts.

A local path cannot be told apart from an NFS mount by its name, so an NFS path is
declared shared by the user (``--shared-storage``).
"""
from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from urllib.parse import urlparse

from xling_ray.config import ConfigError

SHARED_STORAGE_HELP = (
    "Use storage that every node sees: an object store (--storage s3://BUCKET/runs or gs://BUCKET/runs), "
    "or an NFS path mounted at the same place on every node together with --shared-storage"
)


def is_uri(storage: str) -> bool:
    """``s3://...``, ``gs://...``, ``file://...``: anything with a scheme (Ray's own test)."""
    return "://" in str(storage)


def _split_query(uri: str) -> tuple[str, str]:
    """``("s3://b/runs", "?endpoint_override=...")``: a URI's path part and its query (``""`` if none).
    pyarrow and Ray read settings of the filesystem from the query (``endpoint_override``,
    ``region``, ``scheme``, ...), so it must stay at the end of every path built from the URI."""
    base, sep, query = uri.partition("?")
    return base, sep + query


def resolve_storage(storage: str) -> str:
    """A local path made absolute (trials run in other folders and processes); a URI as given,
    without a trailing ``/`` (before its query, if it has one). Every command reads a run folder
    through it, typed any way (relative, ``./``, ``~``, absolute, a URI): Ray's ``ExperimentAnalysis``
    takes a relative path for a URI with an empty scheme and fails."""
    storage = str(storage)
    if is_uri(storage):
        base, query = _split_query(storage)
        return base.rstrip("/") + query
    return str(Path(storage).expanduser().resolve())


def join(run_dir: str | Path, *parts: str) -> str:
    """``RUN_DIR/part/...``: a path, or a URI with the parts put before its query
    (``s3://b/runs?endpoint_override=H`` and ``q`` give ``s3://b/runs/q?endpoint_override=H``)."""
    run_dir = str(run_dir)
    if not is_uri(run_dir):
        return str(Path(run_dir).joinpath(*parts))
    base, query = _split_query(run_dir)
    return "/".join([base.rstrip("/"), *parts]) + query


def run_dir_of(storage: str, name: str) -> str:
    """The run folder ``STORAGE/NAME``, as a path or a URI (``Path`` would fold ``s3://`` into ``s3:/``)."""
    return join(resolve_storage(storage), name)


def split_run_dir(run_dir: str | Path) -> tuple[str, str]:
    """``(STORAGE, NAME)`` of a run folder given as a path or a URI: the inverse of :func:`run_dir_of`
    (a URI's query stays with the storage)."""
    run_dir = resolve_storage(str(run_dir))
    if not is_uri(run_dir):
        return str(Path(run_dir).parent), Path(run_dir).name
    base, query = _split_query(run_dir)
    storage, _, name = base.rpartition("/")
    return storage + query, name


def is_shared(storage: str, shared: bool = False) -> bool:
    """An object-store URI is reachable from every node; a local path only when the user says so."""
    if shared:
        return True
    return is_uri(storage) and urlparse(str(storage)).scheme not in ("", "file")


def is_remote_address(address: str | None) -> bool:
    """Whether ``address`` (``host:port``, ``ray://host:port``, ``http://host:8265``) names
    another machine. ``None``, ``local`` and ``auto`` are this machine."""
    if not address or address in ("local", "auto"):
        return False
    host = urlparse(address if "://" in address else f"ray://{address}").hostname
    if not host:
        return False
    try:
        ip = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError):
        return True  # a name this machine cannot resolve is not this machine
    if ip.is_loopback or ip.is_unspecified:
        return False
    try:
        own = {socket.gethostbyname(socket.gethostname()), *socket.gethostbyname_ex(socket.gethostname())[2]}
    except OSError:
        own = set()
    return str(ip) not in own


def check_shared_storage(storage: str, address: str | None, shared: bool = False) -> None:
    """Refuse a local, undeclared ``storage`` for a run on another machine's cluster.

    Raises :class:`~xling_ray.config.ConfigError` naming the fix; silent for URIs of
    object stores, for ``shared=True`` and for a cluster on this machine.
    """
    if is_shared(storage, shared) or not is_remote_address(address):
        return
    raise ConfigError(
        f"--storage {storage} is a local path, but {address} is a cluster on another machine: trials on its "
        f"nodes cannot write there, and the run would be scattered over their disks. {SHARED_STORAGE_HELP}."
    )


def check_cluster_storage(storage: str, shared: bool = False) -> None:
    """After ``ray.init``: refuse a local, undeclared ``storage`` on a cluster of several nodes.

    A cluster that has one node now but autoscales can still put trials on new nodes; Ray
    then fails at their first checkpoint. Declare or use shared storage on such clusters.
    """
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    if len(alive) > 1 and not is_shared(storage, shared):
        raise ConfigError(
            f"--storage {storage} is a local path, but this Ray cluster has {len(alive)} nodes: trials on the "
            f"other nodes cannot write there. {SHARED_STORAGE_HELP}."
        )


def open_run_dir(run_dir: str | Path):
    """``(pyarrow filesystem, path inside it)`` of a run folder given as a path or a URI.

    Raises ``FileNotFoundError`` when the folder does not exist.
    """
    import pyarrow.fs

    run_dir = str(run_dir)
    if is_uri(run_dir):
        fs, path = pyarrow.fs.FileSystem.from_uri(resolve_storage(run_dir))
    else:
        fs, path = pyarrow.fs.LocalFileSystem(), str(Path(run_dir).expanduser().resolve())
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    return fs, path


def read_text(run_dir: str | Path, filename: str) -> str:
    """A file of a run folder (path or URI), e.g. ``search_space.yaml``."""
    fs, path = open_run_dir(run_dir)
    with fs.open_input_stream(f"{path}/{filename}") as f:
        return f.read().decode()


def write_text(run_dir: str | Path, filename: str, text: str) -> str:
    """Write a file into a run folder (path or URI), e.g. ``leaderboard.csv``; returns where it went."""
    fs, path = open_run_dir(run_dir)
    with fs.open_output_stream(f"{path}/{filename}") as f:
        f.write(text.encode())
    return join(resolve_storage(str(run_dir)), filename)
