"""The champion's life as records: who became champion, when, why, and whether a rollback may
restore a version. Pure functions; MLflow and Dagster I/O live in automation/rollback.py and
assets/evaluation.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

PROMOTION = "promotion"
ROLLBACK = "rollback"
# MLflow tag on an audit run: what it records (tag values below are prefixed `tabml.change.`).
AUDIT_KIND = "champion_change"
CHANGE_TAG_PREFIX = "tabml.change."
# Model-version tags the lifecycle writes (validation_status is the gate's, set by evaluation).
VALIDATION_STATUS = "validation_status"
PROMOTED_AT = "tabml.promoted_at"
PROMOTION_GATE = "tabml.promotion_gate"
PREVIOUS_CHAMPION = "tabml.previous_champion"
ROLLED_BACK_AT = "tabml.rolled_back_at"
ROLLED_BACK_REASON = "tabml.rolled_back_reason"
RESTORED_AT = "tabml.restored_at"
RESTORED_BY = "tabml.restored_by"
RESTORE_REASON = "tabml.restore_reason"


@dataclass(frozen=True)
class ChampionChange:
    """One move of the `champion` alias, as its audit record in MLflow holds it."""

    action: str  # PROMOTION or ROLLBACK
    version: str
    previous_version: str | None
    at: str  # ISO timestamp, UTC
    reason: str
    requested_by: str
    gate: str  # the gate verdict of `version` (passed, failed, not_validated, ...)
    training_window: str
    forced: bool = False
    dagster_run_id: str = ""
    days_to_rescore: tuple[str, ...] = field(default_factory=tuple)

    def as_tags(self) -> dict[str, str]:
        """Flat MLflow tags (searchable, no artifact download to read the history back)."""
        values = asdict(self)
        values["previous_version"] = self.previous_version or ""
        values["forced"] = str(self.forced).lower()
        values["days_to_rescore"] = ",".join(self.days_to_rescore)
        return {f"{CHANGE_TAG_PREFIX}{k}": str(v)[:4000] for k, v in values.items()}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> ChampionChange:
        def get(name: str) -> str:
            return tags.get(f"{CHANGE_TAG_PREFIX}{name}", "")

        return cls(
            action=get("action"),
            version=get("version"),
            previous_version=get("previous_version") or None,
            at=get("at"),
            reason=get("reason"),
            requested_by=get("requested_by"),
            gate=get("gate"),
            training_window=get("training_window"),
            forced=get("forced") == "true",
            dagster_run_id=get("dagster_run_id"),
            days_to_rescore=tuple(d for d in get("days_to_rescore").split(",") if d),
        )


@dataclass(frozen=True)
class ChampionTenure:
    """One stretch of time a version was champion: a row of the champion history."""

    version: str
    since: str
    until: str | None  # None: champion now
    how: str  # "promotion: ..." or "rollback: <reason>"
    requested_by: str
    gate: str
    training_window: str


def champion_tenures(changes: Sequence[ChampionChange]) -> list[ChampionTenure]:
    """The history of champions, oldest first: each change opens a tenure and closes the last."""
    ordered = sorted(changes, key=lambda c: c.at)
    tenures = []
    for index, change in enumerate(ordered):
        following = ordered[index + 1] if index + 1 < len(ordered) else None
        how = f"{change.action}: {change.reason}" if change.reason else change.action
        if change.forced:
            how += " (forced)"
        tenures.append(
            ChampionTenure(
                version=change.version,
                since=change.at,
                until=following.at if following else None,
                how=how,
                requested_by=change.requested_by,
                gate=change.gate,
                training_window=change.training_window,
            )
        )
    return tenures


def markdown_cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def short_time(iso: str) -> str:
    """`2026-03-06T09:15:02+00:00` -> `2026-03-06 09:15 UTC`: what a history row needs."""
    return f"{iso[:16].replace('T', ' ')} UTC" if len(iso) >= 16 else iso


def history_markdown(tenures: Sequence[ChampionTenure]) -> str:
    """The champion history as a markdown table, newest first (what the UI shows)."""
    if not tenures:
        return "_no champion yet_"
    lines = [
        "| version | from | to | how | by | gate | training window |",
        "|---|---|---|---|---|---|---|",
    ]
    for tenure in reversed(tenures):
        cells = [
            f"v{tenure.version}", short_time(tenure.since),
            short_time(tenure.until) if tenure.until else "now (champion)", tenure.how,
            tenure.requested_by, tenure.gate, tenure.training_window,
        ]
        lines.append("| " + " | ".join(markdown_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def was_champion(version: str, changes: Sequence[ChampionChange]) -> bool:
    return any(change.version == version for change in changes)


@dataclass(frozen=True)
class RollbackTarget:
    """What the registry and the audit records say about the version a rollback would restore."""

    model_name: str
    version: str
    exists: bool
    validation_status: str | None  # the gate's tag; None when the version was never evaluated
    was_champion: bool


def rollback_refusal(target: RollbackTarget, current: str | None, force: bool) -> str | None:
    """Why a rollback to `target` must not happen, or None when it may.

    Only a version that exists and is not champion now can be restored. Without `force`, it
    must have passed the gate and have been champion before; `force` overrides those two only.
    """
    where = f"rollback of {target.model_name} to version {target.version} refused"
    stays = f"@champion stays at version {current}" if current else "there is no @champion"
    if not target.exists:
        return f"{where}: the registered model has no version {target.version}; {stays}"
    if current == target.version:
        return f"{where}: version {target.version} is already champion; nothing to roll back"
    if force:
        return None
    if target.validation_status != "passed":
        status = target.validation_status or "never evaluated"
        return (
            f"{where}: version {target.version} never passed the promotion gate "
            f"(validation_status: {status}); set force: true to restore it anyway; {stays}"
        )
    if not target.was_champion:
        return (
            f"{where}: version {target.version} was never champion (no promotion or rollback "
            f"in the audit records names it); set force: true to restore it anyway; {stays}"
        )
    return None


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
