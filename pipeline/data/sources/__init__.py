"""Dataset sources: each lists (or loads) images and class names for indexing."""
