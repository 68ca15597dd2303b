"""Web console: static pages served at / (being written)."""

from fastapi import APIRouter

router = APIRouter()
