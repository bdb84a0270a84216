"""Model files: discovery, A1111 hashes, metadata and architecture detection.

Also single-file load/save, safe unpickling and the model cache.
"""
