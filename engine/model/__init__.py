"""The Jukebox model: configs, labels, VQ-VAE, priors, transformer, checkpoint loading."""
