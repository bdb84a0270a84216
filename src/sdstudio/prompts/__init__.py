"""The A1111 prompt language: parser, schedules, tokenizer, conditioning, embeddings, styles."""
