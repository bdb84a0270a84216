"""Model files: discovery, A1111 hashes, metadata, architecture detection, single-file load/save, safe unpickling, model cache."""
