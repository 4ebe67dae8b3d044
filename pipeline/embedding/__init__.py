"""Stage 4, embed: every image's vector under one epoch's network, as Parquet shards."""
