"""Request and response models of the HTTP API (pydantic): what clients send and get back.

The Plan itself (`core.model.Plan`) is the response of POST /plan and GET /plans/{id}; this module holds
the request bodies and the small responses around it. These models check types and shapes only (a string, a
positive integer, hard ceilings); the rules of a plan request (blank question, configured limits, known
policy/pair/router, `pair` and `router` together) are `Planner.validate`'s (`planner.request`), answered with
422 as well. The OpenAPI document still lists the configured bounds and choices (`api.limits`, `_PolicyEnum`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from planner.select import POLICIES, policy_names


class _PolicyEnum:
    """JSON schema of a policy name: an enum of the registered policies, read when the schema is built
    (so a policy registered at startup is in the OpenAPI document and accepted, with no edit here)."""

    def __get_pydantic_json_schema__(self, cs: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        js = handler(cs)
        js["enum"] = policy_names()
        js["description"] = "; ".join(f"`{p}`: {POLICIES.info(p).summary}" for p in policy_names())
        return js


# A registered selection policy (`planner.select.POLICIES`); anything else is a 422 listing the choices
# (`Planner.validate`).
PolicyName = Annotated[str, Field(max_length=64), _PolicyEnum()]

# Hard ceilings, whatever the configuration says (the configured limits are usually lower).
MAX_QUESTION_CHARS = 100_000
MAX_SQL_CHARS = 1_000_000
MAX_N = 256


class _Req(BaseModel):
    # NaN and Infinity (which Python's JSON decoder accepts) are no number a request may carry: 422
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="after")
    def _encodable(self):
        """Every string must be encodable as UTF-8 (JSON allows lone surrogates like "\\ud800"; they are refused
        here with 422 rather than failing later when a response echoes them)."""
        for name in type(self).model_fields:
            v = getattr(self, name)
            if isinstance(v, str):
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError(f"{name}: not valid Unicode text (a lone surrogate)") from None
        return self


class PlanRequest(_Req):
    """Plan one question: generate candidates, check them, judge them, choose one."""

    question: str = Field(..., min_length=1, max_length=MAX_QUESTION_CHARS,
                          description="the natural-language question", examples=["How many singers are older than 30?"])
    db_id: str = Field(..., min_length=1, max_length=255, description="a registered database id (see GET /databases)",
                       examples=["demo"])
    evidence: str | None = Field(None, max_length=MAX_QUESTION_CHARS, description="external knowledge / hints (BIRD style)")
    n: int | None = Field(None, ge=1, le=MAX_N, description="candidates to generate (default from config; at most limits.n_max)")
    policy: PolicyName | None = Field(None, description="selection policy (default from config)")
    pair: str | None = Field(None, max_length=255, description="force one generator/discriminator pair")
    router: str | None = Field(None, max_length=255, description="route with this router instead of the configured one")
    execute: bool = Field(False, description="also return a bounded preview of the chosen SQL's rows")
    deadline_s: float | None = Field(None, gt=0, le=86_400, description="per-request deadline (at most limits.max_deadline_s)")
    abstain_below: float | None = Field(
        None, ge=0.0, le=1.0, description="abstain threshold (default: defaults.abstain_below): a plan whose "
        "`confidence` is below it gets status `low_confidence` and still shows its best candidate")


class CheckRequest(_Req):
    """Check one SQL against a database: the same verdict as `sqlarbiter check`."""

    db_id: str = Field(..., min_length=1, max_length=255, examples=["demo"])
    sql: str = Field(..., min_length=1, max_length=MAX_SQL_CHARS, examples=["SELECT count(*) FROM singer WHERE age > 30"])
    dialect: Literal["sqlite", "duckdb", "postgres", "mysql"] | None = Field(
        None, description="the dialect the SQL is written in; default: the database's own (its engine's)")


class RankerResponse(BaseModel):
    """The active ranker artifact (policy `ranker`, calibrated plan confidences)."""

    loaded: bool
    path: str | None = None
    prior_mode: str | None = None
    data_hash: str | None = None
    cv_metrics: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)  # what the artifact was trained on (pools, kinds)
    auto: dict[str, Any] = Field(default_factory=dict)  # policy "auto": per pair, the policy it uses and why


class SwitchRequest(_Req):
    """Make another configured checkpoint the active one of its role."""

    name: str = Field(..., min_length=1, max_length=255)


class FeedbackRequest(_Req):
    """A correctness label for a plan and/or the SQL that would have been right."""

    plan_id: str = Field(..., min_length=1, max_length=64)
    correct: bool | None = None
    corrected_sql: str | None = Field(None, min_length=1, max_length=MAX_SQL_CHARS)

    @model_validator(mode="after")
    def _something(self) -> FeedbackRequest:
        if self.correct is None and self.corrected_sql is None:
            raise ValueError("give `correct` and/or `corrected_sql`")
        return self


class FeedbackResponse(BaseModel):
    id: int
    plan_id: str
    correct: bool | None
    corrected_sql: str | None
    label_source: Literal["client", "corrected_sql_execution", "none"] = Field(
        description="where `correct` comes from: the client, or comparing the execution results of the chosen "
        "and corrected SQL; `none` when no label could be derived")
    forwarded_to_router: str | None = Field(None, description="the router whose update() received the label")
    duplicate: bool = Field(False, description="this request repeated an earlier feedback (same Idempotency-Key "
                            "for the plan, or without one the same content): acknowledged with the stored "
                            "feedback, not stored or forwarded again")


class ErrorResponse(BaseModel):
    detail: Any = Field(description="what went wrong (a message, or a list of validation errors)")


class ModelsResponse(BaseModel):
    role: str
    active: str
    models: list[dict[str, Any]]


class DatabaseEntry(BaseModel):
    db_id: str
    kind: str  # sqlite | duckdb | postgresql | mysql
    dialect: str = "sqlite"  # the SQL dialect candidates are written in (sqlite, duckdb, postgres, mysql)
    n_tables: int | None = None


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    ready: bool
    store: bool
    databases: int
    models_loaded: dict[str, bool]
    active: dict[str, str]
    in_flight: int
    version: str
