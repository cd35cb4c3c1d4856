"""Publishing: rendering for Discord/X/SoundCloud, the X and SoundCloud clients, and the publication
state machine that never posts twice. No discord and no torch in here; heavy modules are imported by
the caller from the submodules:

- `publisher.render`: `render_audio`, `render_x_video`, `waveform_png`, `spectrogram_png`, `probe_audio`,
  `check_x_video`, `RenderError` (synchronous: call through `asyncio.to_thread`).
- `publisher.scheduler`: `build_scheduler(settings, db, storage=, notify=)`, `schedule_clip(db, clip_id, …)`.
- `publisher.runner`: `run_due_publications(db, storage, settings, notify)`.
- `publisher.state`: the publication rows (`retry_failed`, `publications_for_clip`, …).
- `publisher.cli`: `jukebot publish auth x|soundcloud`, `status`, `run`, `retry`.
"""
