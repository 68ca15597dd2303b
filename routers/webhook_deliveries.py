"""webhook_deliveries routes (being written)."""

from fastapi import APIRouter

router = APIRouter()
