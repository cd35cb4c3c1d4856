"""Serving: the GPU worker that claims jobs from the queue."""
