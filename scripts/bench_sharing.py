"""Cross-user figures of ``scripts/bench sync``: a change by one member of a shared folder
visible on another member's mount. Prints ``name value unit`` lines.

What runs: on the sync benchmark's server, two more accounts (alice, bob), one device each,
each mounted with ``python -m boxfs.mount``; alice makes a folder ``Team`` on her mount,
shares it with bob as editor through the protocol (``SHARE``, ``SET_MEMBER``), and bob
accepts it. Then N changes (200; ``--quick``: 30), after 3 untimed warm-ups, each a new
distinct small content bob writes to one file of ``Team`` on his mount (open/write/close);
alice's mount is polled (open, read, close, every ~2 ms) until it reads exactly that
content. ``sync.cross_user_change_to_visible_*`` is from just before bob's ``open`` to
alice's matching read. The bar (issue: sharing): p50 ≤ 300 ms and p99 ≤ 1 s on loopback,
the same as between two devices of one user (``sync.change_to_visible_*`` in the same run).

Called by ``scripts/bench_sync.py`` (``bench_cross_user``); every process it starts is
stopped by its own PID before it returns.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from store import protocol
from store.ids import NamespaceId
from tests.fuse.conftest import PASSWORD, Account, MountProcess, cli_ok
from tests.integration.server_process import ServerProcess

WARM_UP_CHANGES = 3


def _session(server: ServerProcess, username: str) -> httpx.Client:
    """A protocol session of ``username`` (a device of its own), for the sharing calls."""
    client = httpx.Client(base_url=server.url, timeout=30)
    body = {"username": username, "password": PASSWORD, "device_name": "bench"}
    reply = client.post(protocol.LOGIN.fill(), json=body, headers=protocol.request_headers())
    reply.raise_for_status()
    client.headers.update(protocol.request_headers(reply.json()["token"]))
    return client


def _share_team(server: ServerProcess) -> None:
    """alice shares her ``Team`` with bob as editor; bob accepts."""
    alice, bob = _session(server, "bench-alice"), _session(server, "bench-bob")
    try:
        listed = alice.get(protocol.NAMESPACES.fill()).json()["namespaces"]
        home = NamespaceId.from_hex(next(n["namespace_id"] for n in listed if n["home"]))
        reply = alice.post(protocol.SHARE.fill(namespace_id=home), json={"path": "Team"})
        reply.raise_for_status()
        team = NamespaceId.from_hex(reply.json()["namespace_id"])
        body = {"username": "bench-bob", "role": "editor"}
        alice.post(protocol.SET_MEMBER.fill(namespace_id=team), json=body).raise_for_status()
        invitations = bob.get(protocol.INVITATIONS.fill()).json()["invitations"]
        (invitation,) = invitations
        accept = protocol.ACCEPT_INVITATION.fill(invitation_id=invitation["invitation_id"])
        bob.post(accept, json={"path": None}).raise_for_status()
    finally:
        alice.close()
        bob.close()


def bench_cross_user(
    server: ServerProcess,
    scratch: Path,
    changes: int,
    *,
    one_change: Callable[[Path, Path, bytes], tuple[float, float, float] | None],
    wait_until: Callable[[Callable[[], bool], str], float],
    emit_latencies: Callable[[str, list[float]], None],
    emit: Callable[[str, float, str], None],
) -> None:
    mounts: list[MountProcess] = []
    try:
        for username in ("bench-alice", "bench-bob"):
            cli_ok(
                scratch / f"registrar-{username}", "register", "--server", server.url,
                username, "--email", f"{username}@example.com", "--password-stdin",
                stdin=f"{PASSWORD}\n",
            )  # fmt: skip
            home = Account(server, username).device_home(scratch / f"{username}-home", "laptop")
            mount = MountProcess(home, scratch / f"{username}-mnt", scratch / f"{username}.log")
            mounts.append(mount.start())
        alice, bob = mounts
        (alice.mountpoint / "Team").mkdir()
        (alice.mountpoint / "Team" / "seed.txt").write_text("seed\n")
        wait_until(lambda: _synced(alice.home), "alice's Team on the server")
        _share_team(server)
        on_bob, on_alice = bob.mountpoint / "Team", alice.mountpoint / "Team"
        wait_until((on_bob / "seed.txt").exists, "Team on bob's mount")
        total: list[float] = []
        missed = 0
        for index in range(-WARM_UP_CHANGES, changes):
            data = f"bob's change {index} {secrets.token_hex(8)}\n".encode()
            timed = one_change(on_bob / "changing.txt", on_alice / "changing.txt", data)
            if index < 0:
                if timed is None:
                    raise RuntimeError("cross-user: a warm-up change never reached alice")
                continue
            if timed is None:
                missed += 1
                continue
            start, _written, visible = timed
            total.append(visible - start)
        emit_latencies("sync.cross_user_change_to_visible", total)
        emit("sync.cross_user_change_missed", missed, "changes")
    finally:
        for mount in mounts:
            mount.stop()


def _synced(home: Path) -> bool:
    """Whether ``boxfs status`` of ``home`` says nothing is pending."""
    status = cli_ok(home, "status")
    return "pending: 0 operations" in status or " 0 pending" in status
