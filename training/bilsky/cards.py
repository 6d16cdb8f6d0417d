"""Model cards of the canal detector and the Bilsky graders, from the manifest and
``docs/evaluation/bilsky.json``."""

from __future__ import annotations

import json
from pathlib import Path

from operators.core.bilsky_pipeline import BILSKY_MODELS, CANAL_MODEL
from training.bilsky.train import CALIBRATION
from training.cards import CardText, write_card

#: Where ``python -m training evaluate bilsky --json`` puts the numbers the cards quote.
BILSKY_EVALUATION_JSON = Path("docs/evaluation/bilsky.json")

TRAINING_DATA = (
    "Synthetic studies only, made by `python -m training generate` (README, Training): axial T2 MR studies "
    "(`--kinds sag_t2,ax_t2`, seeds 170000–170299 of every field of view and 172000–172199 thoracic, most with "
    "cancer) and axial CT studies (`--kinds ct_axial`, seeds 171000–171149: unenhanced for the canal detector, "
    "rendered as contrast-enhanced portal venous staging CT with `--ct-contrast` for the CT grader); validation "
    "seeds 840000–840039, 842000–842029 (MR) and 841000–841019 (CT, with `--ct-contrast` for the CT grader). "
    "Canal positions and grades are the generator's truth (thecal sac centre and Bilsky grade of each axial "
    "image). Evaluation studies use seeds from 960000. No patient data."
)

#: The data folders each model was trained from (a grader trains on its own modality's studies).
TRAINING_FOLDERS: dict[str, str] = {
    CANAL_MODEL: "--train data/bilsky/train_mr data/bilsky/train_ct --val data/bilsky/val_mr data/bilsky/val_ct --work work/bilsky",
    BILSKY_MODELS["MR"]: "--train data/bilsky/train_mr --val data/bilsky/val_mr --work work/bilsky",
    BILSKY_MODELS["CT"]: "--train data/bilsky/train_ct_enhanced --val data/bilsky/val_ct_enhanced --work work/bilsky_ct",
}


def training_command(name: str, entry: dict) -> str:
    """The command that trained manifest entry ``name``, its step counts from the entry's own record (a
    grader retrained beside the shipped canal detector says ``--detector-steps 0``)."""
    config = entry.get("training", {}).get("config", {})
    steps = "".join(f" --{key.replace('_', '-')} {config[key]}" for key in ("detector_steps", "grader_steps") if key in config)
    return f"python -m training train-bilsky {TRAINING_FOLDERS[name]} --models models{steps}"


#: The MR grader's validation floor (sensitivity, specificity), as the cards quote it.
MR_SENSITIVITY, MR_SPECIFICITY = (f"{100 * rate:.1f} %" for rate in CALIBRATION["MR"].high_grade_floor)

PURPOSE = {
    CANAL_MODEL: (
        "Canal detector: a MONAI 2D residual U-Net (16-32-64-128 channels) that turns an axial MR or CT image "
        "at 2 mm pixels into a heatmap of the thecal sac centre (weighted squared error of a Gaussian heatmap). In the app the peak is "
        "taken near the sac centre projected from the labelled vertebrae; without sagittal localisation the "
        "detector alone finds the canal. Its position centres the grader's 40 mm ROI."
    ),
    "MR": (
        "Bilsky MRI grader (Hallinan 2022): a convolutional prototypical network — MONAI 2D ResNet (basic "
        "blocks, 1-1-1-1) embedding of the 40 mm canal ROI of an axial T2 image; probabilities are a softmax "
        "over negative squared distances to one learnt prototype per grade (0, 1a, 1b, 1c, 2, 3). Trained with "
        "cross-entropy, compactness regularisation and virtual adversarial training on batches that over-sample "
        "the rare grades; a per-grade logit bias (in the exported graph) restores the grade mix of studies: a fraction of "
        "log true/sampled grade frequency plus an offset on the high grades, chosen on validation for the best AC1 "
        f"among the choices that reach the issue's high-grade sensitivity {MR_SENSITIVITY} and specificity {MR_SPECIFICITY}. "
        "High grade = 1c, 2, 3."
    ),
    "CT": (
        "Bilsky CT grader (Hallinan 2023, combined window learning): the same prototypical network; the ROI "
        "in the bone (1500/300), abdomen (400/50) and spine (200/100) windows goes through shared weights "
        "with window-specific batch normalisation, and the three windows' probabilities are averaged. "
        "Classes normal, low (1a, 1b), high (1c, 2, 3); a per-class logit bias chosen on validation for the best kappa. "
        "Trained on contrast-enhanced (portal venous) staging CT, the CT Hallinan 2023 grades (intravenous contrast "
        "was an inclusion criterion): enhancing epidural tumour stands out from CSF and cord there. On an axial CT "
        "that records no contrast agent the app grades all the same and warns CT_WITHOUT_CONTRAST."
    ),
}


def class_bias_sentence(modality: str, entry: dict) -> str:
    """What the exported ``class_bias`` of the ``modality`` grader is, from its training record."""
    bias = entry.get("training", {}).get("class_bias")
    if not bias:
        return ""
    chosen = bias.get("validation") or {}
    rates = [f"{CALIBRATION[modality].metric.__name__} {chosen['metric']:.3f}"] if "metric" in chosen else []
    rates += [f"high-grade {what} {100 * chosen[key]:.1f} %" for what, key in
              (("sensitivity", "high_sensitivity"), ("specificity", "high_specificity")) if chosen.get(key) is not None]
    rates_text = f" (validation: {', '.join(rates)})" if rates else ""
    return (f" Exported class bias: {bias['scale']:g} × log true/sampled grade frequency, high-grade offset "
            f"{bias.get('high_grade_boost', 0.0):g}{rates_text}.")


def write_bilsky_cards(models: Path) -> list[Path]:
    """Write the cards of the Bilsky-stage models present in ``models/manifest.json``."""
    manifest = json.loads((models / "manifest.json").read_text())["models"]
    metrics: list[str] = []
    if BILSKY_EVALUATION_JSON.exists():
        from training.evaluate_bilsky import markdown_tables

        evaluation = json.loads(BILSKY_EVALUATION_JSON.read_text())
        metrics = ["## Metrics", f"Measured by `{evaluation['command']}` (definitions in design §6):",
                   "\n".join(markdown_tables(evaluation))]
    names = {CANAL_MODEL: CANAL_MODEL, **{m: n for m, n in BILSKY_MODELS.items()}}
    written = []
    for key, name in names.items():
        if name not in manifest:
            continue
        written.append(write_card(models, name, CardText(
            purpose=PURPOSE[key] + ("" if key == CANAL_MODEL else class_bias_sentence(key, manifest[name])),
            training_data=TRAINING_DATA,
            command=training_command(name, manifest[name]),
            metrics=metrics,
            intended_use=("Grade epidural spinal cord compression on every axial T2 / axial CT image (bilsky[], "
                          "summary.highest_bilsky) to triage studies with high-grade disease for urgent review; "
                          "not a diagnosis."),
        )))
    return written
