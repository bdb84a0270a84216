"""The A1111-compatible REST API and its job queue."""
