"""Extending generation: LoRA, scripts, callbacks."""
