"""What every ``python -m training train-*`` command shares: its folder/stage/thread options,
caching a folder of generated studies in parallel, and starting a network from exported weights."""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from training.evaluate import map_jobs

logger = logging.getLogger(__name__)


def add_stage_arguments(parser: argparse.ArgumentParser, stages: Sequence[str], *, several_folders: bool = False) -> None:
    """``--train``/``--val`` (generated study folders; several when ``several_folders``), ``--work``,
    ``--models``, ``--stage`` (``all`` or one of ``stages``) and ``--threads``."""
    folders = {"nargs": "+"} if several_folders else {}
    parser.add_argument("--train", type=Path, required=True, help="folder(s) of generated training studies", **folders)
    parser.add_argument("--val", type=Path, required=True, help="folder(s) of generated validation studies", **folders)
    parser.add_argument("--work", type=Path, required=True, help="cache, checkpoints and histories")
    parser.add_argument("--models", type=Path, default=Path("models"), help="export folder (default: models)")
    parser.add_argument("--stage", choices=("all", *stages), default="all")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (and cache processes)")


def selected_stages(args: argparse.Namespace, stages: tuple[str, ...]) -> tuple[str, ...]:
    """The stages ``--stage`` asks for, in order."""
    return stages if args.stage == "all" else (args.stage,)


def cache_folders(cache_study: Callable[..., Path | None], folders: Path | Sequence[Path], cache_dir: Path, jobs: int,
                  **options: object) -> list[Path]:
    """``cache_study(study_dir, cache_dir=cache_dir, **options)`` for every ``study_*`` folder with a
    ``truth.json`` under ``folders``, in ``jobs`` processes; the cache files written (or found)."""
    studies = sorted(p for folder in ([folders] if isinstance(folders, Path) else folders)
                     for p in folder.iterdir() if (p / "truth.json").exists())
    files = [f for f in map_jobs(functools.partial(cache_study, cache_dir=cache_dir, **options), studies, jobs) if f is not None]
    logger.info("%s: %d of %d studies cached", cache_dir.name, len(files), len(studies))
    return files


def start_from(model: torch.nn.Module, state: dict | None) -> list[str]:
    """Load ``state`` (from :func:`initial_state`) into ``model``; returns the names of the tensors
    left at their fresh initialisation because the architecture added them or changed their shape (a
    layer that was widened keeps the rest of the network's learned weights). ``None`` loads nothing.

    Raises ``ValueError`` when ``state`` names a tensor ``model`` lacks, or when no tensor fits:
    those weights belong to another network.
    """
    if state is None:
        return []
    own = model.state_dict()
    foreign = sorted(set(state) - set(own))
    fitting = {name: value for name, value in state.items() if name in own and own[name].shape == value.shape}
    if foreign or not fitting:
        raise ValueError(f"the initial weights do not belong to {type(model).__name__}: "
                         f"{len(foreign)} unknown tensors, {len(fitting)} of {len(own)} fit")
    model.load_state_dict(fitting, strict=False)
    reinitialised = sorted(set(own) - set(fitting))
    if reinitialised:
        logger.warning("%s starts these tensors afresh (new or reshaped): %s", type(model).__name__, ", ".join(reinitialised))
    return reinitialised


def initial_state(models: Path | None, name: str) -> dict | None:
    """State dict of ``models/<name>.ts`` (TorchScript keeps the module's parameter names), or ``None``
    without ``models``: what ``--init-models`` fine-tunes from."""
    return None if models is None else torch.jit.load(models / f"{name}.ts").state_dict()
