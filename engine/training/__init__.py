"""Training: the demo corpus, datasets, losses and the training loops."""
