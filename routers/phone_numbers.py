"""phone_numbers routes."""

from fastapi import APIRouter

router = APIRouter()
