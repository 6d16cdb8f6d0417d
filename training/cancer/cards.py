"""Model card of the cancer SCT, from the manifest and ``docs/evaluation/cancer*.json``."""

from __future__ import annotations

import json
from pathlib import Path

from operators.core.cancer_pipeline import CANCER_MODEL
from training.cards import CardText, write_card

#: Where ``python -m training evaluate cancer --json`` puts the numbers the card quotes: the shipped
#: (truth-trained) model on the app's path and on the true vertebrae, and the report-trained model.
CANCER_EVALUATION_JSONS = (Path("docs/evaluation/cancer.json"), Path("docs/evaluation/cancer_true_vertebrae.json"),
                           Path("docs/evaluation/cancer_report_labels.json"))

PURPOSE = (
    "Spinal Context Transformer (Windsor et al. §3): a 2D MONAI ResNet encodes every sagittal slice of "
    "each 9×112×112 vertebral-body volume, attention pooling over slices gives one embedding per "
    "(vertebra, sequence); with level and sequence embeddings these are the tokens of a 2-layer "
    "transformer over the whole study; attention pooling over each vertebra's sequences and one logit "
    "per finding give metastasis, fracture and cord-compression probabilities per vertebra. Any subset "
    "of sagittal T1/T2/STIR, any number of vertebrae. The encoder is first trained alone on single "
    "volumes (SCT Fig. 1b), then the whole network on whole studies."
)

TRAINING_DATA = (
    "Synthetic MR studies only, made by `python -m training generate --kinds sag_t1,sag_t2,sag_stir` "
    "(every field of view): 240 training studies (seeds 160000–160159 with cancer forced, 160160–160239 "
    "the generator's own mix) and 40 validation studies (seeds 830000–830039). Bodies framed from the "
    "true vertebrae moved by N(0, 1.5 mm) per axis. Labels: the generator's per-vertebra truth (the "
    "'expert' labels of SCT Table 2); the comparison model learns only from labels read from the "
    "generated reports (training/reports/labeller.py: unknown labels carry no loss, study-level "
    "statements train through the multiple-instance loss). Evaluation studies use seeds from 950000. "
    "No patient data."
)


def _metrics_section(evaluation: dict) -> list[str]:
    from training.evaluate_cancer import markdown_tables

    return [f"Measured by `{evaluation['command']}` (definitions in design §6):", "\n".join(markdown_tables(evaluation))]


def write_cancer_card(models: Path) -> Path:
    """Write ``models/cancer_sct.md`` with the metrics of the evaluation JSONs that exist."""
    config = json.loads((models / "manifest.json").read_text())["models"][CANCER_MODEL].get("training", {}).get("config", {})
    metrics: list[str] = []
    for path in CANCER_EVALUATION_JSONS:
        if path.exists():
            metrics += _metrics_section(json.loads(path.read_text()))
    return write_card(models, CANCER_MODEL, CardText(
        purpose=PURPOSE,
        training_data=TRAINING_DATA,
        command=("python -m training train-cancer --train data/cancer/train --val data/cancer/val --work work/cancer "
                 f"--models models --labels {config.get('labels', 'truth')} --steps {config.get('steps')} "
                 f"--pretrain-steps {config.get('pretrain_steps')}"),
        metrics=(["## Metrics", *metrics] if metrics else []),
        intended_use=("Flag vertebrae with suspected metastasis, fracture or cord compression for a radiologist's "
                      "review (vertebrae[].findings, needs_review, summary.cancer_suspected); not a diagnosis."),
    ))
