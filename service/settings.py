"""The one typed settings object of the service, read from ``VOCOS_*`` environment variables.

Built once at start (``__main__`` adds CLI flags on top of the environment) and passed to
``create_app(settings)``; nothing else in the service reads the environment. An empty variable counts as
unset, as deployment tools write a setting they pass through but the user left out (docker-compose.yml).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, FiniteFloat, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vocos_core.matmul_ways import CpuMatmul

DISABLED = "none"
# A device setting, held with fullmatch (re's $ also matches before a final newline); the models file's too.
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda|cuda:\d+")
# A browser's Origin header: scheme://host[:port], nothing after (RFC 6454); a host name, or an IP literal.
_ORIGIN_RE = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>[a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])"
                        r"(?::(?P<port>[0-9]{1,5}))?", re.IGNORECASE)
_DEFAULT_PORTS = {"http": 80, "https": 443}
ANY_ORIGIN = "*"

Dtype = Literal["float32", "bfloat16", "float16"]
LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]
LogFormat = Literal["text", "json"]
# The float settings are FiniteFloat: "inf" and "nan" parse as floats, and an infinite timeout or drain passed
# every bound in silence (a drain that never ends outlives any grace period), while NaN failed the bounds with
# a message about them, not about the value.


class Settings(BaseSettings):
    """Service configuration; every field ``name`` is the env var ``VOCOS_NAME`` and the flag ``--name``."""

    model_config = SettingsConfigDict(env_prefix="VOCOS_", extra="forbid", frozen=True, env_ignore_empty=True)

    mel_model: str = Field(
        "charactr/vocos-mel-24khz",
        description="Hub id or local directory of the model named 'mel'; 'none' disables it. The default "
        "applies only when neither VOCOS_MODELS nor VOCOS_MODELS_FILE is set; set, it adds the model to theirs",
    )
    encodec_model: str = Field(
        "charactr/vocos-encodec-24khz",
        description="Hub id or local directory of the model named 'encodec'; 'none' disables it. The default "
        "applies only when neither VOCOS_MODELS nor VOCOS_MODELS_FILE is set; set, it adds the model to theirs",
    )
    models: str = Field(
        "",
        description="served models as comma-separated name=source pairs (Hub id or local directory), "
        "e.g. mel=charactr/vocos-mel-24khz,tts22k=/models/my-vocos",
    )
    models_file: str | None = Field(
        None, description="YAML file of served models and their own options (docs/models.md)"
    )
    encodec_weights: str | None = Field(
        None,
        description="local path of encodec_24khz-d7cc33bc.th (default: official URL via the torch hub cache)",
    )
    revision: str | None = Field(
        None, description="Hub revision (branch, tag or commit) of every Hub model without a revision of its own "
        "in VOCOS_MODELS_FILE"
    )
    device: str = Field(
        "auto",
        description="auto | cpu | cuda | cuda:N, of every model without a device of its own in VOCOS_MODELS_FILE",
    )
    dtype: Dtype = Field(
        "float32", description="compute dtype of every model without a dtype of its own in VOCOS_MODELS_FILE"
    )
    cpu_matmul: CpuMatmul = Field(
        "auto",
        description="float32 matmuls on CPU: auto (the fastest on this CPU for each row count, probed at start) | "
        "mkl | onednn (both exact float32) | bf16x3 (three bf16 products, AMX CPUs); float32 = mkl "
        "(docs/performance.md)",
    )

    max_batch_size: int = Field(16, ge=1, le=1024, description="most requests in one model call")
    max_wait_ms: FiniteFloat = Field(
        5.0, ge=0, le=10_000, description="how long the first request of a batch may wait for company"
    )
    max_batch_frames: int = Field(
        16384, ge=1, description="budget of padded frames (batch size x longest) per batch"
    )
    bucket_ratio: FiniteFloat = Field(
        2.0,
        ge=1.0,
        description="length bucketing: longest / shortest request of one batch stays at most this, "
        "so a short request does not wait on the compute of a much longer one",
    )
    max_queue_size: int = Field(
        256, ge=1, description="requests waiting per model beyond which 429 is answered"
    )
    request_timeout_s: FiniteFloat = Field(
        30.0, gt=0, description="deadline of a request (X-Request-Timeout shortens it)"
    )

    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1, description="largest accepted request body")
    body_timeout_s: FiniteFloat = Field(
        30.0, gt=0, description="time a request body may take to arrive in full; slower uploads get 408"
    )
    max_audio_seconds: FiniteFloat = Field(600.0, gt=0, description="longest audio a request may produce or upload")
    min_sample_rate: int = Field(
        8000,
        ge=1,
        description="lowest sample rate of an upload (8000 Hz, telephony's); lower ones are refused with 422, "
        "as each second of them becomes a second of 24 kHz audio to compute",
    )

    host: str = Field(
        "0.0.0.0",
        description="interface to listen on; --host \"\" is every interface, IPv4 and IPv6 (an empty VOCOS_HOST "
        "counts as unset)",
    )
    port: int = Field(8000, ge=0, le=65535, description="TCP port")
    api_keys: SecretStr = Field(
        SecretStr(""), description="comma-separated bearer tokens; empty = no authentication"
    )
    metrics_require_key: bool = Field(False, description="whether /metrics also requires a bearer token")
    cors_origins: str = Field(
        "",
        description="comma-separated origins (scheme://host[:port]) whose web pages may call the API from a "
        "browser (CORS), and open streams; '*' alone: every site; empty = no CORS headers (docs/deployment.md)",
    )
    drain_timeout_s: FiniteFloat = Field(
        30.0, ge=0, description="on SIGTERM, how long queued work may take to finish"
    )

    max_json_body_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1,
        description="largest JSON body (parsing JSON holds the interpreter; large inputs go as .npy)",
    )
    max_inflight_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1,
        description="bytes held at once by request bodies being received and responses not yet sent, "
        "across all connections; beyond it new requests get 503 with Retry-After",
    )
    send_timeout_s: FiniteFloat = Field(
        30.0, gt=0, description="time a client may take to read a whole response; then the connection is dropped"
    )
    header_timeout_s: FiniteFloat = Field(
        10.0, gt=0, description="time a connection may take to send its request headers (also when idle)"
    )
    max_connections: int = Field(
        512, ge=1, description="open connections beyond which new ones are answered 503 and closed"
    )
    max_streams: int = Field(64, ge=1, description="streams open at once per model; beyond it 503 with Retry-After")
    stream_max_wait_ms: FiniteFloat = Field(
        2.0, ge=0, le=1000, description="how long a stream's step may wait for other streams' steps to join it"
    )
    stream_max_step_wait_ms: FiniteFloat = Field(
        50.0, gt=0, le=10_000,
        description="longest a stream step should wait behind a whole-utterance call: while streams are open, "
        "calls are kept this short and longer requests are decoded in chunks between the steps",
    )
    max_stream_audio_seconds: FiniteFloat = Field(600.0, gt=0, description="most audio one stream may produce")
    max_stream_duration_s: FiniteFloat = Field(3600.0, gt=0, description="longest a stream may stay open")
    stream_idle_timeout_s: FiniteFloat = Field(
        30.0, gt=0, description="time a stream may go without a message before it is closed"
    )
    log_level: LogLevel = Field("info", description="log level")
    log_format: LogFormat = Field(
        "text", description="text (one line per record) | json (one JSON object per line, for log collectors)"
    )
    access_log: bool = Field(
        True, description="log each request and stream when it ends, with its request id, status and duration"
    )

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower()
        if not DEVICE_PATTERN.fullmatch(value):
            raise ValueError(f"device must be one of auto, cpu, cuda, cuda:N (N an integer); got {value!r}")
        return value

    @field_validator("log_level", "log_format", "dtype", "cpu_matmul", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("mel_model", "encodec_model")
    @classmethod
    def _check_model(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("expected a Hub id, a local directory, or 'none' to disable the model")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: str) -> str:
        """Each entry as a browser writes it in ``Origin`` (lower case, no default port), or a clear refusal:
        an entry the browser never sends (a trailing /, a path) would never match, in silence."""
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        if ANY_ORIGIN in entries and len(entries) > 1:
            raise ValueError("'*' allows every origin and stands alone; expected either '*' or a list of origins")
        origins = []
        for i, entry in enumerate(entries, 1):
            if entry == ANY_ORIGIN:
                origins.append(entry)
                continue
            if entry.lower() == "null":
                raise ValueError("'null' is the origin of sandboxed frames and local files, which any site can "
                                 "make a browser send; it cannot be allowed")
            match = _ORIGIN_RE.fullmatch(entry)
            port = int(match["port"]) if match and match["port"] else None
            if match is None or port == 0 or (port or 0) > 65535:
                raise ValueError(f"entry {i} ({entry[:80]!r}) is no origin; expected scheme://host[:port] with no "
                                 "path, not even a final '/' (e.g. https://app.example.com), origins separated by "
                                 "commas")
            scheme, host = match["scheme"].lower(), match["host"].lower()
            keep_port = port is not None and _DEFAULT_PORTS.get(scheme) != port
            origins.append(f"{scheme}://{host}:{port}" if keep_port else f"{scheme}://{host}")
        return ",".join(origins)

    @field_validator("encodec_weights", "revision", "models_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        if self.max_inflight_bytes < self.max_body_bytes:
            raise ValueError(
                f"max_inflight_bytes ({self.max_inflight_bytes}) must be at least max_body_bytes "
                f"({self.max_body_bytes}), or no body of the largest size could ever be received"
            )
        # Fail closed: a key setting that names no key (" , ", a template whose values are empty) must not
        # leave the API open, nor a /metrics that was asked to need a key.
        if self.api_keys.get_secret_value() and not self.api_key_list:
            raise ValueError("api_keys holds no key; expected keys separated by commas (leave it unset for an "
                             "open API)")
        # An Authorization header is Latin-1 on the wire and clients send UTF-8: a key beyond visible ASCII
        # could never be matched, and every client would be refused. (The key is not named: it is a secret.)
        odd = [i for i, key in enumerate(self.api_key_list, 1) if not all("!" <= c <= "~" for c in key)]
        if odd:
            raise ValueError(f"api_keys: key {odd[0]} (of {len(self.api_key_list)}) holds a space or a character "
                             "beyond ASCII, which no client can send in a Bearer token; expected visible ASCII "
                             "characters, keys separated by commas")
        # Logs quote what clients send with repr or as JSON, which double a backslash and escape a quote: a key
        # holding one, misplaced by a client (in a model name, a header), would slip past the redaction
        # written as the key is. RFC 6750's bearer tokens hold none of them.
        quoted = [i for i, key in enumerate(self.api_key_list, 1) if any(c in key for c in "\\'\"")]
        if quoted:
            raise ValueError(f"api_keys: key {quoted[0]} (of {len(self.api_key_list)}) holds a backslash or a quote, "
                             "which logs would write escaped, past their redaction; expected a bearer token "
                             "(RFC 6750: letters, digits, - . _ ~ + / and trailing =)")
        if self.metrics_require_key and not self.api_key_list:
            raise ValueError("metrics_require_key needs API keys (VOCOS_API_KEYS); without keys /metrics would "
                             "be open")
        return self

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        """The allowed origins, as browsers write them; ``("*",)`` for every origin; empty: no CORS."""
        return tuple(origin for origin in self.cors_origins.split(",") if origin)

    @property
    def api_key_list(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip())


def invalid_settings(exc: ValidationError) -> str:
    """Every error of ``exc`` (from building :class:`Settings`) in one line, each naming its variable: what the
    server and the image's prefetch step say before they stop."""
    lines = []
    for err in exc.errors():  # every one, not the first only
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"invalid settings: {message}" if not where  # a check across settings
                     else f"invalid {where} (VOCOS_{where.upper()}): {message}")
    return "; ".join(lines)


# VOCOS_* variables of the project's tools, not of the server: the test script, the test tools'
# installer, compose's interpolation and the image build.
TOOL_VARIABLES = frozenset({"VOCOS_SKIP_APT", "VOCOS_CONSTRAINTS", "VOCOS_TEST_TOOLS_DIR", "VOCOS_IMAGE",
                            "VOCOS_PUBLISH_PORT", "VOCOS_UID"})


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each ``VOCOS_*`` variable that is no setting, with the nearest setting's name: the
    environment is read by name, so a typo (``VOCOS_MODEL``) would otherwise be ignored in silence."""
    names = [f"VOCOS_{name.upper()}" for name in Settings.model_fields]
    warnings = []
    for variable in sorted(environ):
        upper = variable.upper()
        if upper.startswith("VOCOS_") and upper not in names and upper not in TOOL_VARIABLES:
            # Compared without the prefix, which every name shares and which would make any two look alike.
            near = difflib.get_close_matches(upper[6:], [n[6:] for n in names], n=1, cutoff=0.7)
            hint = f"; did you mean VOCOS_{near[0]}?" if near else " (vocos-serve --help lists them)"
            warnings.append(f"{variable} is not a setting and is ignored{hint}")
    return warnings
