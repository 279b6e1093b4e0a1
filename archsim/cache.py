"""Content-addressed result store shared by every stage.

Each entry is one file ``<root>/<kind>/<key[:2]>/<key>.bin`` holding a magic tag,
the SHA-256 of the payload and the payload (an ``.npz`` archive of named arrays).
Writes go to a temporary file in the same folder and are renamed into place, so a
reader never sees half an entry; a per-entry file lock keeps two processes from
computing and writing the same entry at once. A damaged entry fails its checksum,
is reported once, removed and recomputed by the caller.

Arrays larger than memory (data sets, adversarial sets) are written and read in
batches of rows (:meth:`CacheStore.get_or_stream`, :class:`StoredArrays`). A
streamed read cannot check the SHA-256 of the whole entry before it starts, so it
relies on the archive's own CRC-32 of each array, checked when the array has been
read to its end.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import struct
import tempfile
import time
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping

import numpy as np
from filelock import FileLock

from archsim.errors import ArchsimError, ParameterError

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


class Footprint(set):
    """The (kind, key) of entries used through a store, remembering when each was last used, so that one piece of
    work on a store that served others before it can name its own entries (:meth:`since`)."""

    def __init__(self, entries: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__()
        self._last: dict[tuple[str, str], int] = {}
        self._clock = itertools.count(1)
        self.update(entries)

    def __reduce__(self) -> tuple:
        # A copy sent to another process (a Ray task's store) keeps the entries, not when this process used them.
        return Footprint, (sorted(self),)

    def add(self, entry: tuple[str, str]) -> None:
        super().add(entry)
        self._last[entry] = next(self._clock)

    def update(self, *entries: Iterable[tuple[str, str]]) -> None:
        for group in entries:
            for entry in group:
                self.add(entry)

    def mark(self) -> int:
        """A point to ask :meth:`since` about."""
        return next(self._clock)

    def since(self, mark: int) -> set[tuple[str, str]]:
        """The entries used after ``mark`` (taken with :meth:`mark`)."""
        return {entry for entry, last in self._last.items() if last > mark}


@dataclass(frozen=True)
class Tally:
    """Where a store's counters stood when a piece of work began (:meth:`CacheStore.tally`)."""

    store: "CacheStore"
    hits: int
    misses: int
    mark: int

    def counts(self) -> tuple[int, int, set[tuple[str, str]]]:
        """Hits, misses and the entries used since the tally was taken."""
        return self.store.hits - self.hits, self.store.misses - self.misses, self.store.used.since(self.mark)


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
        self.used = Footprint()
        """(kind, key) of every entry read or written through this store: a run's footprint."""
        self.bytes_read = 0
        """Bytes read back from entries: checksums, loads, and the batches callers report (:meth:`count_read`)."""
        self._reported: set[Path] = set()
        if self.root.exists() and not self.root.is_dir():
            raise ParameterError("cache", f"cache path {self.root} is a file; pass {{}} a folder")
        # Made on the first write, possibly deep inside a task: what would keep it from being made is told now.
        existing = next(p for p in (self.root, *self.root.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            why = "is a file" if not existing.is_dir() else "is not writable"
            raise ParameterError(
                "cache", f"cache path {self.root} cannot be made: {existing} {why}; pass {{}} a folder you can write to"
            )

    def tally(self) -> Tally:
        """The counters now, to count one piece of work's hits, misses and entries on a store that served others."""
        return Tally(self, self.hits, self.misses, self.used.mark())

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.bin"

    def get(self, kind: str, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under ``kind/key``, or None if absent or damaged."""
        path = self.path(kind, key)
        try:
            with path.open("rb") as handle:
                arrays = self._decode(handle)
                self.count_read(2 * os.fstat(handle.fileno()).st_size)  # checked once, then loaded
        except FileNotFoundError:
            return None
        if arrays is None:
            self._discard(path)
        return arrays

    def _intact(self, kind: str, key: str) -> bool:
        """Whether the entry exists and passes its checksum (read in chunks: no array is loaded)."""
        path = self.path(kind, key)
        try:
            with path.open("rb") as handle:
                intact = _checksum_matches(handle)
                self.count_read(handle.tell())
        except FileNotFoundError:
            return False
        if not intact:
            self._discard(path)
        return intact

    def _discard(self, path: Path) -> None:
        if path not in self._reported:
            warnings.warn(f"cache entry {path} is damaged; recomputing it", stacklevel=3)
            self._reported.add(path)
        path.unlink(missing_ok=True)

    def put(self, kind: str, key: str, arrays: Mapping[str, np.ndarray]) -> None:
        # The archive goes straight to the file: an in-memory archive would hold a second copy of every array.
        self._write(
            kind, key, lambda handle: np.savez(handle, **{name: np.asarray(value) for name, value in arrays.items()})
        )

    def put_stream(
        self,
        kind: str,
        key: str,
        name: str,
        shape: tuple[int, ...],
        dtype: np.dtype | type,
        batches: Iterable[np.ndarray],
        finish: Callable[[], Mapping[str, np.ndarray]] | None = None,
    ) -> None:
        """Write array ``name`` of ``shape`` from ``batches`` of rows as they come, then the arrays ``finish()``
        returns.

        Only one batch is in memory at a time. A -1 after the first dimension of
        ``shape`` is taken from the first batch (a width known once computed). Nothing
        is stored unless the batches fill ``shape`` exactly.
        """
        dtype = np.dtype(dtype)

        def fill(handle: BinaryIO) -> None:
            nonlocal shape
            with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    rows, pending = 0, iter(batches)
                    if -1 in shape[1:]:
                        first = next(pending, None)
                        if first is None:
                            raise ValueError(f"no batch to take the shape {tuple(shape)} of {name} from")
                        shape = (
                            shape[0],
                            *(np.shape(first)[i] if size == -1 else size for i, size in enumerate(shape[1:], 1)),
                        )
                        pending = itertools.chain([first], pending)
                        del first  # the chain alone keeps it, until it is written
                    header = {
                        "descr": np.lib.format.dtype_to_descr(dtype),
                        "fortran_order": False,
                        "shape": tuple(shape),
                    }
                    np.lib.format.write_array_header_1_0(member, header)
                    for batch in pending:
                        batch = np.ascontiguousarray(batch, dtype=dtype)
                        if batch.shape[1:] != tuple(shape[1:]):
                            raise ValueError(
                                f"a batch of shape {batch.shape} does not fit {name} of shape {tuple(shape)}"
                            )
                        member.write(memoryview(batch).cast("B"))
                        rows += len(batch)
                        del batch  # else the loop variable keeps this batch alive while the next one is produced
                    if rows != shape[0]:
                        raise ValueError(f"{rows} rows written to {name} of shape {tuple(shape)}")
                for extra, value in (finish() if finish is not None else {}).items():
                    with archive.open(f"{extra}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)

        self._write(kind, key, fill)

    def _write(self, kind: str, key: str, fill: Callable[[BinaryIO], None]) -> None:
        """Atomically write an entry whose archive ``fill`` writes from the handle's position on."""

        def write(handle: BinaryIO) -> None:
            # The digest is filled in after the archive is written, so the archive never has to be held in memory.
            handle.write(_MAGIC + bytes(32))
            fill(handle)
            handle.seek(len(_MAGIC) + 32)
            digest_of_rest = _sha256_to_end(handle)
            self.count_read(handle.tell())
            handle.seek(len(_MAGIC))
            handle.write(digest_of_rest)

        atomic_write(self.path(kind, key), write)

    def count_read(self, nbytes: int) -> None:
        """Add ``nbytes`` to :attr:`bytes_read` (callers that stream an entry's batches report them here)."""
        self.bytes_read += int(nbytes)

    def find(self, kind: str, key: str) -> dict[str, np.ndarray] | None:
        """The entry's arrays, counted as a hit and used, or None (not counted) where it is absent or damaged."""
        found = self.get(kind, key)
        if found is not None:
            self.hits += 1
            self._mark_used(kind, key)
        return found

    def put_computed(self, kind: str, key: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Store what a caller computed after :meth:`find` missed, counted as a miss and used."""
        self.misses += 1
        with self._lock(kind, key):
            self._remove_stale_writes(kind, key)
            self.put(kind, key, arrays)
        self.used.add((kind, key))

    def _remove_stale_writes(self, kind: str, key: str) -> None:
        """Delete temporary files of this entry that a killed writer left (SIGKILL leaves no chance to clean up).

        Only under the entry's lock, which every writer of the entry holds and the system releases when its
        process dies: a temporary file found then belongs to no live writer.
        """
        path = self.path(kind, key)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)

    def get_or_compute(
        self, kind: str, key: str, compute: Callable[[], Mapping[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """Return the entry, computing and storing it under a lock if missing."""
        found = self.get(kind, key)
        if found is not None:
            self.hits += 1
            self._mark_used(kind, key)
            return found
        with self._lock(kind, key):
            found = self.get(kind, key)  # another process may have finished it meanwhile
            if found is not None:
                self.hits += 1
                self._mark_used(kind, key)  # part of this run all the same: `cache prune --run` keeps it
                return found
            self.misses += 1
            arrays = {name: np.asarray(value) for name, value in compute().items()}
            self._remove_stale_writes(kind, key)
            self.put(kind, key, arrays)
            self.used.add((kind, key))
            return arrays

    def get_or_stream(
        self,
        kind: str,
        key: str,
        name: str,
        shape: tuple[int, ...],
        dtype: np.dtype | type,
        produce: Callable[[], Iterable[np.ndarray]],
        finish: Callable[[], Mapping[str, np.ndarray]] | None = None,
    ) -> StoredArrays:
        """The entry, checked but not loaded; if missing, written from ``produce()`` as in :meth:`put_stream`."""
        if self._intact(kind, key):
            self.hits += 1
            self._mark_used(kind, key)
            return StoredArrays(self.path(kind, key))
        with self._lock(kind, key):
            if self._intact(kind, key):
                self.hits += 1
            else:
                self.misses += 1
                self._remove_stale_writes(kind, key)
                self.put_stream(kind, key, name, shape, dtype, produce(), finish)
            self.used.add((kind, key))
            return StoredArrays(self.path(kind, key))

    def open(self, kind: str, key: str) -> StoredArrays | None:
        """The entry to read array by array or in batches (unchecked until read), or None if absent."""
        path = self.path(kind, key)
        if not path.is_file():
            return None
        self._mark_used(kind, key)
        return StoredArrays(path)

    def _lock(self, kind: str, key: str) -> FileLock:
        lock_path = self.path(kind, key).with_suffix(".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(lock_path))

    def _mark_used(self, kind: str, key: str) -> None:
        self.used.add((kind, key))
        self.touch(kind, key)

    def touch(self, kind: str, key: str) -> None:
        """Record a use of the entry without adding it to the run's footprint (:attr:`used`)."""
        # The modification time doubles as "last used", so pruning by age spares live entries.
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
            rows.append(
                {
                    "kind": path.parent.parent.name,
                    "key": path.stem,
                    "bytes": stat.st_size,
                    "last_used": stat.st_mtime,
                    "path": path,
                }
            )
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

    def prune(
        self, older_than: float | None = None, run_dir: str | Path | None = None, dry_run: bool = False
    ) -> tuple[int, int]:
        """Remove the entries not used for ``older_than`` days, or those a run folder used (its
        ``cache_entries.txt``); exactly one of the two. Returns the entries and bytes removed (with ``dry_run``,
        that would be removed). Anything removed is recomputed when next needed."""
        if (older_than is None) == (run_dir is None):
            raise ParameterError("older_than", "give exactly one of {} DAYS or a run folder whose entries to remove")
        if older_than is not None:
            if not older_than >= 0:
                raise ParameterError("older_than", f"must be 0 or more days, got {older_than}")
            cutoff = time.time() - older_than * 86400
            chosen = [(e["kind"], e["key"]) for e in self.entries() if e["last_used"] < cutoff]
        else:
            listing = Path(run_dir) / "cache_entries.txt"
            if not listing.is_file():
                raise ParameterError(
                    "run_dir", f"{{}} {run_dir} has no cache_entries.txt; give a finished run's folder"
                )
            chosen = [tuple(line.split("/", 1)) for line in listing.read_text().split() if "/" in line]
        freed = 0
        for kind, key in chosen:
            if dry_run:
                path = self.path(kind, key)
                freed += path.stat().st_size if path.exists() else 0
            else:
                freed += self.remove(kind, key)
        return len(chosen), freed

    def contains(self, kind: str, key: str) -> bool:
        return self.path(kind, key).exists()

    @staticmethod
    def _decode(handle: BinaryIO) -> dict[str, np.ndarray] | None:
        """Check the payload's digest in chunks, then load the arrays from the same open file.

        Each array is read once, straight into its own memory; reading the whole entry
        into one bytes object first would hold every array twice.
        """
        payload_start = len(_MAGIC) + 32
        if not _checksum_matches(handle):
            return None
        handle.seek(payload_start)
        try:
            # zipfile finds the archive after the header: it allows data before an archive.
            with np.load(handle, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile):
            return None


def check_cache(cache: CacheStore | str | os.PathLike | None, default: str | os.PathLike | None = None) -> CacheStore:
    """``cache`` as a store, made once at the boundary: a store as it is, else a store at the path, at ``default``
    (a run's own cache) where the path is None, and at :func:`default_cache_root` where both are."""
    if isinstance(cache, CacheStore):
        return cache
    return CacheStore(cache if cache is not None else default)


def _checksum_matches(handle: BinaryIO) -> bool:
    if handle.read(len(_MAGIC)) != _MAGIC:
        return False
    expected = handle.read(32)
    return _sha256_to_end(handle) == expected


class StoredArrays:
    """One cache entry, read an array at a time: small arrays whole, large ones in batches of rows.

    Holds only the entry's path, so it travels cheaply to other processes (Ray
    workers read the shared cache folder themselves). A damaged entry found while
    reading is removed and reported in a one-line error; a rerun recomputes it.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"StoredArrays({str(self.path)!r})"

    def array(self, name: str) -> np.ndarray:
        with self._member(name) as member:
            try:
                return np.lib.format.read_array(member, allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
                raise self._damaged(error) from None

    def shape(self, name: str) -> tuple[int, ...]:
        with self._member(name) as member:
            return self._header(member)[0]

    def mapped(self, name: str) -> np.ndarray:
        """Array ``name`` memory-mapped read-only from the entry: the pages the caller touches are read on
        demand and can be dropped again by the system, so an array larger than memory costs no memory.

        Unchecked: map entries that :meth:`CacheStore.get_or_stream` has just checked.
        """
        with self._archive() as (archive, handle):
            info = self._info(archive, name)
            if info.compress_type != zipfile.ZIP_STORED:
                return self.array(name)  # a compressed member has no bytes to map
            try:
                handle.seek(info.header_offset)  # zipfile already counts the data before the archive in this offset
                local = struct.unpack(zipfile.structFileHeader, handle.read(zipfile.sizeFileHeader))
                # Fields 10 and 11 of a local file header: the lengths of its name and extra field.
                handle.seek(info.header_offset + zipfile.sizeFileHeader + local[10] + local[11])
            except (OSError, struct.error) as error:
                raise self._damaged(error) from None
            shape, dtype = self._header(handle, rows=False)
            offset = handle.tell()
        if offset + dtype.itemsize * math.prod(shape) > self.path.stat().st_size:
            raise self._damaged(f"{name} is cut short")
        return np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape)

    def batches(self, name: str, batch_size: int) -> Iterator[np.ndarray]:
        """Array ``name`` in consecutive batches of ``batch_size`` rows (the last may be shorter)."""
        with self._member(name) as member:
            shape, dtype = self._header(member)
            row_bytes = dtype.itemsize * math.prod(shape[1:])
            for start in range(0, shape[0], batch_size):
                rows = min(batch_size, shape[0] - start)
                batch = np.empty((rows, *shape[1:]), dtype)  # a fresh array per batch: callers may keep it
                try:
                    filled = member.readinto(memoryview(batch).cast("B")) if batch.size else 0
                except (OSError, EOFError, zipfile.BadZipFile) as error:
                    raise self._damaged(error) from None
                if filled != rows * row_bytes:
                    raise self._damaged(f"{name} ends after {start * row_bytes + filled} bytes")
                yield batch
            try:
                member.read()  # reaching the end of the array checks its CRC-32
            except (OSError, EOFError, zipfile.BadZipFile) as error:
                raise self._damaged(error) from None

    @contextmanager
    def _member(self, name: str) -> Iterator[BinaryIO]:
        with self._archive() as (archive, _), archive.open(self._info(archive, name)) as member:
            yield member

    @contextmanager
    def _archive(self) -> Iterator[tuple[zipfile.ZipFile, BinaryIO]]:
        """The entry's archive and the open file under it."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            raise ArchsimError(f"cache entry {self.path} vanished while in use; rerun to recompute it") from None
        except OSError as error:
            raise self._damaged(error) from None
        with handle:
            try:
                archive = zipfile.ZipFile(handle)
            except (OSError, zipfile.BadZipFile) as error:
                raise self._damaged(error) from None
            with archive:
                yield archive, handle

    def _info(self, archive: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
        try:
            return archive.getinfo(f"{name}.npy")
        except KeyError:
            raise ArchsimError(
                f"cache entry {self.path} holds no array {name!r}; it was written by other code, remove it"
            ) from None

    def _header(self, member: BinaryIO, rows: bool = True) -> tuple[tuple[int, ...], np.dtype]:
        try:
            version = np.lib.format.read_magic(member)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read(member)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise self._damaged(error) from None
        if fortran_order or (rows and not shape):
            raise self._damaged("not a C-ordered array of rows" if rows else "not a C-ordered array")
        return shape, dtype

    def _damaged(self, error: object) -> ArchsimError:
        self.path.unlink(missing_ok=True)
        return ArchsimError(f"cache entry {self.path} is damaged ({error}); it was removed, rerun to recompute it")
