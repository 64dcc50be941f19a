"""Pre-processing: NCCT→CTA registration, resampling, ROI cropping, and their inverses.

* :mod:`~clotseg.preprocess.settings` — what preprocessing does (light: NumPy only).
* :mod:`~clotseg.preprocess.register` — rigid registration driven by bone and head
  outline; :mod:`~clotseg.preprocess.alignment` — the alignment check it runs.
* :mod:`~clotseg.preprocess.transforms` — transforms to and from JSON (the only place).
* :mod:`~clotseg.preprocess.resample` — resampling onto a grid or a spacing.
* :mod:`~clotseg.preprocess.roi` — the Circle-of-Willis box, exact crop and uncrop.
* :mod:`~clotseg.preprocess.ncct` — the NCCT on the CTA grid, once per alignment.
* :mod:`~clotseg.preprocess.record` — what was done to a case, and its inverse.
* :mod:`~clotseg.preprocess.pipeline` — one case or a whole dataset.

Imports run one way (pipeline → ncct/record → register → alignment → resample →
transforms); submodules are imported on use (SimpleITK is loaded only when needed).
"""
