"""Tools of an agent: ``/v1/convai/agents/{agent_id}/tools`` CRUD.

A tool's name is unique within its agent (409 otherwise); ``parameters`` is a Draft 2020-12 JSON
Schema of an object; a ``webhook`` tool needs ``config.url`` (http or https). Header values in
``config.headers`` are write-only: responses show them as ``********``, and a PATCH that sends
``********`` back keeps the stored value.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import api.agent_service as agent_service
from api.deps import SessionDep, error_responses, flush_or_conflict, not_found
from models import AgentTool
from schemas import ToolCreate, ToolListResponse, ToolResponse, ToolUpdate, check_tool_update

router = APIRouter(prefix="/convai/agents/{agent_id}/tools", tags=["tools"])


async def _get_tool_or_404(session: AsyncSession, agent_id: str, tool_id: str) -> AgentTool:
    await agent_service.get_agent_or_404(session, agent_id)
    tool = await session.scalar(
        select(AgentTool).where(AgentTool.id == tool_id, AgentTool.agent_id == agent_id)
    )
    if tool is None:
        raise not_found("tool", tool_id)
    return tool


async def _save(session: AsyncSession, tool: AgentTool, change: str) -> ToolResponse:
    await flush_or_conflict(session, f"the agent already has a tool named {tool.name!r}")
    await session.refresh(tool)
    await agent_service.record_change(session, tool.agent_id, f"{change} tool {tool.name}")
    return agent_service.to_tool_response(tool)


@router.get(
    "", response_model=ToolListResponse, responses=error_responses(404), summary="List an agent's tools"
)
async def list_tools(agent_id: str, session: SessionDep) -> ToolListResponse:
    await agent_service.get_agent_or_404(session, agent_id)
    tools = (
        await session.scalars(
            select(AgentTool).where(AgentTool.agent_id == agent_id).order_by(AgentTool.name)
        )
    ).all()
    return ToolListResponse(tools=[agent_service.to_tool_response(t) for t in tools])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ToolResponse,
    responses=error_responses(404, 409, 413),
    summary="Add a tool to an agent",
)
async def create_tool(agent_id: str, body: ToolCreate, session: SessionDep) -> ToolResponse:
    await agent_service.get_agent_or_404(session, agent_id)
    tool = agent_service.new_tool(agent_id, body)
    session.add(tool)
    return await _save(session, tool, "added")


@router.get("/{tool_id}", response_model=ToolResponse, responses=error_responses(404), summary="Get a tool")
async def get_tool(agent_id: str, tool_id: str, session: SessionDep) -> ToolResponse:
    return agent_service.to_tool_response(await _get_tool_or_404(session, agent_id, tool_id))


@router.patch(
    "/{tool_id}",
    response_model=ToolResponse,
    responses=error_responses(404, 409, 413),
    summary="Update a tool (partial)",
)
async def update_tool(agent_id: str, tool_id: str, body: ToolUpdate, session: SessionDep) -> ToolResponse:
    tool = await _get_tool_or_404(session, agent_id, tool_id)
    changes = body.changes()
    kind, config = changes.get("kind", tool.kind), changes.get("config", tool.config)
    if "kind" in changes or "config" in changes:
        try:
            config = agent_service.unmask_config(config, tool.config)
            changes["config"] = check_tool_update(kind, config)
        except ValueError as exc:
            raise HTTPException(
                422,
                detail=[{"loc": ["body", "config"], "msg": str(exc), "type": "value_error"}],
            ) from None
    for column, value in changes.items():
        setattr(tool, column, value)
    return await _save(session, tool, "changed")


@router.delete(
    "/{tool_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404),
    summary="Delete a tool",
)
async def delete_tool(agent_id: str, tool_id: str, session: SessionDep) -> Response:
    tool = await _get_tool_or_404(session, agent_id, tool_id)
    await session.delete(tool)
    await agent_service.record_change(session, agent_id, f"removed tool {tool.name}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
