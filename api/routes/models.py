"""GET /generators, GET /discriminators (checkpoints and the active one) and PUT .../active (switch at run time);
GET /ranker and POST /ranker/reload (the selection policy `ranker`'s artifact, reloadable like a checkpoint)."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool

from api.schemas import ModelsResponse, RankerResponse, SwitchRequest
from api.state import ERR, AppState, State
from core.errors import BackendError

router = APIRouter(tags=["models"])

SWITCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {**ERR, "description": "unknown checkpoint name"},
    503: {**ERR, "description": "the checkpoint failed to load; the previous one stays active"},
}


@router.get("/generators", response_model=ModelsResponse, summary="Generator checkpoints")
async def generators(s: State) -> ModelsResponse:
    return _models(s, "generator")


@router.put("/generators/active", response_model=ModelsResponse, responses=SWITCH_RESPONSES,
            summary="Switch the active generator checkpoint at run time")
async def switch_generator(req: SwitchRequest, s: State) -> ModelsResponse:
    return await _switch(s, "generator", req.name)


@router.get("/discriminators", response_model=ModelsResponse, summary="Discriminator checkpoints")
async def discriminators(s: State) -> ModelsResponse:
    return _models(s, "discriminator")


@router.put("/discriminators/active", response_model=ModelsResponse, responses=SWITCH_RESPONSES,
            summary="Switch the active discriminator checkpoint at run time")
async def switch_discriminator(req: SwitchRequest, s: State) -> ModelsResponse:
    return await _switch(s, "discriminator", req.name)


def _ranker_state(s: AppState) -> RankerResponse:
    """This service's Planner's ranker (each Planner owns its own)."""
    st = s.planner.ranker_state
    art = st.artifact
    return RankerResponse(loaded=art is not None, path=st.path, prior_mode=art and art.prior_mode,
                          data_hash=art and art.data_hash, cv_metrics=_jsonable(art.cv_metrics) if art else {},
                          meta=_jsonable(art.meta) if art else {}, auto=_jsonable(st.auto_report()))


@router.get("/ranker", response_model=RankerResponse, summary="The active ranker artifact")
async def ranker_state(s: State) -> RankerResponse:
    return _ranker_state(s)


@router.post("/ranker/reload", response_model=RankerResponse,
             responses={422: {**ERR, "description": "no ranker configured, or the file fails to load (the "
                              "previous artifact stays active)"}},
             summary="Reload the configured ranker artifact at run time (e.g. after a refit)")
async def ranker_reload(s: State) -> RankerResponse:
    await run_in_threadpool(s.planner.reload_ranker)
    return _ranker_state(s)


def _slots(s: AppState, role: str):
    return s.planner.generators if role == "generator" else s.planner.discriminators


def _models(s: AppState, role: str) -> ModelsResponse:
    slots = _slots(s, role)
    return ModelsResponse(role=role, active=slots.active, models=[_jsonable(x) for x in slots.list()])


async def _switch(s: AppState, role: str, name: str) -> ModelsResponse:
    try:
        await run_in_threadpool(_slots(s, role).switch, name)
    except Exception as e:  # noqa: BLE001 - a load fails however the backend fails; unknown name -> 422, fails to load -> 503, the old one stays active
        raise switch_error(e) from None
    return _models(s, role)


def switch_error(e: Exception) -> HTTPException:
    if isinstance(e, BackendError):
        return HTTPException(503, f"checkpoint switch failed, the previous one stays active: {e}")
    return HTTPException(422, str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))


def _jsonable(x: Any) -> dict[str, Any]:
    if hasattr(x, "model_dump"):
        return x.model_dump(mode="json")
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {k: _jsonable_value(v) for k, v in dataclasses.asdict(x).items()}
    return {k: _jsonable_value(v) for k, v in dict(x).items()}


def _jsonable_value(v: Any) -> Any:
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable_value(x) for x in v]
    if hasattr(v, "model_dump"):
        return v.model_dump(mode="json")
    return str(v)
