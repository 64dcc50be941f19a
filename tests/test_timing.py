"""Stage timing (clotseg.timing): recorded only inside ``collect``, added up per name."""

from __future__ import annotations

import time

from clotseg.timing import collect, stage


def test_stages_are_recorded_only_inside_collect():
    with stage("outside"):
        pass
    wall, cpu = {}, {}
    with collect(wall, cpu):
        for _ in range(2):
            with stage("work"):
                time.sleep(0.01)
        with stage("other"):
            sum(range(10000))
    with stage("after"):
        pass
    assert set(wall) == set(cpu) == {"work", "other"}
    assert wall["work"] > 0 and cpu["work"] >= 0
