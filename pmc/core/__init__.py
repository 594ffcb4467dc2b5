"""The bottom layer: the data model (records, errors) and the model utilities every method, benchmark and metric
suite shares (prompts, batching, losses, generation, ROUGE, model loading). Imports nothing above it
(docs/architecture.md)."""
