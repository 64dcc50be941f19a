"""Built-in synthetic cohort: head CTA/NCCT phantoms with a Circle-of-Willis vessel tree,
clots, calcifications and streaks (see :mod:`clotseg.synth.phantom`)."""

from clotseg.synth.cohort import write_cohort
from clotseg.synth.phantom import SIZES, SynthCase, case_seed, make_case

__all__ = ["SIZES", "SynthCase", "case_seed", "make_case", "write_cohort"]
