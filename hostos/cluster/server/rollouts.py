"""The rollout endpoints (admin): start, status, pause, resume, abort, rollback.

`POST /v1/rollouts` starts one; `GET /v1/rollouts[/<role>]` shows the current ones with a
count of nodes per state and the last actions with their reasons; `POST
/v1/rollouts/<role>/{pause,resume,abort,rollback}` are the operator's commands.  The work is
the controller's (`controller.start_rollout`, `controller.command`): these routes check the
caller and shape the answers.  A command the rollout's state does not allow is 409
`conflict`; a bad spec 400 `bad_request`; an unknown role, image or rollout 404.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from hostos.cluster.auth import Scope as Access
from hostos.cluster.rollout.plan import NodeState, RolloutError
from hostos.cluster.server import controller
from hostos.cluster.server.app import Who, error_response
from hostos.cluster.server.nodeapi import require
from hostos.cluster.store.fleet import FleetStore, NotFound


class RolloutRequest(BaseModel):
    role: str
    image: str = Field(description="the target host image (registered)")
    previous_image: str | None = Field(
        None, description="the image to roll back to; default: what the role's nodes run"
    )
    max_unavailable: int | str | None = Field(
        None, description="nodes out at once: N or 'P%' (default: the role's rollout, else 1)"
    )
    canary: int | None = Field(
        None, description="nodes updated first, alone (default: the role's rollout, else 0)"
    )
    health_timeout: float | None = Field(
        None,
        description="seconds from a grant until a node not done has failed "
        "(default: the role's rollout, else 600)",
    )
    auto_rollback: bool | None = Field(
        None, description="on a failure, roll back (default: the role's rollout, else off)"
    )
    drain: bool = Field(
        True, description="false: reboot without the role's drain (running jobs die)"
    )


def summary(stored: controller.Stored) -> dict[str, Any]:
    """The stored rollout with a count of nodes per state and how many hold slots."""
    counts = Counter(p.state.value for p in stored.rollout.nodes.values())
    return {
        **stored.to_json(),
        "counts": {s.value: counts.get(s.value, 0) for s in NodeState},
        "holding": sum(1 for p in stored.rollout.nodes.values() if p.slot),
        "total": len(stored.rollout.nodes),
    }


def add_rollout_routes(app: FastAPI, state: FleetStore) -> None:
    async def conflict(_: Request, exc: Exception) -> JSONResponse:
        return error_response(409, "conflict", str(exc))

    async def bad_spec(_: Request, exc: Exception) -> JSONResponse:
        return error_response(400, "bad_request", str(exc))

    app.add_exception_handler(controller.Conflict, conflict)
    app.add_exception_handler(RolloutError, bad_spec)

    @app.post("/v1/rollouts")
    def start(body: RolloutRequest, who: Who) -> dict[str, Any]:
        """Start rolling role's nodes onto image, a few reboots at a time."""
        require(who, Access.admin)
        ask = controller.Ask(
            body.role,
            body.image,
            body.previous_image or "",
            max_unavailable=body.max_unavailable,
            canary=body.canary,
            health_timeout=body.health_timeout,
            auto_rollback=body.auto_rollback,
            drain=body.drain,
        )
        return summary(controller.start_asked(state, ask))

    @app.get("/v1/rollouts")
    def rollouts(who: Who) -> list[dict[str, Any]]:
        """Every role's current rollout (finished ones too, until the next starts)."""
        require(who, Access.admin)
        return [summary(s) for s in controller.current(state.kv)]

    @app.get("/v1/rollouts/{role}")
    def status(role: str, who: Who) -> dict[str, Any]:
        require(who, Access.admin)
        found = controller.read(state.kv, role)
        if found is None:
            raise NotFound(f"no rollout of role '{role}'")
        return summary(found[0])

    for name in controller.COMMANDS:
        _command_route(app, state, name)


def _command_route(app: FastAPI, state: FleetStore, name: str) -> None:
    def run(role: str, who: Who) -> dict[str, Any]:
        require(who, Access.admin)
        return summary(controller.command(state, role, name))

    run.__doc__ = f"{name.capitalize()} the role's rollout."
    app.post(f"/v1/rollouts/{{role}}/{name}", name=f"rollout_{name}")(run)
