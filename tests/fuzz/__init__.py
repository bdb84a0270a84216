"""Fuzz and fault suite: hostile requests to every /sdapi/v1 route, a watcher on the file system."""
