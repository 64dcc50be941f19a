"""Pre-processing: NCCT→CTA registration, resampling, ROI cropping, and their inverses."""
