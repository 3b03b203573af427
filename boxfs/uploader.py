"""The uploader: drains one namespace's journal to the server, in order, in batches.

Owns the loop that turns journal entries into ``apply_ops`` requests. Each round:

1. Resend the batch in flight, if any (persisted with its key by an earlier round or an
   earlier process): the same key and the same bytes, after making sure the server holds
   every chunk its puts name. The server answers a key it has seen with its stored reply,
   so a batch whose reply was lost is applied exactly once.
2. Wait for work (``nudge``) and a short quiet period, so a burst of appends (an untar)
   becomes a few large batches instead of thousands of small ones. A full batch goes at
   once; a partial one waits while nudges keep coming (at most ``max_delay_s``).
3. Take up to ``batch_max_ops`` of the oldest pending entries. For each put of a file, cut
   and hash its staged file in a worker thread (``store.chunking.ChunkStream``: only the
   chunk list stays in memory), ask the server which chunks it lacks, re-read just those
   and upload their frames, a bounded group at a time, framing the next group while the
   previous one travels. Build the protocol ops, persist key and request
   (``Journal.assign_batch``), send, and ``Journal.complete`` with the reply.
4. After the reply, discard the staged files no entry names any more (``Staging.discard``);
   a put the server rejected keeps its content under ``rejected/`` first.

Failures never end ``run`` (S3QL lost a mount to one failing upload task: DESIGN.md §7).
An unreachable server (``protocol.UnavailableError``) marks the uploader offline; any other
failure is logged and reported in ``last_error``; both are retried with exponential backoff
(``boxfs.backoff.Backoff``: ``backoff_min_s`` doubling to ``backoff_max_s``, at least a
rate-limited reply's Retry-After) from the journal, so nothing is lost or
reordered. An entry that can never be sent (an op the protocol refuses to build; or its
staged file vanished, which is a bug: the home lock keeps a second mount from sweeping it)
leaves the queue with a record, not retried forever: a vanished file's put is recorded as
``lost``, which ``boxfs status`` lists and ``boxfs sync`` reports as a failure.

Who calls it: the mount starts one ``run`` per namespace in its root nursery; the
filesystem calls ``nudge`` (on the trio loop) after each append; ``boxfs sync`` and
unmount await ``wait_idle``; ``boxfs status`` reads ``progress``; the syncer subscribes to
``answers`` (``boxfs.upload_relay``), which the uploader tells of each answered batch.
Blocking work (SQLite, reading, hashing and compressing staged files) goes through
``boxfs.threads.run_in_thread`` with the ``limiter`` the mount passes in.

Must not: reorder entries, hold a whole file in memory, or know about FUSE.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, Final

import blake3
import pydantic
import trio

from boxfs.backoff import Backoff
from boxfs.chunk_sender import groups_of, send_framed
from boxfs.errors import leaf_exceptions
from boxfs.journal import InFlightBatch, Journal, JournalEntry, JournalOp, StagedPut
from boxfs.remote import Remote
from boxfs.staging import FileTooLargeError, StagedFileMissingError, Staging, StagingError
from boxfs.threads import run_in_thread
from boxfs.upload_relay import UploadRelay
from store import protocol
from store.chunking import CHUNK_MIN_BYTES, ChunkStream
from store.errors import FormatError, NotFoundError, StoreError
from store.frames import encode_frame
from store.ids import ChunkId, ContentHash, NamespaceId
from store.objects import MAX_FILE_BYTES, ChunkRef, EntryKind
from store.ops import Delete, Move, path_of

_log = logging.getLogger(__name__)

# A batch stops taking entries once its JSON would pass this estimate (the protocol allows
# MAX_JSON_BODY_BYTES; one huge file alone may still need more than this).
BATCH_BODY_BUDGET_BYTES: Final = 32 * 1024 * 1024
# One thread call scans staged files until it has read this much (or a single bigger file).
SCAN_CALL_BYTES: Final = 64 * 1024 * 1024
_JSON_BYTES_PER_OP: Final = 512
_JSON_BYTES_PER_CHUNK: Final = 110
# Codes of the rejections the uploader records itself (never sent to the server).
STAGED_MISSING_CODE: Final = "staged_missing"
INVALID_OP_CODE: Final = "invalid_op"
TOO_LARGE_CODE: Final = "file_too_large"
LOGGED_OUT_ERROR: Final = "logged out: run boxfs login"


@dataclass(frozen=True, slots=True)
class UploadProgress:
    """A snapshot for ``boxfs status`` and ``boxfs sync``.

    ``bytes_to_upload`` is the size of the staged files the journal still names (an upper
    bound: chunks the server holds already are not sent). ``last_sync_time`` is the wall
    time (``time.time()``) of the last batch the server confirmed. ``last_error`` is the
    last failure since then (cleared by a confirmed batch)."""

    pending_ops: int
    bytes_to_upload: int
    last_sync_time: float | None
    last_error: str | None
    online: bool
    bytes_sent: int  # frame bytes uploaded by this uploader since it started


@dataclass(frozen=True, slots=True)
class _ScannedFile:
    """A staged file as cut: its chunk list, and where each chunk starts in the file."""

    staged: str
    chunks: tuple[ChunkRef, ...]
    offsets: tuple[int, ...]
    content_hash: ContentHash
    size: int


@dataclass(frozen=True, slots=True)
class _ChunkJob:
    staged: str
    offset: int
    length: int
    chunk_id: ChunkId


class StagedFileChangedError(StagingError):
    """A staged file's bytes are not the chunk it was cut into moments ago: someone wrote
    to a frozen staged file (a bug). The round is retried from a fresh cut."""

    def __init__(self, name: str, offset: int) -> None:
        self.name = name
        self.offset = offset
        super().__init__(f"staged file {name} changed under the uploader (at offset {offset})")


def new_idempotency_key() -> str:
    """32 characters of base64url: the protocol's idempotency key alphabet."""
    return secrets.token_urlsafe(24)


# --- blocking work (worker threads) --------------------------------------------------------


def _scan(staging: Staging, name: str) -> _ScannedFile:
    """Cut and hash a staged file, keeping only the chunk list."""
    with staging.open_read(name) as stream:
        data = stream.read(CHUNK_MIN_BYTES)
        if len(data) < CHUNK_MIN_BYTES:
            # The format's rule, without the chunker's set-up cost: a file under the
            # minimum is one chunk (none if empty), and its content hash is that chunk's id.
            digest = blake3.blake3(data).digest()
            chunks = (ChunkRef(ChunkId(digest), len(data)),) if data else ()
            return _ScannedFile(name, chunks, (0,) if data else (), ContentHash(digest), len(data))
        stream.seek(0)
        pieces = ChunkStream(stream)
        refs: list[ChunkRef] = []
        offsets: list[int] = []
        for piece in pieces:
            if piece.offset + piece.length > MAX_FILE_BYTES:
                raise FileTooLargeError(piece.offset + piece.length)
            refs.append(ChunkRef(piece.chunk_id, piece.length))
            offsets.append(piece.offset)
        return _ScannedFile(name, tuple(refs), tuple(offsets), pieces.content_hash, pieces.size)


def _scan_many(
    staging: Staging, names: Sequence[str]
) -> list[_ScannedFile | StagedFileMissingError | FileTooLargeError]:
    """Scan a prefix of ``names`` (at least one, then until ``SCAN_CALL_BYTES`` are read),
    so many small files cost one thread hop and a big one does not hold up the loop."""
    results: list[_ScannedFile | StagedFileMissingError | FileTooLargeError] = []
    scanned_bytes = 0
    for name in names:
        if results and scanned_bytes >= SCAN_CALL_BYTES:
            break
        try:
            scanned = _scan(staging, name)
        except (StagedFileMissingError, FileTooLargeError) as exc:
            results.append(exc)
            continue
        results.append(scanned)
        scanned_bytes += scanned.size
    return results


def _frame_group(staging: Staging, jobs: Sequence[_ChunkJob]) -> list[tuple[ChunkId, bytes]]:
    """Re-read the chunks of ``jobs`` from their staged files, check them, frame them."""
    frames: list[tuple[ChunkId, bytes]] = []
    streams: dict[str, BinaryIO] = {}
    try:
        for job in jobs:
            stream = streams.get(job.staged)
            if stream is None:
                stream = streams[job.staged] = staging.open_read(job.staged)
            stream.seek(job.offset)
            data = stream.read(job.length)
            if len(data) != job.length or blake3.blake3(data).digest() != job.chunk_id:
                raise StagedFileChangedError(job.staged, job.offset)
            frames.append((job.chunk_id, encode_frame(data)))
    finally:
        for stream in streams.values():
            stream.close()
    return frames


def _staged_bytes(journal: Journal, staging: Staging, namespace_id: NamespaceId) -> int:
    total = 0
    for name in journal.staged_names(namespace_id):
        try:
            total += staging.size_of(name)
        except StagedFileMissingError:
            continue  # reported (and dropped) when its turn comes
    return total


def _jobs_for(
    files: Sequence[_ScannedFile], missing: set[ChunkId], wanted: set[ChunkId] | None = None
) -> list[_ChunkJob]:
    """One job per missing chunk (its first occurrence), in file order."""
    jobs: list[_ChunkJob] = []
    taken: set[ChunkId] = set()
    for scanned in files:
        for ref, offset in zip(scanned.chunks, scanned.offsets, strict=True):
            if ref.chunk_id in missing and ref.chunk_id not in taken:
                if wanted is not None and ref.chunk_id not in wanted:
                    continue
                taken.add(ref.chunk_id)
                jobs.append(_ChunkJob(scanned.staged, offset, ref.length, ref.chunk_id))
    return jobs


# --- building ops --------------------------------------------------------------------------


def build_op(
    op: JournalOp, scanned: _ScannedFile | None, base: ContentHash | None
) -> protocol.WireOp:
    """The wire op for a journal op (``scanned``: the cut staged file of a file put;
    ``base``: the resolved base of a put or delete, or what a move replaces). Raises
    ``FormatError`` or pydantic's ``ValidationError`` for an op the protocol refuses."""
    match op:
        case StagedPut():
            if op.kind is EntryKind.FILE:
                assert scanned is not None
                put = op.put(scanned.chunks, scanned.size, scanned.content_hash, base)
            else:
                put = op.put(base=base)
            return protocol.op_to_wire(put)
        case Delete():
            return protocol.op_to_wire(Delete(op.path, base))
        case Move():
            return protocol.op_to_wire(Move(op.src, op.dst, base))
        case _:
            return protocol.op_to_wire(op)


def _is_file_put(entry: JournalEntry) -> bool:
    return isinstance(entry.op, StagedPut) and entry.op.kind is EntryKind.FILE


@dataclass
class _Built:
    """A batch being built: the entries it carries, their ops, and the files cut."""

    entries: list[JournalEntry]
    ops: list[protocol.WireOp]
    files: list[_ScannedFile]
    content_hashes: dict[int, ContentHash]
    body_estimate: int = 0


# --- the uploader --------------------------------------------------------------------------


class Uploader:
    def __init__(
        self,
        journal: Journal,
        staging: Staging,
        remote: Remote,
        namespace_id: NamespaceId,
        limiter: trio.CapacityLimiter,
        *,
        batch_max_ops: int = protocol.MAX_OPS_PER_BATCH,
        quiet_s: float = 0.05,  # short: it is added to every change's trip to other devices
        max_delay_s: float = 2.0,
        backoff_min_s: float = 0.2,
        backoff_max_s: float = 10.0,
    ) -> None:
        if not 1 <= batch_max_ops <= protocol.MAX_OPS_PER_BATCH:
            raise ValueError(f"batch_max_ops must be in 1..{protocol.MAX_OPS_PER_BATCH}")
        self.journal = journal
        self.staging = staging
        self.remote = remote
        self.namespace_id = namespace_id
        self.limiter = limiter
        self.batch_max_ops = batch_max_ops
        self.quiet_s = quiet_s
        self.max_delay_s = max(max_delay_s, quiet_s)
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = max(backoff_max_s, backoff_min_s)
        self._work = trio.Event()
        self._nudges = 0
        self._settled_nudges = 0  # the nudge count when the writes last settled
        self._changed = trio.Event()  # set (and replaced) whenever entries leave the journal
        self._online = True
        self._last_error: str | None = None
        self._last_sync_time: float | None = None
        self._bytes_sent = 0
        # Told of each answered batch (its reply's head before the entries leave the
        # journal, then that they left): the syncer subscribes when it is built.
        self._answers = UploadRelay()

    # --- the public face -----------------------------------------------------------------------

    def nudge(self) -> None:
        """New entries were appended: upload them after the quiet period. Call on the loop."""
        self._nudges += 1
        self._work.set()

    async def wait_idle(self) -> None:
        """Return once the journal holds nothing for this namespace (pending or in flight).
        Waits as long as it takes (the server may be down): bound it with a trio timeout.
        Needs ``run`` going in some task."""
        while True:
            changed = self._changed  # taken before the count, so no change is missed
            if await run_in_thread(self.limiter, self.journal.count, self.namespace_id) == 0:
                return
            self._work.set()  # wake an idle uploader (not new work: no quiet period)
            await changed.wait()

    async def progress(self) -> UploadProgress:
        pending_ops = await run_in_thread(self.limiter, self.journal.count, self.namespace_id)
        to_upload = await run_in_thread(
            self.limiter, _staged_bytes, self.journal, self.staging, self.namespace_id
        )
        return UploadProgress(
            pending_ops=pending_ops,
            bytes_to_upload=to_upload,
            last_sync_time=self._last_sync_time,
            last_error=self._last_error,
            online=self._online,
            bytes_sent=self._bytes_sent,
        )

    @property
    def answers(self) -> UploadRelay:
        """Where the answered batches are told (``UploadListener`` calls, on the loop):
        subscribe to it."""
        return self._answers

    @property
    def online(self) -> bool:
        return self._online

    @property
    def last_error(self) -> str | None:
        return self._last_error

    async def run(self) -> None:
        """Upload until cancelled. Starts with whatever the journal holds (an earlier
        mount's work); never returns otherwise, whatever fails."""
        backoff = Backoff(self.backoff_min_s, self.backoff_max_s)
        while True:
            try:
                await self._drain()
            except Exception as exc:  # noqa: BLE001  (the loop must outlive any failure)
                refusal = self._refusal(exc)
                if refusal is not None:
                    await self._give_up(refusal)
                    continue
                delay_s = backoff.next_delay_s(self._after_failure(exc, backoff.delay_s))
            else:
                backoff.reset()
                await self._wait_for_work()
                continue
            await trio.sleep(delay_s)

    # --- states --------------------------------------------------------------------------------

    def _after_failure(self, exc: Exception, delay_s: float) -> float:
        """Report a failed round (``delay_s``: the backoff's next delay); the least delay
        before the next one (the server's Retry-After, else ``delay_s``)."""
        # A failure inside a nursery (the upload pipeline) arrives wrapped in a group.
        leaves = leaf_exceptions(exc)
        unavailable = next((e for e in leaves if isinstance(e, protocol.UnavailableError)), None)
        if unavailable is not None:
            if self._online:
                _log.warning("server unreachable, uploads wait in the journal: %s", unavailable)
            self._online = False
            self._last_error = f"offline: {unavailable.message}"
            return delay_s
        leaf = leaves[0]
        if isinstance(leaf, protocol.UnauthorizedError):
            if self._last_error != LOGGED_OUT_ERROR:
                _log.warning("the server refused this device's session (%s): uploads wait "
                             "in the journal until `boxfs login`", leaf.message)  # fmt: skip
            self._last_error = LOGGED_OUT_ERROR
            return delay_s
        self._last_error = f"{type(leaf).__name__}: {leaf}"
        if isinstance(leaf, protocol.RateLimitedError):
            _log.warning("the server asks to slow down: %s", leaf.message)
            return leaf.retry_after_s or delay_s
        _log.error("upload round failed; retrying in %.1f s", delay_s, exc_info=exc)
        return delay_s

    def _refusal(self, exc: Exception) -> StoreError | None:
        """The server's refusal of every write to this namespace, if ``exc`` is one: this
        user was removed from the shared folder or left it (``not_found`` for the
        namespace), or is a viewer now (``forbidden``)."""
        for leaf in leaf_exceptions(exc):
            if isinstance(leaf, protocol.ForbiddenError):
                return leaf
            if (
                isinstance(leaf, NotFoundError)
                and leaf.what == "namespace"
                and leaf.name == self.namespace_id.hex()
            ):
                return leaf
        return None

    async def _give_up(self, refusal: StoreError) -> None:
        """Every entry of this namespace leaves the journal as rejected, a put's content
        kept under ``rejected/`` (``boxfs status`` lists them): the server will never take
        them, and retrying forever would hold the journal and the unmount."""
        _, body = protocol.body_for(refusal)
        message = f"the server refuses changes here: {body.message}"
        left = 0
        for batch in await run_in_thread(
            self.limiter, self.journal.batches_in_flight, self.namespace_id
        ):
            request = protocol.OpsBatch.model_validate_json(batch.body)
            results = tuple(
                protocol.OpResult(
                    status="rejected",
                    path=path_of(protocol.op_from_wire(op)),
                    code=body.code,
                    message=message[: protocol.MAX_OP_MESSAGE_CHARS],
                )
                for op in request.ops
            )
            copies: dict[int, str] = {}
            for entry in batch.entries:
                op = entry.op
                if isinstance(op, StagedPut) and op.staged is not None:
                    try:
                        kept = await run_in_thread(self.limiter, self.staging.preserve, op.staged)
                    except StagedFileMissingError:
                        continue
                    copies[entry.seq] = str(kept)
            unreferenced = await run_in_thread(
                self.limiter, self.journal.complete, batch.key, results, local_copies=copies
            )
            await self._discard(unreferenced)
            left += len(batch.entries)
        while entries := await run_in_thread(
            self.limiter, self.journal.pending, self.namespace_id, self.batch_max_ops
        ):
            for entry in entries:
                await self._reject(entry, body.code, message, preserve=True)
            left += len(entries)
        _log.warning(
            "the server refuses this device's changes to %s (%s): %d left the journal, "
            "the content of files kept under rejected/",
            self.namespace_id, body.message, left,
        )  # fmt: skip
        self._last_error = message
        self._entries_left()
        self._answers.batch_done()

    def _reached_server(self) -> None:
        if not self._online:
            _log.info("server reachable again, uploading")
        self._online = True

    def _entries_left(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_for_work(self) -> None:
        """Until something is nudged or woken, then until the writes settle."""
        await self._work.wait()
        self._work = trio.Event()
        await self._settle()

    async def _settle(self) -> None:
        """Until no nudge came for ``quiet_s``, at most ``max_delay_s``, or until a whole
        batch worth of nudges arrived: a burst of writes becomes a few full batches."""
        start_nudges = self._nudges
        with trio.move_on_after(self.max_delay_s):
            while self._nudges - start_nudges < self.batch_max_ops:
                seen = self._nudges
                await trio.sleep(self.quiet_s)
                if self._nudges == seen:
                    break
        self._settled_nudges = self._nudges

    # --- one round -------------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Resend what is in flight, then send pending entries until none is left."""
        for batch in await run_in_thread(
            self.limiter, self.journal.batches_in_flight, self.namespace_id
        ):
            await self._resend(batch)
        while True:
            entries = await run_in_thread(
                self.limiter, self.journal.pending, self.namespace_id, self.batch_max_ops
            )
            if not entries:
                return
            if len(entries) < self.batch_max_ops and self._nudges != self._settled_nudges:
                # Writes arrived while the last batch travelled: the burst may not be over,
                # so a partial batch waits for it to settle (a full one goes at once).
                await self._settle()
                continue
            await self._send_new(entries)

    async def _send_new(self, entries: list[JournalEntry]) -> None:
        built = await self._build(entries)
        if not built.ops:
            return  # every entry was dropped (recorded); the next round takes the rest
        await self._upload_missing(built.files)
        key = new_idempotency_key()
        batch = protocol.OpsBatch(idempotency_key=key, ops=tuple(built.ops))
        body = batch.model_dump_json().encode()
        seqs = [entry.seq for entry in built.entries]
        await run_in_thread(
            self.limiter, self.journal.assign_batch, self.namespace_id, seqs, key, body,
            built.content_hashes,
        )  # fmt: skip
        reply = await self.remote.apply_ops(self.namespace_id, batch)
        self._reached_server()
        await self._finish(key, built.entries, reply)

    async def _resend(self, batch: InFlightBatch) -> None:
        """Send a persisted batch again, as it was, once its chunks are on the server."""
        request = protocol.OpsBatch.model_validate_json(batch.body)
        if len(request.ops) != len(batch.entries):
            raise FormatError(f"batch {batch.key}: {len(request.ops)} ops for "
                              f"{len(batch.entries)} entries")  # fmt: skip
        needed: dict[ChunkId, None] = {}
        for op in request.ops:
            if isinstance(op, protocol.PutOp):
                needed.update((ref.chunk_id, None) for ref in op.entry.chunks)
        missing = set(await self.remote.missing_chunks(self.namespace_id, list(needed)))
        self._reached_server()
        if missing:
            files: list[_ScannedFile] = []
            for entry, op in zip(batch.entries, request.ops, strict=True):
                if not (_is_file_put(entry) and isinstance(op, protocol.PutOp)):
                    continue
                assert isinstance(entry.op, StagedPut) and entry.op.staged is not None
                sent = tuple(ChunkRef(ref.chunk_id, ref.length) for ref in op.entry.chunks)
                if not missing & {ref.chunk_id for ref in sent}:
                    continue
                scanned = await self._scan_for_resend(entry.op.staged)
                if scanned is not None and scanned.chunks == sent:
                    files.append(scanned)
                else:
                    _log.error(
                        "batch %s: the staged file of %r no longer holds what was sent;"
                        " the server will refuse that put",
                        batch.key,
                        bytes(entry.op.path),
                    )
            await self._upload_missing(files, missing)
        reply = await self.remote.apply_ops(self.namespace_id, request)
        self._reached_server()
        await self._finish(batch.key, list(batch.entries), reply)

    async def _scan_for_resend(self, name: str) -> _ScannedFile | None:
        try:
            return await run_in_thread(self.limiter, _scan, self.staging, name)
        except (StagedFileMissingError, FileTooLargeError):
            return None

    async def _build(self, entries: list[JournalEntry]) -> _Built:
        """Cut the staged files and build the ops for a prefix of ``entries``; entries that
        can never be sent are dropped (recorded) on the way."""
        built = _Built(entries=[], ops=[], files=[], content_hashes={})
        base_seqs = [entry.base_seq for entry in entries if entry.base_seq is not None]
        known = (
            await run_in_thread(self.limiter, self.journal.put_hashes, base_seqs)
            if base_seqs
            else {}
        )
        to_scan: deque[str] = deque(
            entry.op.staged
            for entry in entries
            if isinstance(entry.op, StagedPut) and _is_file_put(entry) and entry.op.staged
        )
        scans: deque[_ScannedFile | StagedFileMissingError | FileTooLargeError] = deque()
        for entry in entries:
            if built.ops and built.body_estimate > BATCH_BODY_BUDGET_BYTES:
                break
            scanned: _ScannedFile | None = None
            if _is_file_put(entry):
                if not scans:
                    scans.extend(
                        await run_in_thread(self.limiter, _scan_many, self.staging, list(to_scan))
                    )
                to_scan.popleft()
                outcome = scans.popleft()
                if isinstance(outcome, StagedFileMissingError):
                    # Never silent: `boxfs status` lists it and `boxfs sync` fails naming it.
                    _log.error("journal entry %d: %s; its put is lost", entry.seq, outcome)
                    await self._reject(entry, STAGED_MISSING_CODE, str(outcome), lost=True)
                    continue
                if isinstance(outcome, FileTooLargeError):
                    await self._reject(entry, TOO_LARGE_CODE, str(outcome), preserve=True)
                    continue
                scanned = outcome
            base: ContentHash | None = None
            if isinstance(entry.op, StagedPut | Delete | Move):
                base = entry.op.replaces if isinstance(entry.op, Move) else entry.op.base
                if entry.base_seq is not None:
                    base = built.content_hashes.get(entry.base_seq, known.get(entry.base_seq, base))
            try:
                op = build_op(entry.op, scanned, base)
            except (FormatError, pydantic.ValidationError) as exc:
                _log.error("journal entry %d cannot be sent: %s", entry.seq, exc)
                await self._reject(entry, INVALID_OP_CODE, str(exc), preserve=True)
                continue
            built.entries.append(entry)
            built.ops.append(op)
            built.body_estimate += _JSON_BYTES_PER_OP
            if scanned is not None:
                built.files.append(scanned)
                built.content_hashes[entry.seq] = scanned.content_hash
                built.body_estimate += _JSON_BYTES_PER_CHUNK * len(scanned.chunks)
        return built

    async def _reject(
        self,
        entry: JournalEntry,
        code: str,
        message: str,
        *,
        preserve: bool = False,
        lost: bool = False,
    ) -> None:
        local_copy: str | None = None
        op = entry.op
        if preserve and isinstance(op, StagedPut) and op.staged is not None:
            local_copy = str(await run_in_thread(self.limiter, self.staging.preserve, op.staged))
        unreferenced = await run_in_thread(
            self.limiter, self.journal.reject, entry.seq, code,
            message[: protocol.MAX_OP_MESSAGE_CHARS], local_copy=local_copy, lost=lost,
        )  # fmt: skip
        await self._discard(unreferenced)
        self._entries_left()

    async def _upload_missing(
        self, files: Sequence[_ScannedFile], missing: set[ChunkId] | None = None
    ) -> None:
        """Upload the chunks of ``files`` the server lacks (asking it, unless ``missing``
        is given), framing one group in a thread while the previous one travels."""
        if not files:
            return
        if missing is None:
            ids = list(dict.fromkeys(ref.chunk_id for f in files for ref in f.chunks))
            missing = set(await self.remote.missing_chunks(self.namespace_id, ids))
            self._reached_server()
        groups = groups_of(_jobs_for(files, missing), lambda job: job.length)

        def sent(frame_bytes: int) -> None:
            self._reached_server()
            self._bytes_sent += frame_bytes

        await send_framed(
            self.remote, self.namespace_id, self.limiter, groups,
            frame=functools.partial(_frame_group, self.staging), on_sent=sent,
        )  # fmt: skip

    async def _finish(
        self, key: str, entries: list[JournalEntry], reply: protocol.OpsBatchResponse
    ) -> None:
        """Record the server's reply: keep rejected puts' content, complete the batch,
        discard the staged files nothing names any more."""
        if len(reply.results) != len(entries):
            raise protocol.InternalError(
                f"batch {key}: {len(reply.results)} results for {len(entries)} ops"
            )
        self._answers.confirmed(reply.head, reply.sequence)
        local_copies: dict[int, str] = {}
        for entry, result in zip(entries, reply.results, strict=True):
            op = entry.op
            if result.status != "rejected" or not isinstance(op, StagedPut) or not op.staged:
                continue
            _log.warning(
                "the server refused the put of %r (%s: %s); its content is kept",
                bytes(op.path), result.code, result.message,
            )  # fmt: skip
            try:
                local_copies[entry.seq] = str(
                    await run_in_thread(self.limiter, self.staging.preserve, op.staged)
                )
            except StagedFileMissingError:
                _log.error("journal entry %d: staged file %s is gone", entry.seq, op.staged)
        unreferenced = await run_in_thread(
            self.limiter, self.journal.complete, key, reply.results, local_copies=local_copies
        )
        await self._discard(unreferenced)
        self._last_sync_time = time.time()
        self._last_error = None
        self._entries_left()
        self._answers.batch_done()

    async def _discard(self, names: list[str]) -> None:
        if names:
            await run_in_thread(self.limiter, _discard_all, self.staging, names)


def _discard_all(staging: Staging, names: Sequence[str]) -> None:
    for name in names:
        staging.discard(name)
