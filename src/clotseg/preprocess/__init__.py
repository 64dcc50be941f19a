"""Pre-processing: NCCT→CTA registration, resampling, ROI cropping, and their inverses.

* :mod:`~clotseg.preprocess.register` — rigid registration driven by bone and head
  outline, with an alignment check.
* :mod:`~clotseg.preprocess.resample` — resampling onto a grid or a spacing.
* :mod:`~clotseg.preprocess.roi` — the Circle-of-Willis box, exact crop and uncrop.
* :mod:`~clotseg.preprocess.pipeline` — one case or a whole dataset, and the mapping of a
  prediction back onto the original CTA grid.

Submodules are imported on use (SimpleITK is loaded only when needed).
"""
