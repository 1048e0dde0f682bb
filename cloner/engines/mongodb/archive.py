"""Reading a ``mongodump --archive --gzip`` file without a server.

The archive format (mongo-tools ``common/archive/spec.md``): a magic number,
a header document, one metadata document per collection, a terminator, then
namespace blocks — a header document, data documents, a terminator — ending
with an end-of-data block per collection. With ``--gzip`` the whole archive
is one gzip stream.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import bson

from cloner.errors import BackupError

Document = dict[str, Any]

#: Little-endian 0x8199e26d.
ARCHIVE_MAGIC = b"\x6d\xe2\x99\x81"
GZIP_MAGIC = b"\x1f\x8b"
_TERMINATOR = -1


class Readable(Protocol):
    """A binary stream (a file, a ``GzipFile``, ``BytesIO``)."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes; fewer only at the end."""


@dataclass
class ArchiveSummary:
    """What a mongodump archive holds, read without a server."""

    server_version: str = ""
    tool_version: str = ""
    #: (db, collection) named in the prelude, in order.
    namespaces: list[tuple[str, str]] = field(default_factory=list)
    #: Namespaces the prelude marks as views (they hold no documents of their own).
    views: set[tuple[str, str]] = field(default_factory=set)
    #: Documents per (db, collection) found in the body.
    documents: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Namespaces whose end-of-data marker was seen.
    finished: set[tuple[str, str]] = field(default_factory=set)

    def counts(self, database: str) -> dict[str, int]:
        """Documents per collection of ``database`` (collections without data count 0)."""
        return {
            coll: self.documents.get((db, coll), 0)
            for db, coll in sorted(self.namespaces)
            if db == database and (db, coll) not in self.views
        }

    def problems(self, database: str) -> list[str]:
        """Why this archive is not a complete backup of ``database`` alone (empty = fine)."""
        issues = []
        databases = sorted({db for db, _ in self.namespaces})
        if database not in databases:
            issues.append(f"the archive does not contain database {database} "
                          f"(contains {databases or 'nothing'})")
        if others := [db for db in databases if db != database]:
            issues.append(f"the archive contains other databases {others}")
        if unfinished := sorted(set(self.namespaces) - self.finished):
            shown = ", ".join(f"{db}.{coll}" for db, coll in unfinished[:5])
            issues.append(f"the archive is truncated: no end marker for {shown}")
        if strays := sorted(set(self.documents) - set(self.namespaces)):
            issues.append(f"data for namespaces missing from the prelude: {strays[:5]}")
        return issues


def read_archive(stream: Readable) -> ArchiveSummary:
    """Walk a (decompressed) mongodump archive: prelude, then every namespace block.

    Every BSON document of the prelude and every block header is decoded;
    data documents are counted by their length prefix. Raises ``BackupError``
    on anything that is not the documented format.
    """
    if _read_exact(stream, 4, "magic number") != ARCHIVE_MAGIC:
        raise BackupError("not a mongodump archive (bad magic number)")
    summary = ArchiveSummary()
    header = _read_document(stream, "archive header")
    if header is None:
        raise BackupError("mongodump archive has no header")
    summary.server_version = str(header.get("server_version", ""))
    summary.tool_version = str(header.get("tool_version", ""))
    while (meta := _read_document(stream, "collection metadata")) is not None:
        namespace = (str(meta.get("db")), str(meta.get("collection")))
        summary.namespaces.append(namespace)
        if meta.get("type") == "view":
            summary.views.add(namespace)
    while True:
        size_bytes = stream.read(4)
        if not size_bytes:
            return summary  # a clean end between blocks
        head = _document_after_size(stream, size_bytes, "namespace header")
        if head is None:
            raise BackupError("mongodump archive: a terminator where a namespace header belongs")
        namespace = (str(head.get("db")), str(head.get("collection")))
        if head.get("EOF"):
            summary.finished.add(namespace)
            if _read_size(stream, "end-of-namespace terminator") != _TERMINATOR:
                raise BackupError(f"mongodump archive: no terminator after the end of "
                                  f"{namespace[0]}.{namespace[1]}")
            continue
        count = 0
        while (size := _read_size(stream, "namespace data")) != _TERMINATOR:
            if size < 5:
                raise BackupError(f"mongodump archive: bad document size {size}")
            _read_exact(stream, size - 4, "namespace data")
            count += 1
        summary.documents[namespace] = summary.documents.get(namespace, 0) + count


def _read_exact(stream: Readable, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise BackupError(f"mongodump archive is truncated in the {what}")
    return data


def _read_size(stream: Readable, what: str) -> int:
    value: int = struct.unpack("<i", _read_exact(stream, 4, what))[0]
    return value


def _read_document(stream: Readable, what: str) -> Document | None:
    return _document_after_size(stream, _read_exact(stream, 4, what), what)


def _document_after_size(stream: Readable, size_bytes: bytes, what: str) -> Document | None:
    if len(size_bytes) != 4:
        raise BackupError(f"mongodump archive is truncated in the {what}")
    size: int = struct.unpack("<i", size_bytes)[0]
    if size == _TERMINATOR:
        return None
    if size < 5:
        raise BackupError(f"mongodump archive: bad {what} size {size}")
    raw = size_bytes + _read_exact(stream, size - 4, what)
    try:
        return bson.decode(raw)
    except bson.errors.BSONError as exc:
        raise BackupError(f"mongodump archive: unreadable {what}: {exc}") from exc


def inspect_backup(path: Path) -> ArchiveSummary:
    """Read a ``mongodump --archive --gzip`` file: gzip, then the archive inside (blocking)."""
    with path.open("rb") as raw:
        if raw.read(2) != GZIP_MAGIC:
            raise BackupError(f"{path.name} is not gzip-compressed")
    try:
        with gzip.open(path, "rb") as stream:
            return read_archive(stream)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise BackupError(f"{path.name} is not a readable gzip stream: {exc}") from exc


def verified_backup(path: Path, database: str) -> ArchiveSummary:
    """``inspect_backup``, then ``BackupError`` unless it is a complete backup of ``database``."""
    summary = inspect_backup(path)
    if problems := summary.problems(database):
        raise BackupError(f"{path.name}: {'; '.join(problems)}")
    return summary
