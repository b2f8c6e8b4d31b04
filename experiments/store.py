"""The tracking store: its address, whether it can take runs, and the experiment.

One place that knows the store; ``tracking``, ``fallback``, ``reap`` and ``sweep`` use
it (so none of them imports another for it):

- ``resolve_uri``: ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else
  ``sqlite:///<cwd>/mlflow.db``.
- ``check``: a store that cannot take a run stops it before any compute, with one
  line naming the store and what to do (``TrackingUnavailable``): a server that does not
  answer, an sqlite file whose folder is missing or not writable, a file that is not
  an sqlite database, an unknown scheme.
- ``prepare``: the store created and migrated once, under a file lock (local
  stores), then the experiment got or created under the same lock, so any number of
  first runs and sweeps started together on a fresh store all succeed. A deleted
  experiment is named with the command that restores it.

Nothing happens at import: ``mlflow_defaults`` sets MLflow's HTTP retries and
timeout (unless set already) when a run first needs the store.
"""

import contextlib
import fcntl
import hashlib
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# What MLflow opens (scheme before any "+driver"); anything else is refused up front.
SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "file")
SQLITE_MAGIC = b"SQLite format 3\x00"
# A tracking server that went away: give up after ~7 s of retries (MLflow's default
# is minutes), then keep the results locally; a server that hangs: 10 s per request.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                 "MLFLOW_DISABLE_TELEMETRY": "true"}
OTHER_STORE = "point tracking.uri (or MLFLOW_TRACKING_URI) at another store, or use tracking=none"


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot take a run (at start), or failed during one."""


def resolve_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def tracking_uri(cfg) -> str:
    """The store a run of ``cfg`` logs to (``resolve_uri(cfg.tracking.uri)``)."""
    return resolve_uri(cfg.tracking.uri)


def mlflow_defaults() -> None:
    """MLflow's HTTP retries and timeout, and telemetry off, unless set already."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


@contextlib.contextmanager
def retries(count: int | None):
    """MLflow's HTTP retries set to ``count`` inside the block (None: unchanged), e.g.
    0 for a call to a store already known to be down."""
    key = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
    saved = os.environ.get(key)
    if count is not None:
        os.environ[key] = str(count)
    try:
        yield
    finally:
        if count is not None and saved is None:
            del os.environ[key]
        elif count is not None:
            os.environ[key] = saved


def sqlite_path(uri: str) -> Path | None:
    """The file of an ``sqlite:///`` store (None for others and in-memory sqlite)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?")[0]
    return Path(path) if path and path != ":memory:" else None


def check(uri: str, timeout: float = 5.0) -> None:
    """Raise ``TrackingUnavailable`` (one line: the store, what is wrong, what to do) when
    ``uri`` cannot take a run. Fast: one ``/health`` request, or a look at the file."""
    scheme = urllib.parse.urlparse(uri).scheme.split("+")[0]
    if not scheme and not (os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() == "true"
                           and Path(uri).is_dir()):
        where = Path(uri).expanduser().resolve()
        sqlite = where if where.suffix in (".db", ".sqlite", ".sqlite3") else where / "mlflow.db"
        raise TrackingUnavailable(
            f"tracking store {uri}: a bare path is not a store URI (MLflow would take it for "
            f"its deprecated file store); for an sqlite store write sqlite:///{sqlite}")
    if scheme and scheme not in SCHEMES:  # a plain path: MLflow's file store decides
        raise TrackingUnavailable(
            f"tracking store {uri}: unknown scheme {scheme!r} (MLflow opens "
            f"{', '.join(s + '://' for s in SCHEMES)}); {OTHER_STORE}")
    if scheme in ("http", "https"):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
        except (OSError, urllib.error.URLError) as err:
            reason = getattr(err, "reason", err)
            raise TrackingUnavailable(f"tracking server {uri} is unreachable ({reason}); start it, "
                             f"or {OTHER_STORE}") from None
    elif (path := sqlite_path(uri)) is not None:
        _check_sqlite(uri, path)


def _check_sqlite(uri: str, path: Path) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise TrackingUnavailable(f"tracking store {uri}: folder {folder} does not exist; create it, "
                         f"or {OTHER_STORE}")
    if path.is_dir():
        raise TrackingUnavailable(f"tracking store {uri}: {path} is a folder, not an sqlite file; "
                         f"{OTHER_STORE}")
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:
            if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                raise TrackingUnavailable(
                    f"tracking store {uri}: {path} is not an sqlite database (corrupt, or "
                    f"another kind of file); move it aside to start a new store, or {OTHER_STORE}")
    try:  # a folder we cannot write in fails here, not after minutes in SQLAlchemy
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise TrackingUnavailable(f"tracking store {uri}: cannot write in {folder} "
                                  f"({err.strerror}); {OTHER_STORE}") from None


def lock_path(uri: str) -> Path:
    """What ``store_lock`` locks: an sqlite file's folder (no file of its own to
    leave behind); for other stores reached from this host, a file per URI."""
    path = sqlite_path(uri)
    if path is not None:
        return path.parent
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"mogjax-store-{digest}.lock"


@contextlib.contextmanager
def store_lock(uri: str):
    """An exclusive lock on the store for this host's processes (none for servers:
    a server serialises its own schema changes)."""
    if uri.startswith(("http://", "https://")):
        yield
        return
    path = lock_path(uri)
    fd = os.open(path, os.O_RDONLY) if path.is_dir() else os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def prepare(uri: str, experiment_name: str) -> str:
    """Check the store, create and migrate it once (under ``store_lock``), point MLflow
    at it and get or create the experiment; returns the experiment id."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow_defaults()
    check(uri)
    mlflow.set_tracking_uri(uri)
    try:
        with store_lock(uri):
            return experiment_id(uri, experiment_name)
    except MlflowException as err:
        raise TrackingUnavailable(f"tracking store {uri} cannot be opened "
                         f"({first_line(err)}); {OTHER_STORE}") from None
    except TrackingUnavailable:
        raise
    except Exception as err:  # a database error: SQLAlchemy's, the driver's
        raise TrackingUnavailable(f"tracking store {uri} failed ({type(err).__name__}: "
                         f"{first_line(err)}); {OTHER_STORE}") from None


def experiment_id(uri: str, name: str) -> str:
    """Get or create experiment ``name`` (tagged for the classic runs view); a
    deleted one is a ``TrackingUnavailable`` that says how to restore it."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, tags=dict([EXPERIMENT_KIND]))
        except MlflowException:  # another host created it meanwhile (a server)
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise TrackingUnavailable(
            f"experiment {name!r} in tracking store {uri} is deleted; restore it with "
            f"`MLFLOW_TRACKING_URI={uri} mlflow experiments restore --experiment-id "
            f"{exp.experiment_id}`, or pick another name: tracking.experiment_name=NAME")
    if exp.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
    return exp.experiment_id


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an error's text (MLflow's and SQLAlchemy's run to pages)."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__
