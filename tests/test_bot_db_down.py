"""The database goes away under a running bot: members get a plain answer (not a traceback, not
silence), the job watcher waits it out, and when the database is back nothing was lost: the song in
progress finishes and new requests work.

The outage is real at the network level: the bot reaches PostgreSQL through a TCP proxy on loopback
that the test cuts (open connections dropped, new ones refused) and restores. The worker (the real
`jukebot worker`, tiny model, CPU) and the test's own reads go to PostgreSQL directly."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from bot.errors import DB_DOWN
from db.models import SongStatus
from tests.bot_harness import Studio, make_studio, real_worker_overrides
from tests.fakes.discord import custom_ids
from tests.test_bot_e2e import song_id_from

pytest_plugins = ["tests.bot_fixtures"]
SONG = {"artist": "bach", "genre": "chorale", "seconds": 0.2, "drafts": 2}


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `cut()` drops every connection and refuses new ones."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.close()
        await self._server.wait_closed()
        self._server = None

    async def restore(self) -> None:
        await self.start()  # same port


@pytest.mark.postgres
async def test_database_outage(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path
) -> None:
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    async for studio in make_studio(postgres_url, tmp_path, monkeypatch, real_worker_overrides(tiny_model)):
        studio.bot_db_url = url.set(port=proxy.port).render_as_string(hide_password=False)
        await outage(studio, proxy)
    await proxy.cut()


async def outage(studio: Studio, proxy: TcpProxy) -> None:
    studio.start_real_worker()
    bot = await studio.start_bot()
    song_id = song_id_from((await studio.run("alice", "generate", SONG)).text())
    drafts = await studio.until(lambda: studio.message_with(f"jb:vote:{song_id}:"), "the drafts", timeout=90)
    votes = [c for c in custom_ids(drafts) if c.startswith("jb:vote:")]

    await proxy.cut()
    ix = await studio.run("bob", "generate", SONG)
    assert ix.text() == DB_DOWN and ix.is_ephemeral()
    ix = await studio.click("bob", drafts, votes[1])
    assert ix.text() == DB_DOWN
    ix = await studio.run("bob", "queue")
    assert ix.text() == DB_DOWN
    await studio.until(lambda: bot.watcher._db_down, "the watcher to notice", timeout=20)

    await proxy.restore()
    await studio.until(lambda: not bot.watcher._db_down, "the watcher to carry on", timeout=30)
    ix = await studio.click("bob", drafts, votes[1])
    assert "Your vote for draft 2 is in" in ix.text(), ix.text()
    again = await studio.run("bob", "generate", SONG)
    second = song_id_from(again.text())
    closing = await studio.click("alice", drafts, f"jb:close:{song_id}")
    await studio.fake.wait_for(lambda: closing.followups, 10, "the close")
    await studio.until_db(
        lambda: studio.song(song_id).status == SongStatus.done, "the first song to finish", timeout=90
    )
    await studio.until(
        lambda: studio.message_with(f"jb:vote:{second}:"), "the second song's drafts", timeout=90
    )
    assert [s.id for s in studio.songs()] == [song_id, second]  # nothing half-made during the outage
