"""The Discord front end (discord.py 2.x). It never imports torch: the GPU work happens in worker
processes that meet the bot only in the database and the storage.

- `main.py`: `JukeBot` (cogs, dynamic buttons, job watcher, scheduler) and `run_bot` (`jukebot bot`).
- `cogs/`: one extension per feature — `generate`, `continue_`, `info` (/queue /song /top /me /help),
  `mod` (/mod ...), `daily` (wiring), and the lyrics feature's `lyrics`.
- `views/`: the UI — `buttons.py` (DynamicItem buttons whose custom ids carry the ids, so they work
  after a restart) and the lyrics feature's `lyrics.py`.
- `studio.py`: what happens on Discord for a song, called by cogs, buttons and the watcher.
- `watcher.py`: reads the jobs table every few seconds and reacts (progress, drafts, votes, clips).
- Logic without Discord: `songs.py` (requests, quotas, the guild cap, cancel, retry), `voting.py`,
  `status.py` (the status message text), `config.py` (per-guild settings), `labels.py` (artist and
  genre names), `uploads.py`, `media.py` (files under the upload limit), `daily.py`, `errors.py`.
"""
