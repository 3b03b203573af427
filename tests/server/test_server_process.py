"""The server as a process: first start, health, OpenAPI, clean shutdown, key rotation."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from server import keys
from server.cli import main as server_main
from server.settings import Settings
from server.state import ServerState
from store import protocol
from store.crypto import MasterKey
from store.frames import encode_frame
from store.ids import ChunkId, chunk_id_of
from tests.integration.server_process import ServerProcess, server_command


def test_first_start_creates_data_dir_and_owner_only_master_key(
    server_process: ServerProcess,
) -> None:
    key = server_process.data_dir / "master.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(server_process.data_dir.stat().st_mode) == 0o700
    health = httpx.get(f"{server_process.url}/healthz").json()
    assert health["status"] == "ok"
    assert health["protocol_version"] == protocol.PROTOCOL_VERSION


def test_openapi_document_lists_every_protocol_route(server_process: ServerProcess) -> None:
    document = httpx.get(f"{server_process.url}/openapi.json").json()
    for route in protocol.ROUTES:
        assert route.plain_template in document["paths"], route.name
        assert route.method.lower() in document["paths"][route.plain_template], route.name


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    assert server.stop() == 0
    assert "Application shutdown complete" in server.log_tail()


def test_request_without_protocol_header_gets_a_clear_error(server_process: ServerProcess) -> None:
    reply = httpx.get(f"{server_process.url}{protocol.NAMESPACES.template}")
    assert reply.status_code == 400
    assert reply.json()["code"] == "unsupported_protocol"


def test_unknown_route_is_a_json_error(server_process: ServerProcess) -> None:
    reply = httpx.get(f"{server_process.url}/v1/nothing-here", headers=protocol.request_headers())
    assert reply.status_code == 404
    assert set(reply.json()) == {"code", "message", "detail"}


def test_oversized_body_is_refused_before_it_is_read(server_process: ServerProcess) -> None:
    # A raw request: no HTTP client lets a body fall short of its Content-Length.
    request = (
        f"POST {protocol.REGISTER.template} HTTP/1.1\r\nHost: x\r\n"
        f"{protocol.PROTOCOL_HEADER}: {protocol.PROTOCOL_VERSION}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {2**40}\r\n\r\n{{}}"
    ).encode()
    with socket.create_connection(("127.0.0.1", server_process.port), timeout=10) as conn:
        conn.sendall(request)
        reply = ""
        while "\r\n\r\n" not in reply or not reply.rstrip().endswith("}"):
            piece = conn.recv(65536).decode()
            if not piece:
                break
            reply += piece
    status_line, _, rest = reply.partition("\r\n")
    assert " 413 " in status_line
    assert '"code":"body_too_large"' in rest.replace(" ", "")


def test_bad_listen_address_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert server_main(["--data", "/tmp/unused-boxfs", "--listen", "nonsense"]) == 2
    assert "--listen must be HOST:PORT" in capsys.readouterr().err


def _seal_one(settings: Settings) -> tuple[ChunkId, bytes]:
    state = ServerState.open(settings)
    try:
        data = b"sealed before the rotation"
        chunk_id = chunk_id_of(data)
        sealed = state.keyring.seal(chunk_id, encode_frame(data))
        return chunk_id, sealed
    finally:
        state.db.close()


def test_rotate_key_keeps_sealed_chunks_readable(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    chunk_id, sealed = _seal_one(settings)
    old_key = settings.master_key_path.read_bytes()
    result = subprocess.run(
        [*server_command(), "rotate-key", "--data", str(settings.data_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "re-wrapped 1 data keys" in result.stdout
    assert settings.master_key_path.read_bytes() != old_key
    state = ServerState.open(settings)
    try:
        assert state.keyring.open(chunk_id, sealed) == encode_frame(b"sealed before the rotation")
    finally:
        state.db.close()


def test_rotation_interrupted_before_the_rename_is_finished_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    chunk_id, sealed = _seal_one(settings)
    old = MasterKey.load(settings.master_key_path)

    def crash(*_args: object) -> None:
        raise OSError("simulated crash before the rename")

    # A crash after the data keys were re-wrapped but before the new key file is renamed.
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", crash)
        with pytest.raises(OSError, match="simulated crash"):
            keys.rotate_master_key(settings)
    assert MasterKey.load(settings.master_key_path) == old
    state = ServerState.open(settings)
    try:
        assert state.keyring.open(chunk_id, sealed)
        assert MasterKey.load(settings.master_key_path) != old
        assert not settings.master_key_path.with_name("master.key.new").exists()
    finally:
        state.db.close()
