"""Accounts against a real server process over loopback, through ``boxfs.remote``."""

from __future__ import annotations

import pytest
import trio

from boxfs.remote import Remote
from store import protocol
from tests.integration.server_process import ServerProcess

PASSWORD = "correct horse battery"  # noqa: S105  (a test account)


def test_register_login_whoami_logout_cycle(server_process: ServerProcess) -> None:
    async def main() -> None:
        async with Remote(server_process.url) as remote:
            account = await remote.register("alice", "alice@example.com", PASSWORD)
            assert account.username == "alice"
            login = await remote.login("alice", PASSWORD, "laptop")
            assert len(login.token) >= 43
            me = await remote.whoami()
            assert (me.username, me.device_name) == ("alice", "laptop")
            home = await remote.home()
            assert home.role == "owner"
            assert home.head is None
            token = remote.token
            await remote.logout()
            remote.token = token
            with pytest.raises(protocol.UnauthorizedError):
                await remote.whoami()

    trio.run(main)


def test_a_revoked_device_loses_access_and_its_event_stream(server_process: ServerProcess) -> None:
    async def main() -> None:
        async with Remote(server_process.url) as laptop, Remote(server_process.url) as phone:
            await laptop.register("bob", "bob@example.com", PASSWORD)
            await laptop.login("bob", PASSWORD, "laptop")
            phone_login = await phone.login("bob", PASSWORD, "phone")
            ended = trio.Event()

            async def listen() -> None:
                async for _event in phone.events():
                    pass
                ended.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(listen)
                await trio.sleep(0.3)
                await laptop.revoke_session(phone_login.session_id)
                with trio.fail_after(5):
                    await ended.wait()
            with pytest.raises(protocol.UnauthorizedError):
                await phone.whoami()
            sessions = await laptop.sessions()
            assert [s.device_name for s in sessions.sessions] == ["laptop"]

    trio.run(main)


def test_wrong_password_and_unknown_user_look_the_same(server_process: ServerProcess) -> None:
    async def main() -> None:
        async with Remote(server_process.url) as remote:
            await remote.register("carol", "carol@example.com", PASSWORD)
            replies = []
            for username in ("carol", "nobody"):
                with pytest.raises(protocol.UnauthorizedError) as caught:
                    await remote.login(username, "wrong password!", "laptop")
                replies.append((type(caught.value), str(caught.value)))
            assert replies[0] == replies[1]

    trio.run(main)
