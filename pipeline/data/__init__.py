"""Stage 1, index: list a dataset source, decode every image once into a memory-mapped
pixel store with its Parquet index, and gather (and augment) batches from it."""
