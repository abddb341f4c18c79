# Helpers of workflow/rules/pretrained.smk: the run that becomes the shipped model (config
# `pretrained:`) and its input functions.

PRETRAINED = config["pretrained"]
PRETRAINED_RUN = "results/{dataset}/{exp}/seed{seed}".format(**PRETRAINED)


def pretrained_metrics(wildcards):
    """metrics.json of the shipped run: its own test split first, then every `test_on` dataset."""
    out = {PRETRAINED["dataset"]: f"{PRETRAINED_RUN}/metrics.json"}
    for ds in PRETRAINED["test_on"]:
        if ds != PRETRAINED["dataset"]:
            out[ds] = f"{PRETRAINED_RUN}/on_{ds}/metrics.json"
    return out


def pretrained_naming(wildcards):
    """Instrument-name accuracy JSON per test dataset (only for experiments with a timbre head)."""
    if not get_experiment(PRETRAINED["exp"]).timbre_head:
        return {}
    return {ds: f"results/pretrained/naming_{ds}.json" for ds in pretrained_metrics(wildcards)}
