"""Label new data with a logged model; the MLflow run holds one table, nothing else.

    python experiments/predict.py model=models:/mogjax@champion data=new.csv
    python experiments/predict.py model=runs:/<run id>/model data=faithful output=label

``model`` is any MLflow model URI of a fit run's model (``experiments.model``): a
registered version (``models:/<name>@champion``, ``models:/<name>/3``), a run's
(``runs:/<run id>/model``) or a folder. ``data`` is a ``.csv`` or ``.npy`` file (read
without pickle, as ``data=file``) or a shipped data set (``faithful``, ``iris``). A
CSV's header, if any, must name the model's columns (any order); without one the
columns are taken in the model's order. ``output=label`` keeps only the labels.

The run (experiment ``tracking.experiment_name``, default ``mogjax-predictions``)
logs ``predictions.json``, an MLflow table (``MlflowClient().load_table``) of the data's
columns and the model's outputs (numbers to 10 decimal places, as MLflow writes JSON
tables), and no params, metrics or other artifacts; its tags
name the model URI, the model's source run and the data. Nothing is logged when the
model, the data or the prediction fails.
"""

import logging
import sys
from pathlib import Path

import hydra
import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

import mogjax as mg

from experiments import store
from experiments.store import TrackingUnavailable

logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # no TPU/GPU lines

SHIPPED = {"faithful": mg.load_old_faithful, "iris": lambda: mg.load_iris()[0]}
TABLE = "predictions.json"


def csv_header(path: Path) -> list[str] | None:
    """The column names of a CSV's header line (None without one)."""
    with open(path) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                cells = [c.strip() for c in line.strip().split(",")]
                try:
                    [float(c) for c in cells]
                except ValueError:
                    return cells
                return None
    return None


def load_data(data: str, columns: list[str]) -> pd.DataFrame:
    """``data`` as a DataFrame with the model's ``columns``."""
    if data in SHIPPED:
        x = SHIPPED[data]()
        if x.shape[1] != len(columns):
            raise ValueError(f"data {data!r} has {x.shape[1]} columns; the model takes "
                             f"{len(columns)}: {columns}")
        return pd.DataFrame(x, columns=columns)
    path = Path(data)
    x = mg.datasets.load_file(path, n_features=len(columns))
    header = csv_header(path) if path.suffix.lower() == ".csv" else None
    if header is None:
        return pd.DataFrame(x, columns=columns)
    if sorted(header) != sorted(columns):
        raise ValueError(f"data file {data!r} has the columns {header}; the model takes "
                         f"{columns} (rename the header, or drop it to take the columns "
                         "in the model's order)")
    return pd.DataFrame(x, columns=header)[columns]


def run(cfg: DictConfig) -> dict:
    """Load the model and the data, predict, log the table; returns ``{"run_id",
    "experiment_id", "table", "model_run_id"}`` (tests call this directly)."""
    exp_id = store.prepare(store.tracking_uri(cfg), cfg.tracking.experiment_name)
    model = mlflow.pyfunc.load_model(cfg.model)
    columns = model.metadata.get_input_schema().input_names()
    frame = load_data(str(cfg.data), columns)
    labels = model.predict(frame, params={"output": cfg.output})
    table = pd.concat([frame.reset_index(drop=True), labels.reset_index(drop=True)], axis=1)
    client = MlflowClient()
    tags = {"model_uri": cfg.model, "model_run_id": model.metadata.run_id or "",
            "data": str(cfg.data)}
    run = client.create_run(exp_id, run_name=cfg.tracking.run_name or "predict", tags=tags)
    try:
        client.log_table(run.info.run_id, table, TABLE)
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")
    return {"run_id": run.info.run_id, "experiment_id": exp_id, "table": table,
            "model_run_id": tags["model_run_id"]}


@hydra.main(version_base="1.3", config_path="../conf/predict", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        out = run(cfg)
    except (ValueError, MlflowException, TrackingUnavailable, OSError) as err:
        print(f"error: {str(err).strip().splitlines()[-1]}", file=sys.stderr)
        sys.exit(1)
    counts = out["table"]["label"].value_counts().sort_index()
    print(f"{len(out['table'])} rows labelled by {cfg.model}: "
          + ", ".join(f"label {label}: {n}" for label, n in counts.items()))
    print(f"Table {TABLE} in MLflow run {out['run_id']}: MlflowClient().load_table("
          f"'{out['experiment_id']}', '{TABLE}', run_ids=['{out['run_id']}'])")


if __name__ == "__main__":
    main()
