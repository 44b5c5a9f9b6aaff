"""Everything that talks to the Hugging Face Hub: opening sources (Hub ids, local shards) and, later, publishing."""

from mmsieve.hub.sources import SourceError, open_source, with_encoded_images


__all__ = ["SourceError", "open_source", "with_encoded_images"]
