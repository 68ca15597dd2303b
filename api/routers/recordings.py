"""Call recordings: the stereo WAV (caller left, agent right) written when a call ends."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

from api.deps import SessionDep, error_responses
from models import Conversation

router = APIRouter(prefix="/convai/conversations", tags=["conversations"])


@router.get(
    "/{conversation_id}/recording",
    response_class=FileResponse,
    responses={200: {"content": {"audio/wav": {}}}, **error_responses(404)},
    summary="Download a call's recording (WAV, 8 kHz stereo: caller left, agent right)",
)
async def get_recording(conversation_id: str, request: Request, session: SessionDep) -> FileResponse:
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        raise HTTPException(404, detail=f"conversation {conversation_id!r} not found")
    directory = Path(request.app.state.runtime.settings.recordings_dir)
    path = directory / f"{conversation.id}.wav"
    if not conversation.recording_url or not path.is_file():
        raise HTTPException(404, detail="this conversation has no recording")
    return FileResponse(path, media_type="audio/wav", filename=f"{conversation.id}.wav")
