"""Content-addressed result store shared by every stage.

Each entry is one file ``<root>/<kind>/<key[:2]>/<key>.bin`` holding a magic tag,
the SHA-256 of the payload and the payload (an ``.npz`` archive of named arrays).
Writes go to a temporary file in the same folder and are renamed into place, so a
reader never sees half an entry; a per-entry file lock keeps two processes from
computing and writing the same entry at once. A damaged entry fails its checksum,
is reported once, removed and recomputed by the caller.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np
from filelock import FileLock

from archsim.errors import ArchsimError

# Bump when the layout of any cached payload changes: old entries then miss.
FORMAT_VERSION = 1
_MAGIC = b"ARCHSIM1"
_CHUNK = 1 << 24


def default_cache_root() -> Path:
    """``$ARCHSIM_CACHE`` if set, else ``~/.cache/archsim``."""
    env = os.environ.get("ARCHSIM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "archsim"


def digest(*parts: Any) -> str:
    """Stable SHA-256 hex digest of JSON-able parts (dict keys sorted)."""
    payload = json.dumps([FORMAT_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _read_umask() -> int:
    # The only portable way to read the umask sets it; done once at import, before any threads.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Have ``write`` fill a temporary file beside ``path`` (opened ``w+b``), then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w+b") as handle:
            write(handle)
            # mkstemp creates 0600; give the file the mode a plain open() would (shared caches, readable reports).
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename."""
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _sha256_to_end(handle: BinaryIO) -> bytes:
    """SHA-256 of ``handle`` from its position to the end, read in chunks (entries can be gigabytes)."""
    h = hashlib.sha256()
    for chunk in iter(lambda: handle.read(_CHUNK), b""):
        h.update(chunk)
    return h.digest()


class CacheStore:
    """Named-array entries keyed by content digests.

    Parameters
    ----------
    root : path
        Folder of the store; created on first write.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self.hits = 0
        self.misses = 0
        self.used: set[tuple[str, str]] = set()
        """(kind, key) of every entry read or written through this store: a run's footprint."""
        self._reported: set[Path] = set()
        if self.root.exists() and not self.root.is_dir():
            raise ArchsimError(f"cache path {self.root} is a file; pass --cache a folder")

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.bin"

    def get(self, kind: str, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under ``kind/key``, or None if absent or damaged."""
        path = self.path(kind, key)
        try:
            with path.open("rb") as handle:
                arrays = self._decode(handle)
        except FileNotFoundError:
            return None
        if arrays is None:
            if path not in self._reported:
                warnings.warn(f"cache entry {path} is damaged; recomputing it", stacklevel=2)
                self._reported.add(path)
            path.unlink(missing_ok=True)
        return arrays

    def put(self, kind: str, key: str, arrays: Mapping[str, np.ndarray]) -> None:
        def write(handle: BinaryIO) -> None:
            # The archive goes straight to the file and its digest is filled in afterwards: an
            # in-memory archive would hold a second copy of every array (gigabytes at ImageNet size).
            handle.write(_MAGIC + bytes(32))
            np.savez(handle, **{name: np.asarray(value) for name, value in arrays.items()})
            handle.seek(len(_MAGIC) + 32)
            digest_of_rest = _sha256_to_end(handle)
            handle.seek(len(_MAGIC))
            handle.write(digest_of_rest)

        atomic_write(self.path(kind, key), write)

    def get_or_compute(
        self, kind: str, key: str, compute: Callable[[], Mapping[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """Return the entry, computing and storing it under a lock if missing."""
        found = self.get(kind, key)
        if found is not None:
            self.hits += 1
            self._mark_used(kind, key)
            return found
        lock_path = self.path(kind, key).with_suffix(".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_path)):
            found = self.get(kind, key)  # another process may have finished it meanwhile
            if found is not None:
                self.hits += 1
                return found
            self.misses += 1
            arrays = {name: np.asarray(value) for name, value in compute().items()}
            self.put(kind, key, arrays)
            self.used.add((kind, key))
            return arrays

    def _mark_used(self, kind: str, key: str) -> None:
        # The modification time doubles as "last used", so pruning by age spares live entries.
        self.used.add((kind, key))
        try:
            os.utime(self.path(kind, key))
        except OSError:
            pass  # removed by a concurrent prune: the data in hand is still valid

    def entries(self) -> list[dict[str, object]]:
        """Every entry: kind, key, size in bytes, last use (POSIX time), path."""
        if not self.root.is_dir():
            return []
        rows = []
        for path in sorted(self.root.glob("*/*/*.bin")):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            rows.append({"kind": path.parent.parent.name, "key": path.stem, "bytes": stat.st_size, "last_used": stat.st_mtime, "path": path})
        return rows

    def remove(self, kind: str, key: str) -> int:
        """Delete one entry (and its lock file); returns the bytes freed."""
        path = self.path(kind, key)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        path.with_suffix(".lock").unlink(missing_ok=True)
        return size

    def contains(self, kind: str, key: str) -> bool:
        return self.path(kind, key).exists()

    @staticmethod
    def _decode(handle: BinaryIO) -> dict[str, np.ndarray] | None:
        """Check the payload's digest in chunks, then load the arrays from the same open file.

        Each array is read once, straight into its own memory; reading the whole entry
        into one bytes object first would hold every array twice.
        """
        if handle.read(len(_MAGIC)) != _MAGIC:
            return None
        expected = handle.read(32)
        payload_start = handle.tell()
        if _sha256_to_end(handle) != expected:
            return None
        handle.seek(payload_start)
        try:
            # zipfile finds the archive after the header: it allows data before an archive.
            with np.load(handle, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile):
            return None
