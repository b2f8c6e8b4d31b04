"""Label new data with a logged model; the MLflow run holds one table, nothing else.

    python experiments/predict.py model=models:/mogjax@champion data=new.csv
    python experiments/predict.py model=runs:/<run id>/model data=faithful output=label

``model`` is any MLflow model URI of a fit run's model (``experiments.model``): a
registered version (``models:/<name>@champion``, ``models:/<name>/3``), a run's
(``runs:/<run id>/model``) or a folder. ``data`` is a ``.csv`` or ``.npy`` file (read
without pickle, as ``data=file``; empty, ``nan`` or ``NA`` cells are missing entries,
which a mixture marginalises) or a shipped data set (``faithful``, ``iris``). A CSV's
header, if any, must name the model's columns (any order; other columns, such as a
weights column, are left out); without one the columns are taken in the model's
order, after dropping the weights column the model was fitted with
(``data.weights_column``) when the file has one more column. The data are raw: a
model fitted with ``data.standardize=true`` standardises them itself, so ``predict.py``
on the training file gives the training labels. ``output=label`` keeps only the
labels.

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
import numpy as np
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


def csv_header(path, forced: bool = False) -> tuple[str, ...] | None:
    """The names in a CSV's first row (after blank and ``#`` lines) when it is a header
    (no cell parses as a number, as ``mogjax.datasets.load_file`` decides; ``forced``:
    whatever it holds), else None. Surrounding quotes are dropped."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip() and not line.lstrip().startswith("#"):
                cells = tuple(c.strip().strip('"').strip("'").strip()
                              for c in line.strip().split(","))
                numbers = 0
                for c in cells:
                    try:
                        float(c)
                        numbers += 1
                    except ValueError:
                        pass
                return cells if forced or numbers == 0 else None
    return None


def load_data(data: str, columns: list[str], weights_column: int | None = None
              ) -> pd.DataFrame:
    """``data`` as a DataFrame with the model's ``columns``; ``weights_column``: the
    column the training file's weights were in (dropped from a header-less file that
    has one column more than the model takes)."""
    if data in SHIPPED:
        x = SHIPPED[data]()
        if x.shape[1] != len(columns):
            raise ValueError(f"data {data!r} has {x.shape[1]} columns; the model takes "
                             f"{len(columns)}: {columns}")
        return pd.DataFrame(x, columns=columns)
    path = Path(data)
    x = mg.datasets.load_file(path, missing=True)
    header = csv_header(path) if path.suffix.lower() in (".csv", ".txt") else None
    if header is not None and len(header) == x.shape[1]:
        absent = [c for c in columns if c not in header]
        if absent:
            raise ValueError(f"data file {data!r} has the columns {list(header)}; the model "
                             f"takes {columns}, and {absent} are not among them (rename the "
                             "header, or drop it to take the columns in the model's order)")
        return pd.DataFrame(x, columns=list(header))[columns]
    d = len(columns)
    if x.shape[1] == d + 1 and weights_column is not None:  # 1 = the first, -1 = the last
        x = np.delete(x, weights_column - 1 if weights_column > 0 else weights_column, axis=1)
    if x.shape[1] != d:
        raise ValueError(f"data file {data!r} has {x.shape[1]} columns; the model takes {d}: "
                         f"{columns}")
    return pd.DataFrame(x, columns=columns)


def run(cfg: DictConfig) -> dict:
    """Load the model and the data, predict, log the table; returns ``{"run_id",
    "experiment_id", "table", "model_run_id"}`` (tests call this directly)."""
    exp_id = store.prepare(store.tracking_uri(cfg), cfg.tracking.experiment_name)
    model = mlflow.pyfunc.load_model(cfg.model)
    columns = model.metadata.get_input_schema().input_names()
    training = (model.metadata.metadata or {}).get("training_data") or {}
    frame = load_data(str(cfg.data), columns, training.get("weights_column"))
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


def one_line(err: Exception, limit: int = 400) -> str:
    """An error as one line: MLflow's schema errors quote the whole input DataFrame
    before their reason, so only the reason is kept; at most ``limit`` characters."""
    text = str(err).strip()
    if "enforce schema" in text and "Error: " in text:
        text = "the data do not match the model's signature: " + text.rsplit("Error: ", 1)[1]
    line = text.splitlines()[-1] if text else type(err).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


@hydra.main(version_base="1.3", config_path="../conf/predict", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        out = run(cfg)
    except (ValueError, MlflowException, TrackingUnavailable, OSError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(1)
    counts = out["table"]["label"].value_counts().sort_index()
    print(f"{len(out['table'])} rows labelled by {cfg.model}: "
          + ", ".join(f"label {label}: {n}" for label, n in counts.items()))
    print(f"Table {TABLE} in MLflow run {out['run_id']}: MlflowClient().load_table("
          f"'{out['experiment_id']}', '{TABLE}', run_ids=['{out['run_id']}'])")


if __name__ == "__main__":
    main()
