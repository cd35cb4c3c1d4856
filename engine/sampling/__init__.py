"""Sampling: the window schedule, the token loop, batching, exact resume, the song pipeline."""
