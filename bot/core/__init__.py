"""What every feature of the bot shares: the client (`JukeBot`), replies and button plumbing,
posting with size limits and fallback channels, the per-song locks, the watcher loop and the
attachments. Nothing here imports a feature (see the import contract in pyproject.toml)."""
