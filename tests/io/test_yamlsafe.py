"""YAML of configs and runs: aliases are refused when read and never written."""

from __future__ import annotations

import pytest
import yaml

from clotseg.io import yamlsafe


def test_an_alias_is_refused_before_it_unfolds():
    with pytest.raises(yaml.YAMLError, match="aliases"):
        yamlsafe.load("a: &x [1, 2]\nb: *x\n")
    assert yamlsafe.load("a: [1, 2]\nb: {c: 3}\n") == {"a": [1, 2], "b": {"c": 3}}


def test_a_repeated_object_is_written_out_twice_and_reads_back():
    shared = [0.3, 1.5]
    text = yamlsafe.dump({"blur": shared, "other": shared}, sort_keys=False)
    assert "&" not in text and "*" not in text
    assert yamlsafe.load(text) == {"blur": [0.3, 1.5], "other": [0.3, 1.5]}
    assert "&id" in yaml.safe_dump({"blur": shared, "other": shared})  # what it avoids


def test_code_tags_stay_refused():
    with pytest.raises(yaml.YAMLError):
        yamlsafe.load("x: !!python/object/apply:os.system ['true']\n")
