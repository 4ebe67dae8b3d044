"""Stage 5, evaluate: retrieval metrics of saved embeddings (precision@k, R-precision,
MAP@R, triplet precision) and the raw-pixel baseline; no network, no images."""
