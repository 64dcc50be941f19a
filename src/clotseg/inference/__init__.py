"""Inference: batched 2.5D slice prediction, post-processing and the case predictor."""
