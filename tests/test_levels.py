"""Level tables: names, order, discs and transitional anatomy."""

from __future__ import annotations

import pytest

from operators.core.levels import (
    LABELLER_CLASSES,
    LEVELS,
    RSNA_DISCS,
    disc_levels,
    disc_name,
    discs_between,
    is_level,
    level_order,
    levels_with_transitional,
    rsna_level_key,
)


def test_standard_levels():
    assert len(LEVELS) == 25
    assert LEVELS[0] == "C1" and LEVELS[-1] == "S1"
    assert LEVELS.index("T1") == 7 and LEVELS.index("L1") == 19


def test_labeller_has_23_classes_c3_to_s1():
    assert len(LABELLER_CLASSES) == 23
    assert LABELLER_CLASSES[0] == "C3" and LABELLER_CLASSES[-1] == "S1"


def test_transitional_levels_sit_between_their_neighbours():
    spine = levels_with_transitional(thirteen_thoracic=True, six_lumbar=True)
    assert spine[spine.index("T12") + 1] == "T13" and spine[spine.index("T13") + 1] == "L1"
    assert spine[spine.index("L5") + 1] == "L6" and spine[spine.index("L6") + 1] == "S1"
    orders = [level_order(level) for level in spine]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)


def test_disc_names_round_trip():
    assert disc_name("L4", "L5") == "L4/L5"
    assert disc_levels("L5/S1") == ("L5", "S1")
    assert discs_between(["L3", "L4", "L5", "S1"]) == ["L3/L4", "L4/L5", "L5/S1"]
    assert discs_between(levels_with_transitional(six_lumbar=True))[-2:] == ["L5/L6", "L6/S1"]
    assert [rsna_level_key(disc) for disc in RSNA_DISCS] == ["l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"]


@pytest.mark.parametrize("bad", ["L4-L5", "L4/X1", "L4", "/L5"])
def test_malformed_disc_names_are_rejected(bad):
    with pytest.raises(ValueError):
        disc_levels(bad)


@pytest.mark.parametrize(("upper", "lower"), [("L5", "L4"), ("S1", "S1")])
def test_disc_upper_must_be_cranial(upper, lower):
    with pytest.raises(ValueError):
        disc_name(upper, lower)


def test_unknown_level_is_rejected():
    assert not is_level("L7")
    with pytest.raises(ValueError):
        level_order("L7")
