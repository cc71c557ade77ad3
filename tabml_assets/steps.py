"""The user's steps: the code a project brings in its own folder, and how tabml loads it.

A project's pipeline.yaml names its steps module (`steps: steps.py`, or a package folder). tabml
imports it from the project folder only, as `tabml_projects.<project>.<module>`, so its classes
stay importable wherever the definitions load (scoring, the Databricks cluster). Everything in it
is optional:

- `build_features(raw: DataFrame) -> DataFrame`: row-level features, run in the `features` asset
  batch by batch; returns the rows with the columns `features.derived` declares (and may replace
  raw ones). Derive the target here when it is not a raw column; leave it null where unknown.
  Batches are made in one background thread, in order, one ahead of the write: the function
  sees one batch at a time and should not rely on running in the main thread.
- `build_preprocessor(features: FeaturesSpec, family: str)`: the fitted preprocessing placed in
  the registered Pipeline before the estimator (`family` is "tree" or "linear").
- any estimator factory the spec names as `estimator: {class: "steps:<name>", params: {...}}`.
- `METRICS: list[Metric]`: custom metrics, usable as `primary_metric` and in the gate.
- `demo_rows(day: date, rows: int) -> DataFrame`: rows for the `demo` data source.
- `load_day(day: date) -> DataFrame`: a custom loader (data source kind `steps`).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tabml_assets.spec import PipelineSpec

PROJECTS_PACKAGE = "tabml_projects"


@dataclass(frozen=True)
class Metric:
    """A custom metric of a steps module.

    `function(y_true, y)` gets the predicted values (regression) or labels (`uses="prediction"`),
    or the positive class's probability (binary) / the class-probability matrix (multiclass)
    (`uses="probability"`).
    """

    name: str
    function: Callable[..., float]
    greater_is_better: bool
    uses: Literal["prediction", "probability"] = "prediction"


@dataclass(frozen=True)
class ProjectSteps:
    """What a project's steps module provides (None where it provides nothing)."""

    module_name: str | None = None
    file: Path | None = None
    build_features: Callable[..., Any] | None = None
    build_preprocessor: Callable[..., Any] | None = None
    metrics: dict[str, Metric] = field(default_factory=dict)
    demo_rows: Callable[..., Any] | None = None
    load_day: Callable[..., Any] | None = None
    module: types.ModuleType | None = field(default=None, compare=False, repr=False)

    def factory(self, name: str) -> Callable[..., Any]:
        """The callable `name` of the steps module (checked when the spec loads)."""
        assert self.module is not None, "check_steps_fit_spec refuses steps: without a module"
        return getattr(self.module, name)


def _spec_error(message: str) -> Exception:
    from tabml_assets.spec import SpecError

    return SpecError(message)


def _project_package(project: str, folder: Path) -> str:
    """`tabml_projects.<project>`, a package whose path is the project folder."""
    root = sys.modules.get(PROJECTS_PACKAGE)
    if root is None:
        root = types.ModuleType(PROJECTS_PACKAGE)
        root.__path__ = []
        sys.modules[PROJECTS_PACKAGE] = root
    name = f"{PROJECTS_PACKAGE}.{project}"
    package = types.ModuleType(name)
    package.__path__ = [str(folder)]
    sys.modules[name] = package
    setattr(root, project, package)
    return name


def _import_from(path: Path, module_name: str) -> types.ModuleType:
    is_package = path.is_dir()
    location = path / "__init__.py" if is_package else path
    spec = importlib.util.spec_from_file_location(
        module_name, location, submodule_search_locations=[str(path)] if is_package else None
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {location}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def load_steps(folder: Path, pipeline: PipelineSpec, pipeline_file: Path) -> ProjectSteps:
    """Import the steps module the spec names, from inside the project folder only."""
    if pipeline.steps is None:
        return ProjectSteps()
    root = folder.resolve()
    path = (root / pipeline.steps).resolve()
    if not path.is_relative_to(root):
        raise _spec_error(
            f"{pipeline_file}: key `steps`: expected a module inside the project folder {root}, "
            f"found {pipeline.steps!r} (resolves to {path}); config never imports code from "
            "outside the project"
        )
    is_module_file = path.is_file() and path.suffix == ".py"
    is_package = path.is_dir() and (path / "__init__.py").is_file()
    if not (is_module_file or is_package):
        raise _spec_error(
            f"{pipeline_file}: key `steps`: expected a .py file or a package folder with an "
            f"__init__.py in {root}, found {pipeline.steps!r} (no such module at {path})"
        )
    package = _project_package(pipeline.name, root)
    relative = path.relative_to(root).with_suffix("") if is_module_file else path.relative_to(root)
    module_name = ".".join([package, *relative.parts])
    try:
        module = _import_from(path, module_name)
    except Exception as exc:
        raise _spec_error(
            f"{pipeline_file}: key `steps`: importing {path} failed: {type(exc).__name__}: {exc}"
        ) from exc
    metrics_value = getattr(module, "METRICS", [])
    if not isinstance(metrics_value, list | tuple):
        raise _spec_error(
            f"{path}: METRICS: expected a list of tabml_assets.steps.Metric, found "
            f"{type(metrics_value).__name__}"
        )
    metrics: dict[str, Metric] = {}
    for index, metric in enumerate(metrics_value):
        if not isinstance(metric, Metric):
            raise _spec_error(
                f"{path}: METRICS[{index}]: expected a tabml_assets.steps.Metric, found "
                f"{type(metric).__name__}"
            )
        if not callable(metric.function):
            raise _spec_error(
                f"{path}: METRICS[{index}] ({metric.name!r}): expected a callable `function`, "
                f"found {type(metric.function).__name__} {metric.function!r}"
            )
        metrics[metric.name] = metric
    hooks: dict[str, Callable[..., Any] | None] = {}
    for hook in ("build_features", "build_preprocessor", "demo_rows", "load_day"):
        value = getattr(module, hook, None)
        if value is not None and not callable(value):
            raise _spec_error(f"{path}: {hook}: expected a function, found {type(value).__name__}")
        hooks[hook] = value
    return ProjectSteps(
        module_name=module_name,
        file=path,
        build_features=hooks["build_features"],
        build_preprocessor=hooks["build_preprocessor"],
        metrics=metrics,
        demo_rows=hooks["demo_rows"],
        load_day=hooks["load_day"],
        module=module,
    )


def check_steps_fit_spec(steps: ProjectSteps, pipeline: PipelineSpec, pipeline_file: Path) -> None:
    """The spec's references into the steps module, and its metric names, resolve."""
    from tabml_assets.spec import STEPS_PREFIX, TASK_METRICS

    estimator = pipeline.estimator.class_name
    if estimator.startswith(STEPS_PREFIX):
        name = estimator.removeprefix(STEPS_PREFIX)
        if steps.module is None:
            raise _spec_error(
                f"{pipeline_file}: key `estimator.class`: {estimator!r} names the project's steps "
                "module, but the spec has no `steps` key"
            )
        value = getattr(steps.module, name, None)
        if value is None or not callable(value):
            raise _spec_error(
                f"{pipeline_file}: key `estimator.class`: expected a callable {name!r} in "
                f"{steps.file}, found {type(value).__name__ if value is not None else 'nothing'}"
            )
    builtins = TASK_METRICS[pipeline.target.task]
    clashes = sorted(set(steps.metrics).intersection(builtins))
    if clashes:
        raise _spec_error(f"{steps.file}: METRICS: {clashes} are built-in metric names; rename them")
    known = [*builtins, *steps.metrics]
    if pipeline.metric not in known:
        raise _spec_error(
            f"{pipeline_file}: key `primary_metric`: expected one of {known} for a "
            f"{pipeline.target.task} target, found {pipeline.metric!r}"
        )
    unknown = [m for m in pipeline.validation.criteria if m not in known]
    if unknown:
        raise _spec_error(
            f"{pipeline_file}: key `validation.criteria`: expected metrics among {known} for a "
            f"{pipeline.target.task} target, found {unknown}"
        )


def metric_higher_is_better(name: str, steps: ProjectSteps) -> bool:
    from tabml_assets.spec import HIGHER_IS_BETTER

    if name in steps.metrics:
        return steps.metrics[name].greater_is_better
    return HIGHER_IS_BETTER[name]
