"""Settings from VOCOS_* variables and CLI flags, and their validation."""

from __future__ import annotations

import contextlib
import socket

import pytest

from service.__main__ import DrainingServer, build_parser, main, parse_settings
from service.http.server import bound_sockets
from service.runtime.registry import model_specs
from service.settings import Settings, unknown_variables


def test_defaults_match_the_contract() -> None:
    s = Settings()
    assert (s.mel_model, s.encodec_model) == ("charactr/vocos-mel-24khz", "charactr/vocos-encodec-24khz")
    assert (s.encodec_weights, s.revision, s.device, s.dtype) == (None, None, "auto", "float32")
    assert (s.max_batch_size, s.max_wait_ms, s.max_batch_frames, s.max_queue_size) == (16, 5, 16384, 256)
    assert (s.request_timeout_s, s.max_body_bytes, s.max_audio_seconds) == (30, 64 * 1024 * 1024, 600)
    assert s.min_sample_rate == 8000
    assert (s.host, s.port, s.api_key_list, s.metrics_require_key) == ("0.0.0.0", 8000, (), False)
    assert (s.drain_timeout_s, s.log_level, s.bucket_ratio, s.cpu_matmul) == (30, "info", 2.0, "auto")
    assert [spec.name for spec in model_specs(s)] == ["mel", "encodec"]


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "VOCOS_MEL_MODEL": "/models/mel", "VOCOS_ENCODEC_MODEL": "none", "VOCOS_DEVICE": "CUDA:1",
        "VOCOS_DTYPE": "bfloat16", "VOCOS_MAX_BATCH_SIZE": "32", "VOCOS_MAX_WAIT_MS": "2.5",
        "VOCOS_MAX_BATCH_FRAMES": "8192", "VOCOS_MAX_QUEUE_SIZE": "10", "VOCOS_REQUEST_TIMEOUT_S": "3",
        "VOCOS_MAX_BODY_BYTES": "1000", "VOCOS_MAX_AUDIO_SECONDS": "60", "VOCOS_HOST": "127.0.0.1",
        "VOCOS_PORT": "9000", "VOCOS_API_KEYS": " a, b ,,c", "VOCOS_METRICS_REQUIRE_KEY": "true",
        "VOCOS_DRAIN_TIMEOUT_S": "5", "VOCOS_LOG_LEVEL": "WARNING", "VOCOS_ENCODEC_WEIGHTS": "/w/e.th",
        "VOCOS_REVISION": "v1", "VOCOS_CPU_MATMUL": "Float32", "VOCOS_MIN_SAMPLE_RATE": "16000",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert [(spec.name, spec.source) for spec in model_specs(s)] == [("mel", "/models/mel")]
    assert (s.device, s.dtype, s.max_batch_size, s.max_wait_ms, s.max_batch_frames) == ("cuda:1", "bfloat16", 32,
                                                                                          2.5, 8192)
    assert (s.max_queue_size, s.request_timeout_s, s.max_body_bytes, s.max_audio_seconds) == (10, 3, 1000, 60)
    assert (s.host, s.port, s.metrics_require_key, s.drain_timeout_s, s.log_level) == ("127.0.0.1", 9000, True,
                                                                                       5, "warning")
    assert s.api_key_list == ("a", "b", "c")
    assert "a, b" not in repr(s)  # keys are secret
    assert (s.encodec_weights, s.revision, s.cpu_matmul) == ("/w/e.th", "v1", "float32")
    assert s.min_sample_rate == 16000


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a deployment tool writes for a setting it passes through and the user left out (docker-compose.yml).
    for name in Settings.model_fields:
        monkeypatch.setenv(f"VOCOS_{name.upper()}", "")
    s = Settings()
    assert s == Settings.model_construct() and not s.model_fields_set
    # Unset, so a default model may still fall back to the built-in one, as with no variable at all.
    assert all(spec.default for spec in model_specs(s))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("device", "gpu", "auto, cpu, cuda, cuda:N"),
        ("dtype", "int8", "float32"),
        ("cpu_matmul", "tf32", "'auto', 'mkl', 'onednn', 'bf16x3' or 'float32'"),
        ("max_batch_size", 0, "greater than or equal to 1"),
        ("mel_model", " ", "Hub id, a local directory, or 'none'"),
        ("port", 70000, "less than or equal to 65535"),
    ],
)
def test_invalid_values_say_what_is_expected(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**{field: value})


@pytest.mark.parametrize(("overrides", "message"), [
    ({"api_keys": " , "}, "api_keys holds no key; expected keys separated by commas"),
    ({"api_keys": "   "}, "api_keys holds no key"),
    ({"metrics_require_key": True}, r"metrics_require_key needs API keys \(VOCOS_API_KEYS\)"),
    # a key that no client can send: every request would get 401
    ({"api_keys": "plain-key,clé-ünïcode"}, r"key 2 \(of 2\) holds a space or a character beyond ASCII"),
    ({"api_keys": "two words"}, "key 1 .of 1. holds a space"),
    # written escaped by the logs' repr or JSON, past the redaction of the key as it is
    ({"api_keys": "ok,Zx9+Qw/Er=Ty\\Ui"}, r"key 2 \(of 2\) holds a backslash or a quote"),
    ({"api_keys": "it's"}, "holds a backslash or a quote"),
    ({"api_keys": 'say"x"'}, "holds a backslash or a quote"),
])
def test_key_settings_that_would_leave_the_api_open_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**overrides)
    assert Settings(api_keys="k", metrics_require_key=True).api_key_list == ("k",)


def test_cli_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOCOS_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("VOCOS_PORT", "9000")
    monkeypatch.setenv("VOCOS_API_KEYS", "k")
    s = parse_settings(["--max-batch-size", "8", "--mel-model", "/m", "--metrics-require-key",
                        "--encodec-model", "none", "--dtype", "float16"])
    assert (s.max_batch_size, s.port, s.mel_model, s.metrics_require_key) == (8, 9000, "/m", True)
    assert ([spec.name for spec in model_specs(s)], s.dtype) == (["mel"], "float16")


def test_every_setting_has_a_flag() -> None:
    flags = {a.dest for a in build_parser()._actions}
    assert set(Settings.model_fields) <= flags


def test_the_help_says_which_models_the_model_wide_settings_apply_to() -> None:
    """--mel-model's default is not served beside VOCOS_MODELS, and a models file's options win over
    --revision, --device and --dtype: the help says so rather than 'of both models'."""
    helps = {a.dest: " ".join((a.help or "").split()) for a in build_parser()._actions}
    for name in ("mel_model", "encodec_model"):
        assert "applies only when neither VOCOS_MODELS nor VOCOS_MODELS_FILE is set" in helps[name]
    for name in ("revision", "device", "dtype"):
        assert f"without a {name} of its own in VOCOS_MODELS_FILE" in helps[name]


def test_invalid_flag_value_exits_2_with_one_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_settings(["--device", "tpu"])
    assert info.value.code == 2
    assert "invalid device (VOCOS_DEVICE)" in capsys.readouterr().err


def test_every_invalid_setting_is_named_in_one_line_without_the_usage(capsys: pytest.CaptureFixture[str],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOCOS_MAX_WAIT_MS", "-1")
    with pytest.raises(SystemExit) as info:
        parse_settings(["--max-batch-size", "0"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1 and "usage:" not in err
    assert "invalid max_batch_size (VOCOS_MAX_BATCH_SIZE)" in err and "invalid max_wait_ms (VOCOS_MAX_WAIT_MS)" in err
    monkeypatch.delenv("VOCOS_MAX_WAIT_MS")
    with pytest.raises(SystemExit):
        parse_settings(["--api-keys", " , "])
    assert "invalid settings: api_keys holds no key" in capsys.readouterr().err  # no "Value error," prefix


def test_an_abbreviated_flag_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse took a prefix for the flag it begins (--max-batch-s for --max-batch-size): a setting added later
    would make a deployed command ambiguous, and a misspelt flag could set another setting."""
    with pytest.raises(SystemExit) as info:
        parse_settings(["--max-batch-s", "4"])
    assert info.value.code == 2 and "unrecognized arguments: --max-batch-s 4" in capsys.readouterr().err
    assert parse_settings(["--max-batch-size", "4"]).max_batch_size == 4


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e999"])
def test_a_float_setting_must_be_finite(value: str, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An infinite drain or timeout passed every bound (the drain never ended, past any grace period), and NaN
    failed them with a message about the bound ("less than or equal to 10000"), not about the value."""
    float_fields = [name for name, field in Settings.model_fields.items() if field.annotation is float]
    assert {"drain_timeout_s", "request_timeout_s", "bucket_ratio", "max_wait_ms"} <= set(float_fields)
    for name in float_fields:
        with pytest.raises(ValueError, match="finite number"):
            Settings(**{name: value})
    monkeypatch.setenv("VOCOS_DRAIN_TIMEOUT_S", value)
    with pytest.raises(SystemExit) as info:
        parse_settings([f"--max-wait-ms={value}"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "invalid drain_timeout_s (VOCOS_DRAIN_TIMEOUT_S): Input should be a finite number" in err
    assert "invalid max_wait_ms (VOCOS_MAX_WAIT_MS): Input should be a finite number" in err


def test_choice_flags_take_any_case_as_their_variables_do() -> None:
    s = parse_settings(["--log-level", "WARNING", "--dtype", "BFloat16", "--cpu-matmul", "MKL"])
    assert (s.log_level, s.dtype, s.cpu_matmul) == ("warning", "bfloat16", "mkl")


def test_a_host_that_resolves_to_nothing_stops_the_server_before_loading_models(
        capsys: pytest.CaptureFixture[str]) -> None:
    # the model setting would fail too, later: the host is found first, in one line
    assert main(["--host", "no-such-host.invalid", "--mel-model", "/nowhere", "--encodec-model", "none"]) == 1
    err = capsys.readouterr().err
    assert "VOCOS_HOST (--host) 'no-such-host.invalid' is no address this machine can listen on" in err
    assert "/nowhere" not in err


def test_sockets_are_bound_as_uvicorn_binds_them() -> None:
    """One socket per address, as asyncio's create_server: "" is IPv4 and IPv6, an IPv6 socket IPv6 alone."""
    every = bound_sockets("", 0)
    try:
        resolved = socket.getaddrinfo(None, 0, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
        assert sorted(sock.family for sock in every) == sorted({info[0] for info in resolved})  # IPv4 and IPv6
        for sock in every:
            if sock.family == socket.AF_INET6:
                assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        for sock in every:
            sock.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "10.255.255.1"])  # a port in use; an address not this machine's
def test_a_port_that_cannot_be_listened_on_stops_the_server_before_loading_models(
        host: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Found only once every model had loaded, by uvicorn: 11 lines and exit status 3."""
    if host != "127.0.0.1":
        with socket.socket() as probe, contextlib.suppress(OSError):
            probe.bind((host, 0))
            pytest.skip(f"this machine lets {host} be bound (net.ipv4.ip_nonlocal_bind)")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--host", host, "--port", str(port), "--mel-model", "/nowhere", "--encodec-model", "none"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"vocos-serve: cannot listen on {host}:{port} (VOCOS_HOST, VOCOS_PORT): ")
    assert err.count("\n") == 1 and "/nowhere" not in err




def test_batch_policy_takes_the_batching_settings() -> None:
    from service.runtime.registry import ModelSpec
    from service.runtime.slot import batch_policy as engine_policy

    def batching(settings: Settings) -> dict[str, float]:
        return dict(ModelSpec("m", "/m").resolved(settings).batching)

    assert engine_policy(batching(Settings())).bucket_ratio == 2.0
    policy = engine_policy(batching(Settings(bucket_ratio=3.0, max_wait_ms=7, max_batch_size=4)))
    assert (policy.bucket_ratio, policy.max_wait_s, policy.max_batch_size) == (3.0, 0.007, 4)


def test_a_vocos_variable_that_is_no_setting_is_named_with_the_nearest_one() -> None:
    environ = {"VOCOS_MODEL": "mel=/m", "vocos_max_batchsize": "8", "VOCOS_MODELS": "mel=/m", "VOCOS_SKIP_APT": "1",
               "VOCOS_ZZZ": "1", "HOME": "/root"}
    assert unknown_variables(environ) == [
        "VOCOS_MODEL is not a setting and is ignored; did you mean VOCOS_MODELS?",
        "VOCOS_ZZZ is not a setting and is ignored (vocos-serve --help lists them)",
        "vocos_max_batchsize is not a setting and is ignored; did you mean VOCOS_MAX_BATCH_SIZE?",
    ]


def test_a_port_taken_during_the_load_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    """The port is checked at start, not held: a server that took it meanwhile made a traceback after the load."""
    import uvicorn

    async def app(scope: object, receive: object, send: object) -> None:
        pass

    ours = bound_sockets("127.0.0.1", 0)
    port = ours[0].getsockname()[1]
    with socket.socket() as thief:
        thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        thief.bind(("127.0.0.1", port))
        thief.listen()
        server = DrainingServer(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off"), None)  # type: ignore[arg-type]
        with pytest.raises(SystemExit) as stopped:
            server.run(sockets=ours)
    ours[0].close()
    assert stopped.value.code == 1
    err = capsys.readouterr().err  # after uvicorn's "Started server process" line
    assert err.splitlines()[-1].startswith(f"vocos-serve: cannot listen on 127.0.0.1:{port} (VOCOS_HOST, VOCOS_PORT): ")
    assert "Traceback" not in err
