"""The Discord front end (discord.py 2.x). It never imports torch: the GPU work happens in worker
processes that meet the bot only in the database and the storage.

- `main.py`: `run_bot` (`jukebot bot`): migrate, start a local worker on SQLite, serve.
- `core/`: what the features share — `bot.py` (`JukeBot`, the client every handler gets as
  `Interaction[JukeBot]`; it loads the features by name), `buttons.py` (the DynamicItem plumbing:
  custom ids carry the ids, so buttons work after a restart), `posting.py` (upload limits,
  fallback channels, moderators' notes), `watcher.py` (the loop), `locks.py`, `media.py`, `access.py`
  (ids a member typed resolve only in their server).
- `features/`: one package per feature, each with its cog, its buttons (registered in its
  `setup`) and its logic (plain functions over a `Database`, run in threads): `status` (the status
  message, Cancel), `voting` (drafts post, vote and close), `requests` (`/generate`, quotas, the
  guild cap), `continuations` (`/continue`, the menu, Continue, uploads), `clips` (clip post, clip
  vote, Publish, the daily clip), `moderation` (`/mod`), `info` (/queue /song /top /me /help),
  `lyrics` (`/lyrics draft`), and `pipeline` (what the watcher does each tick).
- `daily.py`: the daily clip's scheduled entry point, kept at its path for the job store.
- Shared without Discord: `config.py` (per-guild settings), `labels.py` (artist and genre names),
  `errors.py`, `permissions.py`, `ratelimit.py`, `worker_process.py`.

The import contracts in pyproject.toml keep this a tree: features over core, no circles.
"""
