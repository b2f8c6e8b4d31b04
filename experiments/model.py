"""A fitted mixture, or mean shift's modes, as an MLflow model (``python_function``).

Every fit run logs its fitted model as ``model`` (``log_model``), so any Python with
mogjax and mlflow installed can use it, without this repository::

    model = mlflow.pyfunc.load_model("runs:/<run id>/model")  # or models:/<name>@champion
    model.predict(df)                                # one row per row of df
    model.predict(df, params={"output": "label"})    # the label column only

``df`` holds the feature columns by name (the signature's inputs, all ``double``):
the names of the data the model was fitted on (a file's header, ``data.column_names``,
Old Faithful's ``eruption duration (min)`` and ``waiting time (min)``; ``x1, x2, ...``
for generated data), in the units of that data; other columns are ignored. A model
fitted with ``data.standardize=true`` carries the scaler (the training data's mean
and standard deviation per column, ``scaler_mean``/``scaler_scale`` in its files) and
applies it inside ``predict``: it takes raw data, as the training file was.
``predict`` returns a DataFrame:

- a mixture (EM or gradient ascent): ``label`` (``mogjax.predict``, the component of
  largest responsibility), ``proba_0 .. proba_{k-1}`` (``mogjax.responsibilities``)
  and ``log_density`` (``mogjax.score_samples``), computed in the precision of the
  fitted parameters (float32 parameters give float32 numbers, as the library). A NaN
  is a missing coordinate: it is marginalised out, as in the library, but a row
  must have at least one observed value.
- mean shift: ``label`` only, the index of the nearest mode (as ``MeanShift.predict``:
  ``mogjax.init.nearest_center``), the modes largest cluster first; no NaN.

Bad input raises ``MlflowException`` (``INVALID_PARAMETER_VALUE``) naming the column,
row and value: the model server answers it with HTTP 400, not 500.

What is logged (``log_model``): MLflow's "models from code": MLflow keeps a copy of
this file with the model and executes it to load the model (``set_model`` at the
end), so nothing is pickled; the parameters are ``fitted.npz`` (loads with
``allow_pickle=False``) and a readable ``fitted.json``, which also records the
training data (``training``: name, hash, rows, weights column), as does the
``MLmodel`` file's ``metadata``. The signature names the
feature columns and the ``output`` parameter; an input example (the first rows of the
data); pip requirements pinned to what predicting needs: mogjax, jax, jaxlib, optax,
numpy, pandas, mlflow (no test, cluster or experiment packages). This file may
therefore import only those.

Back in mogjax (``load_fitted``, ``load_params``, ``load_estimator``): the
``MixtureParams``, or a fitted ``mogjax.GaussianMixture`` / ``mogjax.MeanShift``, from
any model URI (``runs:/``, ``models:/``, a local folder).
"""

import contextlib
import dataclasses
import json
import logging
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import jax
import jax.numpy as jnp
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

import mogjax as mg
from mogjax.init import nearest_center
from mogjax.mixture import to_numpy

MODEL_NAME = "model"  # a run's model: runs:/<run id>/model
ARRAYS, DESCRIPTION = "fitted.npz", "fitted.json"
OUTPUTS = ("all", "label")  # predict's ``output`` parameter
REQUIREMENTS = ("mogjax", "jax", "jaxlib", "optax", "numpy", "pandas", "mlflow")
EXAMPLE_ROWS = 3

_nearest_center = jax.jit(nearest_center)


@dataclasses.dataclass(frozen=True)
class Fitted:
    """What a model predicts from: a mixture's parameters or mean shift's modes.

    Attributes:
      kind: ``"mixture"`` or ``"meanshift"``.
      columns: the feature names, in order (the signature's inputs).
      params: the ``MixtureParams`` (a mixture), else None.
      centers: the modes, (m, d), largest cluster first (mean shift), else None.
      bandwidth: mean shift's Gaussian sigma, else None.
      scaler: ``(mean, scale)``, each (d,) float64: the model standardises its input
        ``(x - mean) / scale`` before anything else (``data.standardize``), else None.
      training: what the model was fitted on (``name``, ``hash``, ``rows``,
        ``weights_column``...), a JSON-able dict, else None.
    """

    kind: str
    columns: tuple[str, ...]
    params: mg.MixtureParams | None = None
    centers: np.ndarray | None = None
    bandwidth: float | None = None
    scaler: tuple[np.ndarray, np.ndarray] | None = None
    training: dict | None = None

    @property
    def dtype(self) -> np.dtype:
        return np.asarray(self.params.means if self.params is not None else self.centers).dtype

    @property
    def output_names(self) -> list[str]:
        if self.kind == "meanshift":
            return ["label"]
        k = int(np.shape(self.params.log_weights)[0])
        return ["label", *(f"proba_{j}" for j in range(k)), "log_density"]


def _scaler(scaler, d: int):
    if scaler is None:
        return None
    mean, scale = (np.asarray(a, np.float64).reshape(-1) for a in scaler)
    if mean.shape != (d,) or scale.shape != (d,) or not np.all(scale > 0):
        raise ValueError(f"a scaler needs a mean and a positive scale per column ({d}), got "
                         f"{mean.shape} and {scale.shape}")
    return mean, scale


def mixture(params: mg.MixtureParams, columns, scaler=None, training=None) -> Fitted:
    d = int(np.shape(params.means)[-1])
    return Fitted("mixture", tuple(columns), params=params, scaler=_scaler(scaler, d),
                  training=training)


def modes(centers, columns, bandwidth: float, scaler=None, training=None) -> Fitted:
    centers = np.asarray(centers)
    return Fitted("meanshift", tuple(columns), centers=centers, bandwidth=float(bandwidth),
                  scaler=_scaler(scaler, centers.shape[-1]), training=training)


# ---------------------------------------------------------------- prediction


def bad_input(message: str) -> MlflowException:
    """What ``predict`` raises for input it cannot score (HTTP 400 from the server)."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def features(fitted: Fitted, frame) -> np.ndarray:
    """The feature columns of ``frame`` (a DataFrame, or anything ``pd.DataFrame``
    takes) as a float64 array (n, d), checked: every column present, numbers only, no
    infinity, NaN only where the model allows it (see the module's docstring)."""
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    names = list(fitted.columns)
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise bad_input(f"missing input column(s) {missing}; the model takes the columns "
                        f"{names}")
    if len(frame) == 0:
        raise bad_input("the input has no rows")
    out = np.empty((len(frame), len(names)))
    for j, name in enumerate(names):
        column = frame[name]
        if column.dtype == bool or not pd.api.types.is_numeric_dtype(column):
            numbers = pd.to_numeric(column, errors="coerce")
            bad = column.notna() & numbers.isna() | column.map(lambda v: isinstance(v, bool))
            if bad.any():
                row = int(np.argmax(bad.to_numpy()))
                raise bad_input(f"column {name!r} row {row}: {column.iloc[row]!r} is not a "
                                "number")
            column = numbers
        out[:, j] = column.to_numpy(dtype=np.float64, na_value=np.nan)
    _check_values(fitted, out)
    if fitted.scaler is not None:  # in float64, as the training data were (NaN stays NaN)
        mean, scale = fitted.scaler
        out = (out - mean) / scale
    _check_range(fitted, out)
    return out


def _check_range(fitted: Fitted, x: np.ndarray) -> None:
    """Every value must be a number of the model's precision: a float32 model computes
    in float32, where 1e308 is infinite (it used to answer NaN densities)."""
    largest = np.finfo(fitted.dtype).max
    with np.errstate(invalid="ignore"):
        over = np.abs(x) > largest
    if over.any():
        row, j = map(int, np.argwhere(over)[0])
        value = frame_value = x[row, j]
        if fitted.scaler is not None:
            frame_value = value * fitted.scaler[1][j] + fitted.scaler[0][j]
        raise bad_input(f"column {fitted.columns[j]!r} row {row}: {frame_value:g} overflows the "
                        f"model's {np.dtype(fitted.dtype).name} (largest {largest:g}), the "
                        "precision it computes in")


def _check_values(fitted: Fitted, x: np.ndarray) -> None:
    names = fitted.columns
    infinite = np.isinf(x)
    if infinite.any():
        row, j = map(int, np.argwhere(infinite)[0])
        raise bad_input(f"column {names[j]!r} row {row}: {x[row, j]} is not finite")
    nan = np.isnan(x)
    if fitted.kind == "meanshift" and nan.any():
        row, j = map(int, np.argwhere(nan)[0])
        raise bad_input(f"column {names[j]!r} row {row} is NaN (missing): a mean-shift "
                        "model needs every coordinate to find the nearest mode")
    empty = nan.all(axis=1)
    if empty.any():
        raise bad_input(f"row {int(np.argmax(empty))} has no value (NaN in every column); "
                        "a mixture marginalises missing coordinates but needs at least one")


def precision(dtype):
    """Compute in the parameters' precision: float64 parameters under ``jax.enable_x64``
    (whatever the process's flag), float32 ones in float32."""
    return jax.enable_x64(True) if np.dtype(dtype) == np.float64 else contextlib.nullcontext()


def predict_frame(fitted: Fitted, frame, output: str = "all") -> pd.DataFrame:
    """``predict``'s table for ``frame`` (see the module's docstring)."""
    if output not in OUTPUTS:
        raise bad_input(f"params output={output!r}: must be one of {list(OUTPUTS)}")
    x = features(fitted, frame)
    index = frame.index if isinstance(frame, pd.DataFrame) else None
    with precision(fitted.dtype):
        x = jnp.asarray(x.astype(fitted.dtype))
        if fitted.kind == "meanshift":
            labels = _nearest_center(x, jnp.asarray(fitted.centers))
            return pd.DataFrame({"label": np.asarray(labels, dtype=np.int64)}, index=index)
        p = fitted.params
        out = {"label": np.asarray(mg.predict(p, x), dtype=np.int64)}
        proba = np.asarray(mg.responsibilities(p, x), dtype=np.float64)
        log_density = np.asarray(mg.score_samples(p, x), dtype=np.float64)
    bad = np.isnan(log_density) | np.isnan(proba).any(axis=1)
    if bad.any():  # never a NaN answer with a 200: the row and its values, named
        row = int(np.argmax(bad))
        values = {c: frame_value(frame, c, row) for c in fitted.columns}
        raise bad_input(f"row {row} {values}: the model's {np.dtype(fitted.dtype).name} "
                        "arithmetic cannot score it (its density is not a number); values this "
                        "far from the data need a float64 model")
    if output == "all":
        out.update({f"proba_{j}": proba[:, j] for j in range(proba.shape[1])})
        out["log_density"] = log_density
    return pd.DataFrame(out, index=index)


def frame_value(frame, column: str, row: int):
    """``frame[column]`` at position ``row`` (a DataFrame or what ``pd.DataFrame`` takes)."""
    frame = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
    return frame[column].iloc[row]


class MixtureModel(mlflow.pyfunc.PythonModel):
    """The ``python_function`` model: ``predict(df, params={"output": "all"|"label"})``."""

    def load_context(self, context):
        self.fitted = read_fitted(Path(context.artifacts["arrays"]),
                                  Path(context.artifacts["description"]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        return predict_frame(self.fitted, model_input, (params or {}).get("output", "all"))


# ------------------------------------------------------------- files, no pickle


def write_fitted(fitted: Fitted, folder: Path) -> tuple[Path, Path]:
    """``fitted.npz`` (arrays) and ``fitted.json`` (what they are, readable) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    info = {"kind": fitted.kind, "columns": list(fitted.columns), "dtype": str(fitted.dtype),
            "mogjax_version": mg.__version__, "training": fitted.training}
    if fitted.kind == "mixture":
        p = fitted.params
        arrays = {"log_weights": np.asarray(p.log_weights), "means": np.asarray(p.means),
                  "prec_chol": np.asarray(p.prec_chol)}
        info.update(covariance_type=p.covariance_type,
                    weights=np.asarray(p.weights).tolist(), means=arrays["means"].tolist(),
                    covariances=np.asarray(p.covariances).tolist())
    else:
        arrays = {"centers": np.asarray(fitted.centers)}
        info.update(bandwidth=fitted.bandwidth, centers=arrays["centers"].tolist())
    if fitted.scaler is not None:
        arrays.update(scaler_mean=fitted.scaler[0], scaler_scale=fitted.scaler[1])
        info["scaler"] = {"mean": fitted.scaler[0].tolist(), "scale": fitted.scaler[1].tolist(),
                          "applied": "x -> (x - mean) / scale, inside predict"}
    np.savez(folder / ARRAYS, **arrays)
    (folder / DESCRIPTION).write_text(json.dumps(info, indent=2))
    return folder / ARRAYS, folder / DESCRIPTION


def read_fitted(arrays: Path, description: Path) -> Fitted:
    info = json.loads(Path(description).read_text())
    with np.load(arrays, allow_pickle=False) as data:
        scaler = ((data["scaler_mean"], data["scaler_scale"]) if "scaler_mean" in data.files
                  else None)
        training = info.get("training")
        if info["kind"] == "meanshift":
            return modes(data["centers"], info["columns"], info["bandwidth"], scaler, training)
        params = mg.MixtureParams(data["log_weights"], data["means"], data["prec_chol"],
                                  info["covariance_type"])
    return mixture(params, info["columns"], scaler, training)


# ------------------------------------------------------------------ logging


def signature(fitted: Fitted) -> ModelSignature:
    """Inputs: the feature columns by name, ``double``; outputs: ``predict``'s columns;
    the parameter ``output`` ("all" or "label")."""
    outputs = [ColSpec("long", "label")] + [
        ColSpec("double", name, required=False) for name in fitted.output_names[1:]]
    return ModelSignature(inputs=Schema([ColSpec("double", c) for c in fitted.columns]),
                          outputs=Schema(outputs),
                          params=ParamSchema([ParamSpec("output", "string", "all")]))


def model_metadata(fitted: Fitted) -> dict:
    """The ``MLmodel`` file's ``metadata``: the training data and whether the model
    standardises its input (``model.metadata.metadata`` of a loaded model)."""
    return {"training_data": fitted.training or {}, "columns": list(fitted.columns),
            "standardizes_input": fitted.scaler is not None}


def requirements() -> list[str]:
    """What predicting needs, pinned to the installed versions."""
    return [f"{name}=={metadata.version(name)}" for name in REQUIREMENTS]


@contextlib.contextmanager
def quiet(logger: str):
    """``logger`` at WARNING inside the block (MLflow's INFO line per saved model)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def save_model(path, mlflow_model=None, *, fitted: Fitted, example,
               validate_serving_input: bool = False) -> None:
    """Write ``fitted`` as an MLflow model folder at ``path``: a ``python_function``
    model whose code is this file, its files (``write_fitted``), signature, input
    example (the first rows of ``example``) and requirements. ``log_model`` hands this
    module to ``mlflow.models.Model.log`` as the flavour that saves the model.

    MLflow's check of the input example (which loads the model and predicts, compiling
    the three programs: about 1.7 s per process) is left out (``validate_serving_input``
    is ignored): tests/test_model.py serves the example instead.
    """
    rows = np.asarray(example[:EXAMPLE_ROWS], dtype=np.float64)
    if fitted.scaler is not None:  # ``example`` is the data fitted (standardised): raw rows
        rows = rows * fitted.scaler[1] + fitted.scaler[0]
    frame = pd.DataFrame(rows, columns=list(fitted.columns))
    with tempfile.TemporaryDirectory() as tmp, quiet("mlflow.pyfunc"):
        arrays, description = write_fitted(fitted, Path(tmp))
        mlflow.pyfunc.save_model(
            path, mlflow_model=mlflow_model, python_model=os.path.abspath(__file__),
            artifacts={"arrays": str(arrays), "description": str(description)},
            signature=signature(fitted), input_example=frame,
            pip_requirements=requirements(), metadata=model_metadata(fitted))


def log_model(fitted: Fitted, example: np.ndarray, run_id: str):
    """Log ``fitted`` as the model ``model`` of run ``run_id`` (``runs:/<id>/model``),
    a logged model of the run's experiment with the run's params (as
    ``mlflow.pyfunc.log_model`` in an active run); ``example``: rows of the data, the
    first of which are the input example. Returns MLflow's ``ModelInfo``."""
    run = MlflowClient().get_run(run_id)
    logged = mlflow.initialize_logged_model(
        name=MODEL_NAME, source_run_id=run_id, experiment_id=run.info.experiment_id,
        params=dict(run.data.params), model_type=fitted.kind)
    return mlflow.models.Model.log(
        artifact_path=None, name=MODEL_NAME, flavor=sys.modules[__name__], run_id=run_id,
        model_id=logged.model_id, validate_serving_input=False, fitted=fitted,
        example=example)


# ------------------------------------------------------------ back in mogjax


def load_fitted(model_uri: str) -> Fitted:
    """The ``Fitted`` of a logged model (``runs:/<id>/model``, ``models:/<name>@alias``,
    a local folder), read from its files: no pickle, no code executed."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=tmp))
        return read_fitted(folder / "artifacts" / ARRAYS, folder / "artifacts" / DESCRIPTION)


def load_params(model_uri: str) -> mg.MixtureParams:
    """The ``MixtureParams`` of a logged mixture model.

    Examples (with a store at hand)::

        params = load_params("models:/mogjax@champion")
        mogjax.predict(params, x)
    """
    fitted = load_fitted(model_uri)
    if fitted.kind != "mixture":
        raise ValueError(f"{model_uri} is a {fitted.kind} model: it has modes, not mixture "
                         "parameters (use load_fitted or load_estimator)")
    return fitted.params


def load_estimator(model_uri: str):
    """A fitted ``mogjax.GaussianMixture`` (a mixture model) or ``mogjax.MeanShift``
    (mean shift) from a logged model: ``predict``, ``predict_proba``, ``score_samples``
    ... as after ``fit``, in the precision of the stored parameters; its
    ``feature_names_in_`` are the model's columns. A model that standardises its
    input gives a scikit-learn ``Pipeline`` of the fitted ``StandardScaler`` and the
    estimator, so it too takes raw data."""
    fitted = load_fitted(model_uri)
    dtype = str(fitted.dtype)
    names = np.asarray(fitted.columns, dtype=object)
    if fitted.kind == "meanshift":
        est = mg.MeanShift(bandwidth=fitted.bandwidth, dtype=dtype)
        est.cluster_centers_ = np.asarray(fitted.centers)
    else:
        p = fitted.params
        est = mg.GaussianMixture(int(np.shape(p.log_weights)[0]),
                                 covariance_type=p.covariance_type, dtype=dtype)
        arrays = to_numpy(p)
        est.params_ = p
        est.weights_, est.means_ = arrays["weights"], arrays["means"]
        est.covariances_ = arrays["covariances"]
        est.precisions_cholesky_ = arrays["precisions_cholesky"]
        est.precisions_ = np.asarray(p.precisions)
    est.n_features_in_ = len(names)
    est.feature_names_in_ = names
    if fitted.scaler is None:
        return est
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    scaler.mean_, scaler.scale_ = fitted.scaler
    scaler.var_ = scaler.scale_**2
    scaler.n_features_in_, scaler.feature_names_in_ = len(names), names
    scaler.n_samples_seen_ = int((fitted.training or {}).get("rows", 0))
    del est.feature_names_in_  # the scaler's output is an array: the names are the scaler's
    return Pipeline([("standardize", scaler), ("model", est)])


# Models from code: MLflow executes a copy of this file (under another module name)
# to load the model; imported as ``experiments.model`` it only defines the above.
if __name__ != "experiments.model":
    mlflow.models.set_model(MixtureModel())
