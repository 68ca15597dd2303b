"""What a scenario test run uses of the process's services (``app_runtime.Runtime`` has them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from config import Settings
    from core.sandbox import Sandbox
    from events.webhooks import WebhookDispatcher
    from knowledge.store import KnowledgeStore
    from providers.registry import ProviderRegistry
    from storage.batch_writer import BatchWriter
    from storage.db import Database
    from tools.runner import ToolRunner


class Services(Protocol):
    settings: Settings
    db: Database
    providers: ProviderRegistry
    knowledge: KnowledgeStore
    writer: BatchWriter
    sandbox: Sandbox
    tool_runner: ToolRunner
    webhooks: WebhookDispatcher
