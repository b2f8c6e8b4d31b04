"""The Dirichlet-process choice of k against BIC's, on the same data: one summary.

    python experiments/fit.py -m experiment=dp_vs_bic

The preset sweeps ``algorithm=em,variational`` over ``model.k``: EM fits every k
(BIC chooses the k of lowest BIC), and the variational fit with the Dirichlet-process
prior is given every k as the most components it may use (it chooses by switching
components off: the effective number of components, weights above
``algorithm.threshold``). When the sweep ends its parent run gets both choices as
metrics (``bic_choice_k``, ``dp_choice_k``, the latter from the largest cap),
``dp_vs_bic.json`` with every run's numbers, ``dp_vs_bic.png`` (BIC against k, the
effective components against the cap) and a line in its description.
"""

from mlflow.tracking import MlflowClient

from experiments import tracking
from experiments.store import tracking_uri


def collect(client: MlflowClient, experiment_id: str, parent_id: str) -> dict:
    """``{"em": {k: bic}, "variational": {k: effective components}}`` of the sweep's
    finished children."""
    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'",
                              max_results=10000)
    out = {"em": {}, "variational": {}}
    for r in runs:
        algorithm, k = r.data.tags.get("algorithm"), r.data.params.get("model.k")
        metric = {"em": "bic", "variational": "effective_components"}.get(algorithm)
        if r.info.status == "FINISHED" and metric in r.data.metrics and k is not None:
            out[algorithm][int(k)] = r.data.metrics[metric]
    return out


def choices(found: dict) -> dict:
    """The two choices of k (None where the sweep has no such runs)."""
    bic, dp = found["em"], found["variational"]
    return {"bic_choice_k": min(bic, key=bic.get) if bic else None,
            "dp_choice_k": int(dp[max(dp)]) if dp else None,
            "dp_largest_cap": max(dp) if dp else None}


def describe(chosen: dict, found: dict, fitted: str) -> str:
    """The parent's description: the choices and the table of BIC and kept components
    per k, then what was fitted."""
    lines = [f"**Dirichlet-process choice: {chosen['dp_choice_k']} components** (cap "
             f"{chosen['dp_largest_cap']}); **BIC's choice: k = {chosen['bic_choice_k']}**.",
             "", "| k | BIC (EM) | components kept (variational, k as the cap) |",
             "|---|---|---|"]
    for k in sorted(set(found["em"]) | set(found["variational"])):
        bic, kept = found["em"].get(k), found["variational"].get(k)
        lines.append(f"| {k} | {'-' if bic is None else f'{bic:.1f}'} | "
                     f"{'-' if kept is None else int(kept)} |")
    return "\n".join(lines) + (
        f"\n\nData: {fitted}. EM fits every k and BIC takes the lowest; the variational "
        "fit with a Dirichlet-process prior keeps the components whose weight is above "
        "its threshold. Plot: `dp_vs_bic.png`; numbers: `dp_vs_bic.json`.")


def log_summary(config, parent_id: str) -> dict:
    """Both choices on the sweep's parent run (see the module doc); returns them."""
    uri = tracking_uri(config)
    client = MlflowClient(uri)
    found = collect(client, client.get_run(parent_id).info.experiment_id, parent_id)
    chosen = choices(found)
    from experiments import configs

    data = configs.data_label(config) + (" (standardised)" if config.data.standardize else "")
    fitted = f"{data}, {configs.plain(config.model.covariance_type)} covariances"
    run = tracking.attach(parent_id, uri)
    run.log_scalars({k: float(v) for k, v in chosen.items() if v is not None})
    # the choices as tags too: the UI draws a metric with two decimals ("2.00")
    run.set_tags({k: str(v) for k, v in chosen.items() if v is not None})
    run.log_dict({**chosen, "bic_by_k": found["em"],
                  "effective_components_by_cap": found["variational"]}, "dp_vs_bic.json")
    run.set_tags({"mlflow.note.content": describe(chosen, found, fitted)})
    if found["em"] and found["variational"]:
        from mogjax.plotting import plot_k_choices

        run.log_figure(plot_k_choices(found["em"], found["variational"], subtitle=fitted),
                       "dp_vs_bic.png")
    return chosen
