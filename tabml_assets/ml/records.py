"""The typed records the training assets pass to each other, stored as JSON by the IO manager.

`trained_model` -> `TrainedModel`, `evaluation_report` -> `EvaluationRecord`, `champion_model`
-> `ChampionRecord`. Each is a frozen pydantic model: the IO manager writes `model_dump()` as
`<partition>.json` and validates it back into the class the consuming asset annotates, so a
record written by another version of tabml fails on load with the field that does not fit.
The JSON keeps the shape tabml wrote before these classes existed (`challenger.metrics`,
`gate[].passed`, ...), so records already on disk load unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pydantic import BaseModel, ConfigDict, computed_field

from tabml_assets.ml.evaluation import GateResult

__all__ = [
    "BaselineScore",
    "ChampionRecord",
    "EvaluationRecord",
    "ModelVersionRef",
    "ScoredModel",
    "TrainedModel",
    "TrainingRows",
]


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version: what scoring loads and what metadata records."""

    name: str
    version: str
    run_id: str | None  # None for a version registered without a run

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def as_dict(self) -> dict[str, str | None]:
        return {**asdict(self), "uri": self.uri}


class Record(BaseModel):
    """A record between assets: immutable; derived keys in the JSON (`uri`) are ignored on load."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class TrainingRows(Record):
    """Row counts of one training: the window read, its labelled rows and the split sizes."""

    window: int
    labelled: int
    train: int
    validation: int
    test: int
    fitted: int  # the rows the model learned from (train, or train + validation)


class TrainedModel(Record):
    """What `trained_model` hands on: the registered version, its window, rows and metrics."""

    model: ModelVersionRef
    window_start: str
    window_end: str
    rows: TrainingRows
    train_metrics: dict[str, float]
    validation_metrics: dict[str, float]

    @property
    def training_window(self) -> tuple[str, str]:
        return self.window_start, self.window_end


class ScoredModel(Record):
    """A registered version and its metrics on the test split."""

    name: str
    version: str
    run_id: str | None
    metrics: dict[str, float]

    @classmethod
    def of(cls, ref: ModelVersionRef, metrics: dict[str, float]) -> ScoredModel:
        return cls(name=ref.name, version=ref.version, run_id=ref.run_id, metrics=metrics)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def uri(self) -> str:
        """Written for readers of the JSON; derived from name and version."""
        return self.ref.uri

    @property
    def ref(self) -> ModelVersionRef:
        return ModelVersionRef(self.name, self.version, self.run_id)


class BaselineScore(Record):
    """The naive baseline (which kind, e.g. the train mean) and its test metrics."""

    kind: str
    metrics: dict[str, float]


class EvaluationRecord(Record):
    """What `evaluation_report` hands on: every model's test metrics and the promotion gate."""

    challenger: ScoredModel
    champion: ScoredModel | None
    baseline: BaselineScore
    test_rows: int
    run_mode: str  # validation.run_mode: enabled, dry_run or disabled
    gate: tuple[GateResult, ...]
    training_window: tuple[str, str]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def gate_passed(self) -> bool:
        return all(result.passed for result in self.gate)

    @property
    def failed(self) -> list[GateResult]:
        return [result for result in self.gate if not result.passed]

    def verdict(self) -> str:
        """The gate's verdict on the challenger, in one line for tags and the history."""
        if self.run_mode == "disabled":
            return "not gated (validation.run_mode: disabled)"
        failed = ", ".join(result.check_name for result in self.failed)
        if failed:
            return f"failed {failed} (dry_run: promoted anyway)" if self.run_mode == "dry_run" else f"failed {failed}"
        checks = ", ".join(result.check_name for result in self.gate)
        return f"passed {checks}" if checks else "passed (no criteria)"

    def window_text(self) -> str:
        return f"{self.training_window[0]} .. {self.training_window[1]}"


class ChampionRecord(Record):
    """What `champion_model` records: the champion after the step and how the decision went."""

    name: str
    version: str | None  # the champion after this step; None when there is none
    run_id: str | None
    challenger_version: str
    previous_version: str | None
    promoted: bool
    run_mode: str
    gate: str  # EvaluationRecord.verdict()
    gate_warnings: tuple[str, ...]  # descriptions of the failed gate criteria
    shadow_rule: str | None  # the shadow rule's verdict, where one decided
