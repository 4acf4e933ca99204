"""Data: sources (MovieLens, CSV logs, synthetic), encoding and splits.

The pipeline's first three stages, in order:
`load_interactions` -> `encode` -> `split_data`.
"""
from tfgan_rec.data.dataset import EncodedData, Interactions, encode
from tfgan_rec.data.sources import load_interactions
from tfgan_rec.data.splits import (PARTS, Examples, Split, SplitData,
                                   interaction_matrix, split_data)

__all__ = ["EncodedData", "Examples", "Interactions", "PARTS", "Split",
           "SplitData", "encode", "interaction_matrix", "load_interactions",
           "split_data"]
