"""Dataset sources: each module registers the sources it defines in :data:`SOURCES`
(importing this package imports them all), by the name ``[dataset] source`` uses."""

from pipeline.data.sources import (
    fashion_mnist,  # noqa: F401  (registers "embedded" and "fashion-mnist")
    image_folder,  # noqa: F401  (registers "image-folder")
    tiny_imagenet,  # noqa: F401  (registers "tiny-imagenet")
)
from pipeline.data.sources.base import SOURCES, ArraySource, FileSource, Source

__all__ = ["SOURCES", "ArraySource", "FileSource", "Source"]
