# Helpers of the generalisation and report rules (target lists, input functions); kept apart from
# the rules as in common.smk.
from slotmpe.generalisation import STEMLESS_TYPES, generalisation_rows, generalisation_settings
from slotmpe.generalisation import metrics_paths as generalisation_metrics_paths

GEN_TRAIN, GEN_TEST, GEN_RETUNE = generalisation_settings(config)


def cross_embeddings(wildcards):
    """Test stems embedded by the training dataset's encoder, for experiments with a timbre head
    (none for a test dataset without stems, e.g. MusicNet: mixture metrics only)."""
    stemless = config["datasets"][wildcards.test_ds]["type"] in STEMLESS_TYPES
    if get_experiment(wildcards.exp).timbre_head and not stemless:
        return [f"results/{wildcards.dataset}/timbre/on_{wildcards.test_ds}/embeddings.parquet"]
    return []


def curves_targets():
    """curves.png of every Table III run (all seeds)."""
    return [
        f"results/{ds}/{exp}/seed{seed}/curves.png"
        for exp, ds in TABLE3_ROWS
        for seed in SEEDS
    ]


REPORT_TARGETS = [
    "results/report/table3.html",
    "results/report/findings.html",
    "results/report/table1.html",
    "results/report/generalisation.html",
    *curves_targets(),
]
