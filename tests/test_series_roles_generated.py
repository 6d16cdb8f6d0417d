"""Series-role accuracy on generated studies: ``assign_roles`` must give every series the role the
generator's truth expects (``series[].expected_role``), on studies read back from disk.

The generator and the selector implement the same brief independently; a disagreement is reported
with the seed, the series kind and both reasons so that whichever side is wrong can be fixed — the
selector's rules follow physics and the brief, not the generator's quirks.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from operators.core.dicom_io import scan_study_folder
from operators.core.series_roles import assign_roles
from training.synthetic.study import generate_study


def _disagreements(seed: int, out: Path) -> tuple[int, list[str]]:
    """Generate study ``seed`` under ``out`` and compare roles; returns (series count, problems)."""
    truth = generate_study(seed, out)
    scan = scan_study_folder(out / "study")
    decisions = {d.series_instance_uid: d for d in assign_roles(scan.series)}
    problems = []
    for series in truth["series"]:
        label = f"seed {seed}: {series['kind']} series {series['series_number']} {series['description']!r}"
        decision = decisions.get(series["series_instance_uid"])
        if decision is None:
            problems.append(f"{label}: not found by the loader ({[w.code for w in scan.warnings]})")
        elif decision.role != series["expected_role"]:
            problems.append(
                f"{label}: expected {series['expected_role']} ({series.get('role_reason', '')}), "
                f"got {decision.role} ({decision.reason})"
            )
    return len(truth["series"]), problems


@pytest.mark.parametrize("seed", range(20))
def test_roles_match_generated_truth(seed: int, tmp_path: Path) -> None:
    _, problems = _disagreements(seed, tmp_path)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_roles_match_generated_truth_on_200_studies(tmp_path: Path) -> None:
    total, problems = 0, []
    for seed in range(1000, 1200):
        count, found = _disagreements(seed, tmp_path / str(seed))
        total += count
        problems += found
        shutil.rmtree(tmp_path / str(seed))
    accuracy = 100.0 * (total - len(problems)) / total
    assert not problems, f"role accuracy {accuracy:.2f} % over {total} series:\n" + "\n".join(problems)
