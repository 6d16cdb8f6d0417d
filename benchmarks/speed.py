"""Speed and memory benchmark of the whole app, per stage, against the DICOM read time and SpineNetV2.

Command (from the repository root; the machine is shared, so run it niced)::

    nice -n 19 .venv/bin/python -m benchmarks [--quick] [--repeats N] [--out DIR] [--work DIR]

What it does, all in one run so the numbers are comparable:

1. generates a lumbar study (sagittal T1, T2, STIR + axial T2) and a whole-spine study (same kinds,
   one composed sagittal series per contrast) with the project's generator;
2. runs the app on each as a user does (``python app -i STUDY -o OUT`` in a subprocess), ``--repeats``
   times: wall time (median), peak RSS of the child (``VmHWM`` from ``/proc``), exit code, and the per-stage times
   the app logs as ``stage <name> finished in <seconds> s`` (logger ``spine_map.run``; stages that do
   not log yet are simply absent);
3. times the DICOM read of the same study in this process (header scan + decoding every stack with
   :mod:`operators.core.dicom_io`) as the baseline: the app cannot be faster than reading its input;
4. when an NVIDIA GPU is present (``nvidia-smi -L`` lists one), samples device memory and utilisation
   during each app run (device-wide: peak memory above the idle level, busy seconds = Σ Δt·util);
5. scaling: the lumbar study of the same seed with 9 / 15 / 25 sagittal slices (256 matrix) and with
   a 256 vs 512 matrix (15 slices), with a least-squares line of time against slice count;
6. writes ``benchmark.json`` and ``benchmark.md`` (the tables, with SpineNetV2 Table 4 beside ours).

``--quick`` (CI-sized): one repeat, scaling at 9 and 25 slices only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from benchmarks.studies import lumbar_config, whole_spine_config
from training.synthetic.study import generate_study

REPO_ROOT = Path(__file__).resolve().parent.parent
#: One line per finished stage, written by ``operators.core.run_log.stage_timer``.
STAGE_LINE = re.compile(r"stage (?P<name>[A-Za-z0-9_.-]+) finished in (?P<seconds>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?) s\b")
LOG_FILE_NAME = "spine_map.log"

#: Stages that make up SpineNetV2's "detect + label" and "grading" (Table 4).
DETECT_LABEL_STAGES: tuple[str, ...] = ("vertebra_detector", "level_labeller")
#: Grading as SpineNetV2 times it includes cutting out the disc volumes (issue 4: extraction + both graders).
GRADING_STAGES: tuple[str, ...] = ("volume_extractor", "disc_grader")
#: The cancer SCT stage (body volumes + network; issue 5: ≤ 1 s on a whole-spine study).
CANCER_STAGES: tuple[str, ...] = ("cancer_classifier",)
#: The Bilsky stage (canal prior + detector + ROI + grader over every axial image; issue 6: ≤ 1 s per 30 images).
BILSKY_STAGES: tuple[str, ...] = ("bilsky_grader",)
BILSKY_IMAGES_PER_TARGET = 30
#: SpineNetV2 Table 4: seconds (CPU, GPU) for lumbar and whole-spine detect+label and for grading,
#: and peak GPU memory in GB (lumbar, whole spine).
SPINENET_V2 = {
    "detect_label_s": {"cpu": {"lumbar": 25.0, "whole": 120.0}, "gpu": {"lumbar": 3.0, "whole": 5.0}},
    "grading_s": {"cpu": 4.0, "gpu": 1.0},
    "peak_gpu_memory_gb": {"lumbar": 1.6, "whole": 2.5},
}
#: Issue 8 targets on the 2-core development machine.
TARGETS = {"lumbar_wall_s": 8.0, "whole_wall_s": 20.0, "peak_rss_mb": 2048.0, "lumbar_grading_s": 2.0, "whole_cancer_s": 1.0,
           "bilsky_s_per_30_images": 1.0}

SLICE_POINTS: tuple[int, ...] = (9, 15, 25)
QUICK_SLICE_POINTS: tuple[int, ...] = (9, 25)
MATRIX_POINTS: tuple[int, ...] = (256, 512)
SCALING_MATRIX = 256
SCALING_SLICES = 15


# --------------------------------------------------------------------------------------------------
# Measuring one app run
# --------------------------------------------------------------------------------------------------
def parse_stage_times(text: str) -> dict[str, float]:
    """Seconds per stage from ``stage <name> finished in <seconds> s`` lines (a stage that runs more
    than once, e.g. per series, is summed). Other lines are ignored."""
    stages: dict[str, float] = {}
    for match in STAGE_LINE.finditer(text):
        stages[match["name"]] = stages.get(match["name"], 0.0) + float(match["seconds"])
    return stages


def gpu_present() -> bool:
    """Whether ``nvidia-smi -L`` lists at least one GPU."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listing.returncode == 0 and "GPU" in listing.stdout


class GpuSampler:
    """Polls ``nvidia-smi`` in a thread while an app run lasts (device-wide numbers: the benchmark
    assumes nothing else uses the GPU meanwhile).

    Attributes after :meth:`stop`: ``peak_memory_mb`` (above the level at :meth:`start`) and
    ``busy_s`` (Σ sample interval × utilisation).
    """

    QUERY = ["nvidia-smi", "--query-gpu=memory.used,utilization.gpu", "--format=csv,noheader,nounits"]

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.peak_memory_mb = 0.0
        self.busy_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._idle_mb = 0.0

    @classmethod
    def _sample(cls) -> tuple[float, float]:
        """``(memory used MiB, utilisation %)`` summed / averaged over the devices."""
        lines = subprocess.run(cls.QUERY, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()
        values = [tuple(float(v) for v in line.split(",")) for line in lines if line.strip()]
        return sum(v[0] for v in values), sum(v[1] for v in values) / max(1, len(values))

    def start(self) -> None:
        self._idle_mb = self._sample()[0]
        self._thread.start()

    def _poll(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            memory, utilisation = self._sample()
            now = time.perf_counter()
            self.peak_memory_mb = max(self.peak_memory_mb, memory - self._idle_mb)
            self.busy_s += (now - last) * utilisation / 100.0
            last = now
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class AppRunMeasure:
    """One ``python app`` run: wall seconds, peak RSS (MiB) of the child, exit code, stage seconds,
    and the GPU numbers when sampled (``None`` otherwise)."""

    wall_s: float
    peak_rss_mb: float
    exit_code: int
    stages: dict[str, float]
    gpu_peak_memory_mb: float | None = None
    gpu_busy_s: float | None = None


def app_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without MAP variables (``HOLOSCAN_*``, ``SPINE_MAP_*``), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOLOSCAN_", "SPINE_MAP_"))}
    env.update(extra or {})
    return env


def _high_water_rss_kib(pid: int) -> int | None:
    """``VmHWM`` of ``pid`` (KiB): the peak resident set of its current program image."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else None


def wait_measuring_peak_rss(process: subprocess.Popen, interval_s: float = 0.02) -> tuple[int, float]:
    """Wait for ``process``; return its exit code and peak RSS in MiB.

    The peak is ``VmHWM`` polled from ``/proc`` until the child exits, not ``ru_maxrss``: a forked
    child starts with its parent's resident pages counted in its high-water mark, and Linux carries
    that mark across ``exec`` into ``ru_maxrss``, so ``wait4`` would report the benchmark process's
    own size (hundreds of MiB once it has decoded a study). ``VmHWM`` belongs to the program image,
    so it restarts at the app's ``exec``. The last ``interval_s`` before exit can be missed.
    """
    peak_kib = 0
    while True:
        pid, status, _ = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)  # tell Popen the child is gone
            return process.returncode, peak_kib / 1024.0
        peak_kib = max(peak_kib, _high_water_rss_kib(process.pid) or 0)
        time.sleep(interval_s)


def run_app_once(study: Path, out: Path, *, sample_gpu: bool = False, env: dict[str, str] | None = None) -> AppRunMeasure:
    """Run ``python app -i study -o out`` from the repository root and measure it.

    The child's console goes to ``out.parent/<out.name>.stdout|.stderr``; peak RSS: see
    :func:`wait_measuring_peak_rss`.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path = out.with_name(out.name + ".stdout"), out.with_name(out.name + ".stderr")
    sampler = GpuSampler() if sample_gpu else None
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        if sampler:
            sampler.start()
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "app", "-i", str(study), "-o", str(out)],
            cwd=REPO_ROOT, env=env or app_environment(), stdout=stdout, stderr=stderr,
        )  # fmt: skip
        exit_code, peak_rss_mb = wait_measuring_peak_rss(process)
        wall = time.perf_counter() - start
        if sampler:
            sampler.stop()
    log = out / LOG_FILE_NAME
    stages = parse_stage_times(log.read_text(encoding="utf-8", errors="replace")) if log.is_file() else {}
    return AppRunMeasure(
        wall_s=wall,
        peak_rss_mb=peak_rss_mb,
        exit_code=exit_code,
        stages=stages,
        gpu_peak_memory_mb=sampler.peak_memory_mb if sampler else None,
        gpu_busy_s=sampler.busy_s if sampler else None,
    )


def dicom_read_seconds(study: Path) -> float:
    """Seconds to scan ``study`` and decode every stack of every series (the app's own reader)."""
    from operators.core.dicom_io import scan_study_folder

    start = time.perf_counter()
    scan = scan_study_folder(study)
    for series in scan.series:
        for stack in series.stacks:
            stack.load()
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------------------
# Measuring one study
# --------------------------------------------------------------------------------------------------
def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


@dataclass
class StudyMeasure:
    """Everything measured on one study (medians over the repeats; peaks are maxima)."""

    name: str
    series: list[dict[str, Any]]
    n_files: int
    size_mb: float
    #: Axial images the Bilsky stage grades (the truth's per-image entries).
    axial_images: int = 0
    runs: list[AppRunMeasure] = field(default_factory=list)
    read_s: list[float] = field(default_factory=list)

    @property
    def wall_s(self) -> float | None:
        return _median([r.wall_s for r in self.runs])

    @property
    def peak_rss_mb(self) -> float | None:
        return max((r.peak_rss_mb for r in self.runs), default=None)

    @property
    def read_median_s(self) -> float | None:
        return _median(self.read_s)

    @property
    def bilsky_s_per_30_images(self) -> float | None:
        """Bilsky stage seconds scaled to the issue's 30 axial images."""
        seconds = self.sum_of_stages(lambda n: n in BILSKY_STAGES)
        return seconds * BILSKY_IMAGES_PER_TARGET / self.axial_images if seconds is not None and self.axial_images else None

    def stage_s(self) -> dict[str, float]:
        """Median seconds per stage over the runs that logged it."""
        names = sorted({name for run in self.runs for name in run.stages})
        return {name: float(statistics.median([r.stages[name] for r in self.runs if name in r.stages])) for name in names}

    def sum_of_stages(self, selector: Callable[[str], bool]) -> float | None:
        """Median over runs of the summed selected stages; ``None`` when no run logged any of them."""
        sums = [sum(s for n, s in run.stages.items() if selector(n)) for run in self.runs if any(map(selector, run.stages))]
        return _median(sums)

    @property
    def gpu_peak_memory_mb(self) -> float | None:
        return max((r.gpu_peak_memory_mb for r in self.runs if r.gpu_peak_memory_mb is not None), default=None)

    @property
    def gpu_busy_s(self) -> float | None:
        return _median([r.gpu_busy_s for r in self.runs if r.gpu_busy_s is not None])

    def to_json(self) -> dict[str, Any]:
        read, wall = self.read_median_s, self.wall_s
        return {
            "name": self.name,
            "series": self.series,
            "n_files": self.n_files,
            "size_mb": round(self.size_mb, 2),
            "repeats": len(self.runs),
            "exit_codes": [r.exit_code for r in self.runs],
            "wall_s_median": wall,
            "wall_s_all": [r.wall_s for r in self.runs],
            "peak_rss_mb": self.peak_rss_mb,
            "stages_s_median": self.stage_s(),
            "detect_label_s": self.sum_of_stages(lambda n: n in DETECT_LABEL_STAGES),
            "grading_s": self.sum_of_stages(lambda n: n in GRADING_STAGES),
            "cancer_s": self.sum_of_stages(lambda n: n in CANCER_STAGES),
            "bilsky_s": self.sum_of_stages(lambda n: n in BILSKY_STAGES),
            "bilsky_images": self.axial_images,
            "bilsky_s_per_30_images": self.bilsky_s_per_30_images,
            "dicom_read_s_median": read,
            "dicom_read_s_all": self.read_s,
            "app_to_read_ratio": (wall / read) if wall and read else None,
            "gpu_peak_memory_mb": self.gpu_peak_memory_mb,
            "gpu_busy_s_median": self.gpu_busy_s,
            "runs": [asdict(r) for r in self.runs],
        }


def measure_study(name: str, study: Path, truth: dict[str, Any], work: Path, repeats: int, sample_gpu: bool) -> StudyMeasure:
    """Run the app ``repeats`` times on ``study`` and time its DICOM read as often, interleaved so
    that load from other processes on the machine hits both alike."""
    files = [p for p in study.rglob("*") if p.is_file()]
    measure = StudyMeasure(
        name=name,
        series=[{k: s[k] for k in ("kind", "n_instances", "rows", "columns", "transfer_syntax")} for s in truth["series"]],
        n_files=len(files),
        size_mb=sum(p.stat().st_size for p in files) / 2**20,
        axial_images=len(truth.get("bilsky") or []),
    )
    for repeat in range(repeats):
        run = run_app_once(study, work / f"{name}-out-{repeat}", sample_gpu=sample_gpu)
        measure.runs.append(run)
        measure.read_s.append(dicom_read_seconds(study))
        print(f"  {name} run {repeat + 1}/{repeats}: {run.wall_s:.2f} s, exit {run.exit_code}, "
              f"peak RSS {run.peak_rss_mb:.0f} MiB, stages {sorted(run.stages)}", flush=True)  # fmt: skip
    return measure


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float] | None:
    """Least-squares ``y = intercept + slope·x`` with R² (``None`` for fewer than 2 points)."""
    if len(x) < 2:
        return None
    slope, intercept = np.polyfit(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 1)
    predicted = intercept + slope * np.asarray(x, dtype=float)
    residual = float(np.sum((np.asarray(y) - predicted) ** 2))
    total = float(np.sum((np.asarray(y) - np.mean(y)) ** 2))
    return {"slope": float(slope), "intercept": float(intercept), "r2": 1.0 - residual / total if total > 0 else 1.0}


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------
def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MiB"


def _check(value: float | None, limit: float) -> str:
    return "n/a" if value is None else ("✅" if value <= limit else "❌") + f" ≤ {limit:g}"


def render_markdown(results: dict[str, Any]) -> str:
    """The benchmark tables (main comparison, stages, scaling) as Markdown."""
    studies = {s["name"]: s for s in results["studies"]}
    lumbar, whole = studies.get("lumbar", {}), studies.get("whole", {})
    gpu = results["machine"]["gpu"]
    v2 = SPINENET_V2
    lines = [
        f"# spine-map benchmark ({results['machine']['cpus']} CPUs, {results['machine']['cpu_model']}, "
        f"{'GPU' if gpu else 'no GPU'}; median of {results['repeats']} runs)",
        "",
        "| measure | lumbar (4 series) | whole spine | SpineNetV2 CPU lumbar / whole | SpineNetV2 GPU lumbar / whole | target lumbar / whole |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| whole app, wall | {_s(lumbar.get('wall_s_median'))} | {_s(whole.get('wall_s_median'))} | – | – | "
        f"{_check(lumbar.get('wall_s_median'), TARGETS['lumbar_wall_s'])} s / {_check(whole.get('wall_s_median'), TARGETS['whole_wall_s'])} s |",
        f"| detect + label | {_s(lumbar.get('detect_label_s'))} | {_s(whole.get('detect_label_s'))} | "
        f"{v2['detect_label_s']['cpu']['lumbar']:g} s / {v2['detect_label_s']['cpu']['whole']:g} s | "
        f"{v2['detect_label_s']['gpu']['lumbar']:g} s / {v2['detect_label_s']['gpu']['whole']:g} s | – |",
        f"| grading | {_s(lumbar.get('grading_s'))} | {_s(whole.get('grading_s'))} | "
        f"{v2['grading_s']['cpu']:g} s | {v2['grading_s']['gpu']:g} s | "
        f"{_check(lumbar.get('grading_s'), TARGETS['lumbar_grading_s'])} s / – |",
        f"| cancer SCT | {_s(lumbar.get('cancer_s'))} | {_s(whole.get('cancer_s'))} | – | – | "
        f"– / {_check(whole.get('cancer_s'), TARGETS['whole_cancer_s'])} s |",
        f"| Bilsky (per {BILSKY_IMAGES_PER_TARGET} axial images) | {_s(lumbar.get('bilsky_s_per_30_images'))} | "
        f"{_s(whole.get('bilsky_s_per_30_images'))} | – | – | "
        f"{_check(lumbar.get('bilsky_s_per_30_images'), TARGETS['bilsky_s_per_30_images'])} s / "
        f"{_check(whole.get('bilsky_s_per_30_images'), TARGETS['bilsky_s_per_30_images'])} s |",
        f"| peak RSS | {_mb(lumbar.get('peak_rss_mb'))} | {_mb(whole.get('peak_rss_mb'))} | – | – | "
        f"{_check(lumbar.get('peak_rss_mb'), TARGETS['peak_rss_mb'])} MiB / {_check(whole.get('peak_rss_mb'), TARGETS['peak_rss_mb'])} MiB |",
        f"| peak GPU memory | {_mb(lumbar.get('gpu_peak_memory_mb'))} | {_mb(whole.get('gpu_peak_memory_mb'))} | – | "
        f"{v2['peak_gpu_memory_gb']['lumbar']:g} GB / {v2['peak_gpu_memory_gb']['whole']:g} GB | – |",
        f"| GPU busy time | {_s(lumbar.get('gpu_busy_s_median'))} | {_s(whole.get('gpu_busy_s_median'))} | – | – | – |",
        f"| DICOM read (scan + decode all) | {_s(lumbar.get('dicom_read_s_median'))} | {_s(whole.get('dicom_read_s_median'))} | – | – | – |",
        f"| app ÷ DICOM read | {_ratio(lumbar.get('app_to_read_ratio'))} | {_ratio(whole.get('app_to_read_ratio'))} | – | – | – |",
        "",
        "Stages (median seconds, from `stage <name> finished in <s> s` log lines):",
        "",
        "| stage | lumbar | whole spine |",
        "| --- | --- | --- |",
    ]
    stage_names = sorted(set(lumbar.get("stages_s_median", {})) | set(whole.get("stages_s_median", {})))
    lines += [f"| {n} | {_s(lumbar['stages_s_median'].get(n))} | {_s(whole['stages_s_median'].get(n))} |" for n in stage_names]
    if not stage_names:
        lines.append("| (no stage lines logged by this version of the app) | | |")
    lines += ["", "Studies:", ""]
    for study in results["studies"]:
        kinds = ", ".join(f"{s['kind']} {s['n_instances']}×{s['rows']}×{s['columns']}" for s in study["series"])
        lines.append(f"* {study['name']}: {study['n_files']} files, {study['size_mb']:.1f} MB ({kinds})")
    lines += ["", "Scaling (lumbar, same seed; sagittal series forced):", "",
              "| sagittal slices | matrix | app wall | detect + label | DICOM read | peak RSS |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for point in results["scaling"]["points"]:
        lines.append(
            f"| {point['slices']} | {point['matrix']} | {_s(point['wall_s_median'])} | {_s(point['detect_label_s'])} | "
            f"{_s(point['dicom_read_s_median'])} | {_mb(point['peak_rss_mb'])} |"
        )
    for what, fit in results["scaling"]["fits"].items():
        if fit:
            lines.append(f"\nLinear fit of {what} against sagittal slices: {fit['slope']:.3f} s/slice + "
                         f"{fit['intercept']:.2f} s, R² = {fit['r2']:.3f}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}×"


# --------------------------------------------------------------------------------------------------
# Command
# --------------------------------------------------------------------------------------------------
def machine_info(gpu: bool) -> dict[str, Any]:
    """CPU count and model, Python, onnxruntime providers, and whether a GPU was sampled."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        model = found.group(1).strip() if found else model
    import onnxruntime

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "gpu": gpu,
        "load_average_at_start": list(os.getloadavg()),
    }


def run_benchmark(work: Path, repeats: int, quick: bool, seed: int = 0) -> dict[str, Any]:
    """Generate the studies under ``work``, measure them, and return the JSON-ready results."""
    gpu = gpu_present()
    results: dict[str, Any] = {"repeats": repeats, "quick": quick, "seed": seed, "machine": machine_info(gpu)}
    studies = []
    for name, config in (("lumbar", lumbar_config()), ("whole", whole_spine_config())):
        print(f"generating {name} study (seed {seed})", flush=True)
        truth = generate_study(seed, work / name, config)
        studies.append(measure_study(name, work / name / "study", truth, work / "runs", repeats, gpu).to_json())
    results["studies"] = studies

    slice_points = QUICK_SLICE_POINTS if quick else SLICE_POINTS
    grid = [(n, SCALING_MATRIX) for n in slice_points]
    grid += [(SCALING_SLICES, m) for m in MATRIX_POINTS if not quick and (SCALING_SLICES, m) not in grid]
    points = []
    for slices, matrix in grid:
        name = f"lumbar-{slices}x{matrix}"
        print(f"generating {name} study (seed {seed})", flush=True)
        truth = generate_study(seed, work / name, lumbar_config(sagittal_slices=slices, sagittal_matrix=matrix))
        measure = measure_study(name, work / name / "study", truth, work / "runs", repeats, gpu).to_json()
        points.append({"slices": slices, "matrix": matrix, **measure})
    at_matrix = [p for p in points if p["matrix"] == SCALING_MATRIX]
    fits = {
        what: linear_fit([p["slices"] for p in at_matrix if p[key] is not None], [p[key] for p in at_matrix if p[key] is not None])
        for what, key in (("app wall", "wall_s_median"), ("detect + label", "detect_label_s"), ("DICOM read", "dicom_read_s_median"))
    }
    results["scaling"] = {"points": points, "fits": fits}
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks``: see the module docstring. Returns 0, or 1 when an app run failed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized: 1 repeat, fewer scaling points")
    parser.add_argument("--repeats", type=int, help="app runs per study (default 3, or 1 with --quick)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results", help="where benchmark.json/.md go")
    parser.add_argument("--work", type=Path, help="keep the generated studies and app outputs here (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed of every study (default 0)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="spine-map-bench-") as temporary:
        work = args.work or Path(temporary)
        results = run_benchmark(work, repeats, args.quick, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    markdown = render_markdown(results)
    (args.out / "benchmark.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"wrote {args.out / 'benchmark.json'} and {args.out / 'benchmark.md'}")
    failed = [s["name"] for s in results["studies"] + results["scaling"]["points"] if any(c != 0 for c in s["exit_codes"])]
    if failed:
        print(f"app runs failed on: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
