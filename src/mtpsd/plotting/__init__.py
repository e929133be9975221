"""Figures of the paper reproduction: one module (function) per figure, DataFrame in,
matplotlib Figure out; ``mtpsd plot <name>`` does the I/O (see ``mtpsd.cli.plot``).

``FIGURES`` maps the CLI name to the file stem under ``figures/`` and a caption that the
report (``mtpsd.reporting.report``) prints under the image.
"""

from __future__ import annotations

FIGURES: dict[str, tuple[str, str]] = {
    "chunks": ("fig01_chunks", "One generated answer coloured by decoding chunk (ConfAdapt); "
               "the number above each chunk is its size."),
    "layout": ("fig02_layout", "Training layout of one text: <MTP> spans, position ids, read-out "
               "targets and supervised positions (from mtpsd.layout.build_layout)."),
    "mask-offsets": ("fig03_mask_offsets", "Blocked attention mask for two sets of prediction "
                     "positions (rolling offsets)."),
    "mask-k": ("fig04_mask_k", "Blocked attention mask for two values of k."),
    "pareto": ("fig05_pareto", "Accuracy vs effective k: Static k, ConfAdapt, self-verify and the "
               "step-0 model; shaded: Pareto frontier. Right: the paper's GSM8K points."),
    "confidence-quality": ("fig06_confidence_quality", "Student confidence vs the teacher's NLL of "
                           "the student's k-token proposal on validation prefixes."),
    "accuracy-steps": ("fig07_accuracy_steps", "Accuracy over training steps per decoding setting."),
    "acceleration-steps": ("fig08_acceleration_steps", "Effective k over training steps per "
                           "decoding setting."),
    "wallclock": ("fig09_wallclock", "Measured wall-clock speedup vs effective k (dashed: ideal)."),
    "training": ("fig10_training", "Training loss and per-position teacher agreement."),
}

# Drawn only when the config has ablation runs (config/ablations.yaml): not in FIGURES, so
# the default DAG and report keep their ten figures.
ABLATION_FIGURE: tuple[str, str] = (
    "fig11_ablations", "Accuracy vs effective k per ablation (ours: reference in black; dashed: "
    "ConfAdapt from Static k=1, solid: Static k; dotted: step 0). Right: the paper's "
    "L3.1-8B-Magpie GSM8K ablation rows.")
