"""Built-in synthetic cohort ("phantom"): head CTA/NCCT pairs with a Circle-of-Willis
vessel tree, clots, calcifications, slow-flow segments and streaks, with ground truth.

``make_case(seed)`` builds one patient in memory; ``write_cohort(out, n)`` writes a
case-folder dataset plus ``truth.csv`` (see :mod:`clotseg.synth.phantom` for the model and the published figures it uses).
"""

from clotseg.synth.cohort import TRUTH_COLUMNS, case_id, write_cohort
from clotseg.synth.phantom import LABELS, SIZES, SynthCase, case_seed, make_case, plan_case

__all__ = ["LABELS", "SIZES", "TRUTH_COLUMNS", "SynthCase", "case_id", "case_seed",
           "make_case", "plan_case", "write_cohort"]
