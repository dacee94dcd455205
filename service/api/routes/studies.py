"""Studies and their trials: what users and the CLI call (admin to change, reader to read)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from contract.wire import Strict
from service.api.deps import Admin, Reader, ServiceDep, StudyName, TrialId
from service.schemas import NAME_PATTERN, StudyCreate, StudyExport, StudyInfo, TrialInfo, TrialPage

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` inlined (the import's body, read by hand after
    the token check, is declared with it)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(x: Any) -> Any:
        if isinstance(x, dict):
            ref = x.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in x.items()}
        if isinstance(x, list):
            return [inline(v) for v in x]
        return x

    return inline(schema)


@router.post("/studies", status_code=201, dependencies=[Admin])
def create_study(spec: StudyCreate, service: ServiceDep) -> StudyInfo:
    """Create a study; everything the schema cannot check (the training options, the pruner's
    options, the task, the prior) is checked before anything is stored (422 naming the field)."""
    return service.studies.create_study(spec)  # type: ignore[return-value]


@router.get("/studies", dependencies=[Reader])
def list_studies(service: ServiceDep) -> list[StudyInfo]:
    return service.studies.list_studies()  # type: ignore[return-value]


@router.get("/studies/{name}", dependencies=[Reader])
def get_study(name: StudyName, service: ServiceDep) -> StudyInfo:
    return service.studies.get_study(name)  # type: ignore[return-value]


@router.post("/studies/{name}/archive", dependencies=[Admin])
def archive_study(name: StudyName, service: ServiceDep) -> StudyInfo:
    """Stop handing out trials (claims answer ``done``); the trials stay."""
    return service.studies.archive_study(name)  # type: ignore[return-value]


class AdoptRequest(Strict):
    #: the Optuna study to carry the study on (default: one of the study's own name)
    optuna_study: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None


@router.post("/studies/{name}/adopt", dependencies=[Admin])
def adopt_study(name: StudyName, body: AdoptRequest, service: ServiceDep) -> StudyInfo:
    """Re-attach an orphaned study (its Optuna study deleted or renamed, e.g. in
    optuna-dashboard) to the Optuna study ``optuna_study``, under that name."""
    return service.studies.adopt_study(name, body.optuna_study)  # type: ignore[return-value]


@router.delete("/studies/{name}", status_code=204, dependencies=[Admin])
def delete_study(name: StudyName, service: ServiceDep) -> None:
    service.studies.delete_study(name)


@router.get("/studies/{name}/trials", dependencies=[Reader])
def list_trials(
    name: StudyName,
    service: ServiceDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> TrialPage:
    return service.studies.list_trials(name, offset, limit)  # type: ignore[return-value]


@router.get("/trials/{trial_id}", dependencies=[Reader])
def get_trial(trial_id: TrialId, service: ServiceDep) -> TrialInfo:
    return service.studies.get_trial(trial_id)  # type: ignore[return-value]


@router.get(
    "/studies/{name}/prior.png",
    dependencies=[Reader],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def prior_png(name: StudyName, service: ServiceDep) -> Response:
    """The study's prior map: ξ_C over two initialization hyperparameters, the contour
    ξ_C = T/c and every trial coloured by its outcome."""
    return Response(service.studies.prior_map(name).png, media_type="image/png")


@router.get(
    "/studies/{name}/export",
    dependencies=[Reader],
    response_model=None,
    responses={200: {"model": StudyExport, "description": "the study and every trial"}},
)
def export_study(name: StudyName, service: ServiceDep) -> JSONResponse:
    """The study's specification and every trial, as JSON (``isotune study export``); the body
    ``POST /studies/import`` takes. Sent as built (a large study is not validated again)."""
    return JSONResponse(service.studies.export_study(name))


@router.post(
    "/studies/import",
    status_code=201,
    dependencies=[Admin],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline_schema(StudyExport)}},
        }
    },
)
async def import_study(
    request: Request,
    service: ServiceDep,
    name: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
) -> StudyInfo:
    """Create a study from an export, under ``name`` (default: the exported name). The body
    (up to 256 MB) is read only after the token is checked, and parsed off the event loop."""
    body = await request.body()

    def parse() -> StudyExport:
        try:
            return StudyExport.model_validate_json(body)
        except ValidationError as e:
            errors = []
            for err in e.errors():
                err = {**err, "loc": ("body", *err["loc"])}
                if isinstance(err.get("input"), bytes):  # a body that is not UTF-8 JSON
                    err["input"] = err["input"][:200].decode("utf-8", "replace")
                errors.append(err)
            raise RequestValidationError(errors) from None

    data = await run_in_threadpool(parse)
    return await run_in_threadpool(service.studies.import_study, data, name)  # type: ignore[return-value]
