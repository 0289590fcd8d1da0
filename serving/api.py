"""Request and response models of the HTTP API (FastAPI answers 422 naming the field)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from towerline.core.contracts import VIEW_FEATURES

MAX_K = 1000
ViewName = Literal[tuple(VIEW_FEATURES)]  # type: ignore[valid-type]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetrieveRequest(Strict):
    user_id: int = Field(ge=0, description="The user asking.")
    subject_pin_id: int | None = Field(None, ge=0, description="The pin on screen, if any.")
    k: int = Field(100, ge=1, le=MAX_K, description="Candidates wanted.")
    interests: list[int] | None = Field(
        None, min_length=1, max_length=64, description="Keep only pins with one of these."
    )
    exclude_seen: bool = Field(True, description="Drop pins of the real-time sequence.")
    max_per_interest: int | None = Field(
        None, ge=1, le=MAX_K, description="At most this many pins sharing a first interest."
    )


class Candidate(BaseModel):
    pin_id: int
    score: float


class RetrieveResponse(BaseModel):
    model_version: str
    index_built_at: str
    history: Literal["cached", "missing"]
    context: Literal["subject_pin", "none"]
    candidates: list[Candidate]


class EmbeddingRequest(Strict):
    user_id: int = Field(ge=0)
    subject_pin_id: int | None = Field(None, ge=0)


class EmbeddingResponse(BaseModel):
    model_version: str
    history: Literal["cached", "missing"]
    context: Literal["subject_pin", "none"]
    embedding: list[float]


class FeaturesRequest(Strict):
    view: ViewName = Field(description="One of the five feature views.")
    entities: list[dict[str, int | str]] = Field(
        min_length=1,
        max_length=1000,
        description="Join keys: {user_id} or {pin_id}; user_history_state also takes "
        "model_version (default: the version served).",
    )


class FeatureRow(BaseModel):
    entity: dict[str, int | str]
    found: bool
    features: dict[str, object]
    event_timestamp: str | None
    age_s: float | None


class FeaturesResponse(BaseModel):
    view: str
    rows: list[FeatureRow]
