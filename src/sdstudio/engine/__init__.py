"""Generation: request/result types, samplers, seeds, processing, previews, infotext, saving."""
