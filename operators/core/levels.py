"""Vertebral level names, disc names and the class tables the models use.

This module is the one home for level names in spine-map. Every other module (generator,
labeller, graders, report writer, RSNA adapter) imports from here instead of spelling levels
out again.

Conventions
-----------
* Vertebral levels run cranial → caudal: ``C1 … C7, T1 … T12, L1 … L5, S1``.
* Transitional anatomy adds ``T13`` (a 13th rib-bearing vertebra, between T12 and L1) and
  ``L6`` (a sixth lumbar vertebra, between L5 and S1). They are only reported where the
  labeller says a transitional level is present.
* A disc is named by the two vertebrae around it, upper first: ``"L4/L5"``, ``"L5/S1"``.
* The labeller classifies vertebrae into the 23 classes ``C3 … S1`` (SpineNetV2 §3.2).
"""

from __future__ import annotations

CERVICAL: tuple[str, ...] = tuple(f"C{i}" for i in range(1, 8))
THORACIC: tuple[str, ...] = tuple(f"T{i}" for i in range(1, 13))
LUMBAR: tuple[str, ...] = tuple(f"L{i}" for i in range(1, 6))
SACRAL: tuple[str, ...] = ("S1",)

#: Standard levels, cranial to caudal.
LEVELS: tuple[str, ...] = CERVICAL + THORACIC + LUMBAR + SACRAL

#: Levels that exist only with transitional anatomy, and the standard level they follow.
TRANSITIONAL_AFTER: dict[str, str] = {"T13": "T12", "L6": "L5"}

#: Fused sacral segments below S1, cranial to caudal: the detector finds some of them, the labeller
#: names them below S1 and the report leaves them out.
SACRAL_SEGMENTS_BELOW_S1: tuple[str, ...] = ("S2", "S3", "S4", "S5")

#: Levels with no vertebral body (the atlas is a ring): never detected, labelled or counted.
LEVELS_WITHOUT_BODY: tuple[str, ...] = ("C1",)

#: The 23 labeller classes, C3 … S1 (SpineNetV2 §3.2), in cranial → caudal order.
LABELLER_CLASSES: tuple[str, ...] = LEVELS[LEVELS.index("C3") :]

#: Lumbar discs graded by the RSNA 2024 conditions, in the competition's notation.
RSNA_DISCS: tuple[str, ...] = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")


def levels_with_transitional(thirteen_thoracic: bool = False, six_lumbar: bool = False) -> tuple[str, ...]:
    """Return the cranial → caudal level sequence of a spine, optionally with T13 and/or L6.

    >>> levels_with_transitional(six_lumbar=True)[-3:]
    ('L5', 'L6', 'S1')
    """
    sequence = list(LEVELS)
    if thirteen_thoracic:
        sequence.insert(sequence.index("T12") + 1, "T13")
    if six_lumbar:
        sequence.insert(sequence.index("L5") + 1, "L6")
    return tuple(sequence)


def level_order(level: str) -> float:
    """Cranio-caudal position of a level, C1 = 0; transitional levels sit half-way after their parent.

    Used to sort vertebrae and to check that a label sequence is monotonic.

    Raises:
        ValueError: if ``level`` is not a known level name.
    """
    if level in TRANSITIONAL_AFTER:
        return LEVELS.index(TRANSITIONAL_AFTER[level]) + 0.5
    try:
        return float(LEVELS.index(level))
    except ValueError:
        raise ValueError(f"unknown vertebral level {level!r}") from None


def is_level(name: str) -> bool:
    """True for standard and transitional level names."""
    return name in LEVELS or name in TRANSITIONAL_AFTER


def disc_name(upper: str, lower: str) -> str:
    """Name of the disc between two adjacent vertebrae, e.g. ``disc_name("L4", "L5") == "L4/L5"``.

    Raises:
        ValueError: if either name is unknown or ``upper`` is not cranial to ``lower``.
    """
    if level_order(upper) >= level_order(lower):
        raise ValueError(f"{upper!r} is not above {lower!r}")
    return f"{upper}/{lower}"


def disc_levels(name: str) -> tuple[str, str]:
    """Split a disc name ``"L4/L5"`` into its two vertebrae ``("L4", "L5")``.

    Raises:
        ValueError: if ``name`` is not of the form ``UPPER/LOWER`` with known levels.
    """
    upper, sep, lower = name.partition("/")
    if not sep or not is_level(upper) or not is_level(lower):
        raise ValueError(f"not a disc name: {name!r}")
    return upper, lower


def discs_between(levels: tuple[str, ...] | list[str]) -> list[str]:
    """Disc names between consecutive levels of a cranial → caudal level sequence."""
    return [disc_name(a, b) for a, b in zip(levels[:-1], levels[1:])]


def rsna_level_key(disc: str) -> str:
    """RSNA 2024 column suffix for a disc: ``"L4/L5"`` → ``"l4_l5"``."""
    upper, lower = disc_levels(disc)
    return f"{upper.lower()}_{lower.lower()}"


#: The four vertebral-body corners, in the order every corner list in spine-map uses (truth JSON,
#: detector channels, ``corners_mm`` in the report): as seen on a sagittal slice, going round the
#: body from the front-top.
VERTEBRA_CORNERS: tuple[str, ...] = (
    "superior_anterior",
    "superior_posterior",
    "inferior_posterior",
    "inferior_anterior",
)
