"""Training: datasets, the bundled tiny model, LoRA training."""
