"""Evaluation metrics as `evaluate` modules shipped inside bortify (no Hub needed).

`evaluate.load("accuracy")` fetches its script from the Hub, which is not reachable everywhere. The modules
here implement the same interface over scikit-learn / scipy and load offline by path::

    >>> from bortify.metrics import load_metric
    >>> load_metric("accuracy").compute(predictions=[0, 1], references=[0, 0])
    {'accuracy': 0.5}

Each module is a package directory ``bortify/metrics/<name>/`` holding ``<name>.py`` (an `evaluate.Metric`
subclass), so editable and regular installs both carry it (it is a package, found by setuptools).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["METRICS", "metric_path", "load_metric", "compute_metrics"]

# The modules shipped with bortify; each one returns {name: value} (pearsonr/spearmanr: one key each). `flips`
# (docs/methods/04-updates.md §4) takes three columns (references, old_predictions, new_predictions) and returns several keys.
METRICS = ("accuracy", "f1", "matthews_correlation", "pearsonr", "spearmanr", "flips")


def metric_path(name: str) -> str:
    """The directory of a shipped metric module (what `evaluate.load` takes)."""
    if name not in METRICS:
        raise ValueError(f"Unknown metric {name!r}; bortify ships {list(METRICS)}.")
    path = Path(__file__).resolve().parent / name
    if not (path / f"{name}.py").is_file():  # a broken install, not a user error
        raise FileNotFoundError(f"Metric module {path / (name + '.py')} is missing from this bortify install.")
    return str(path)


_CACHE: dict[str, object] = {}


def load_metric(name: str):
    """`evaluate.load` on the shipped module (offline: a local path never touches the Hub)."""
    if name not in _CACHE:
        import evaluate

        _CACHE[name] = evaluate.load(metric_path(name))
    return _CACHE[name]


def compute_metrics(names, predictions, references, **kwargs) -> dict[str, float]:
    """Compute several shipped metrics at once; `kwargs` go to every metric that accepts them (e.g. f1's
    `average`). Returns a flat {metric: float} mapping."""
    out: dict[str, float] = {}
    for name in names:
        metric = load_metric(name)
        extra = {k: v for k, v in kwargs.items() if name == "f1" and k in ("average", "pos_label")}
        out.update({k: float(v) for k, v in metric.compute(predictions=predictions, references=references, **extra).items()})
    return out
