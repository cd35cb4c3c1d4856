"""The engine's command line, one module per verb (`jukebot generate`, `worker`, `train`, `corpus`).
torch is imported inside the commands only: `jukebot --help` and the bot stay torch-free."""
