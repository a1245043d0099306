"""The split study: how well each smoothing separates shape from material, per image size."""
