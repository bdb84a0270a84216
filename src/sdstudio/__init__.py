"""sdstudio: a local, offline-first Stable Diffusion studio."""

__version__ = "0.1.0"
