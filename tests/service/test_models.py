"""Model loading: clear one-line start-up failures, device and dtype placement."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import service.http.app as app_module
from service.engine.torch_thread import torch_thread
from service.runtime.models import ServedModel, StartupError, load_models, public_name, resolve_device
from service.settings import Settings
from vocos_core import matmul_ways
from vocos_core.testing import write_random_checkpoint


def settings_for(**values: object) -> Settings:
    return Settings(**{"device": "cpu", **values})  # type: ignore[arg-type]


def test_missing_local_directory_names_the_model_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(StartupError) as info:
        load_models(settings_for(mel_model=str(tmp_path / "nowhere"), encodec_model="none"))
    message = str(info.value)
    assert "\n" not in message
    assert "cannot load the mel model" in message and "VOCOS_MEL_MODEL" in message and "--mel-model" in message
    assert "local directory holding config.yaml and pytorch_model.bin" in message


def test_a_named_model_that_cannot_load_names_the_setting_that_defines_it(tmp_path: Path) -> None:
    # Was "Point the source of model 'a' in VOCOS_MODELS or VOCOS_MODELS_FILE": which one, and which file?
    models_file = tmp_path / "models.yaml"
    models_file.write_text(f"models:\n  a: {tmp_path / 'nowhere'}\n")
    with pytest.raises(StartupError, match=rf"^cannot load model 'a' from .*\. Point the source of model 'a' in "
                                            rf"VOCOS_MODELS_FILE {models_file} at a local directory holding"):
        load_models(settings_for(models_file=str(models_file)))
    with pytest.raises(StartupError, match=r"Point the source of model 'b' in VOCOS_MODELS at a local directory"):
        load_models(settings_for(models=f"b={tmp_path / 'nowhere'}"))


@pytest.mark.parametrize("kind", ["hifigan-mel", "encodec"])
def test_weights_that_do_not_match_the_config_say_to_replace_them(tmp_path: Path, kind: Any) -> None:
    """Both files there, of two models: "point it at a directory holding config.yaml and pytorch_model.bin" was
    no fix, the directory held them."""
    checkpoint = write_random_checkpoint(tmp_path / "mixed", "mel")
    (checkpoint / "pytorch_model.bin").write_bytes((write_random_checkpoint(tmp_path / kind, kind)
                                                    / "pytorch_model.bin").read_bytes())
    with pytest.raises(StartupError) as info:
        load_models(settings_for(models=f"a={checkpoint}"))
    message = str(info.value)
    assert "pytorch_model.bin" in message and "\n" not in message
    assert message.endswith("Its config.yaml and pytorch_model.bin must be one Vocos checkpoint in the Hub layout: "
                            "replace them, or point the source of model 'a' in VOCOS_MODELS at another checkpoint "
                            "directory.")


@pytest.mark.parametrize("source", ["tts22k", "./tts22k", "../models/tts22k"])
def test_a_relative_source_that_is_no_directory_says_where_it_was_looked_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    # Written beside a models file, such a source was refused without a word of the directory it was taken from.
    (tmp_path / "models.yaml").write_text(f"models:\n  tts22k: {source}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StartupError) as info:
        load_models(settings_for(models_file="models.yaml"))
    assert f"(a relative path is taken from the current directory, {tmp_path}). Point the source" in str(info.value)


def test_a_hub_id_or_an_absolute_path_gets_no_relative_path_hint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # "_x/y": a Hub id to vocos_core too, which the hint once judged by a rule of its own
    for source in (str(tmp_path / "nowhere"), "charactr/vocos-mel-24khz", "_x/y"):
        with pytest.raises(StartupError) as info:
            load_models(settings_for(models=f"a={source}"))
        assert "relative path" not in str(info.value)


def test_a_device_no_machine_has_names_the_setting_it_came_from(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text("models:\n  a: {source: org/x, device: cuda:99}\n")
    # The model's own device, equal to VOCOS_DEVICE, was blamed on VOCOS_DEVICE: changing it changed nothing.
    with pytest.raises(StartupError, match=rf"^VOCOS_MODELS_FILE {tmp_path}/models.yaml: model 'a': device=cuda:99: "
                                            "this machine has"):
        load_models(settings_for(models_file=str(tmp_path / "models.yaml"), device="cuda:99"))
    with pytest.raises(StartupError, match=r"^VOCOS_DEVICE=cuda:98: this machine has"):
        load_models(settings_for(models="b=org/y", device="cuda:98"))


def test_hub_id_offline_fails_with_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(StartupError) as info:
        load_models(settings_for(mel_model="none", encodec_model="charactr/vocos-encodec-24khz"))
    assert "\n" not in str(info.value)
    assert "encodec model from 'charactr/vocos-encodec-24khz'" in str(info.value)
    assert "VOCOS_ENCODEC_MODEL" in str(info.value)


def test_wrong_kind_of_checkpoint(encodec_checkpoint: Path) -> None:
    with pytest.raises(StartupError, match=r"VOCOS_MEL_MODEL=.* holds a model of kind encodec, expected kind mel; "
                                            r"serve it under a name of its own with VOCOS_MODELS \(name=source\)"):
        load_models(settings_for(mel_model=str(encodec_checkpoint), encodec_model="none"))


def test_missing_encodec_encoder_weights_leave_only_the_audio_path_unavailable(
    encodec_checkpoint: Path, tmp_path: Path
) -> None:
    served = load_models(settings_for(mel_model="none", encodec_model=str(encodec_checkpoint),
                                      encodec_weights=str(tmp_path / "missing.th")))["encodec"]
    assert not served.audio_path.available and "missing.th" in (served.audio_path.problem or "")
    assert served.decode_batch([torch.zeros(4, 10, dtype=torch.long)], [1])[0].numel() > 0


def test_device_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(expected)
    if not torch.cuda.is_available():
        with pytest.raises(StartupError, match="VOCOS_DEVICE=cuda:3: this machine has 0 CUDA device"):
            resolve_device("cuda:3")


def test_a_server_of_no_model_does_not_start() -> None:
    with pytest.raises(StartupError, match="no model to serve"):
        load_models(Settings(mel_model="none", encodec_model="none"))


def test_a_models_own_device_is_named_in_its_error(tmp_path: Path) -> None:
    models_file = tmp_path / "models.yaml"
    models_file.write_text("models:\n  a: {source: /nowhere, device: 'cuda:9'}\n")
    # The file by its path, as every other mistake in it: a server may be given several in turn.
    with pytest.raises(StartupError, match=rf"^VOCOS_MODELS_FILE {models_file}: model 'a': device=cuda:9: this "):
        load_models(Settings(models_file=str(models_file)))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_keeps_spectral_parts_in_float32(mel_checkpoint: Path, dtype: str) -> None:
    full = load_models(settings_for(mel_model=str(mel_checkpoint), encodec_model="none"))["mel"]
    half = load_models(settings_for(mel_model=str(mel_checkpoint), encodec_model="none", dtype=dtype))["mel"]
    assert half.model.backbone.embed.weight.dtype == getattr(torch, dtype)
    mel = torch.randn(100, 30)
    a, b = full.decode_batch([mel])[0], half.decode_batch([mel])[0]
    assert b.dtype == torch.float32 and a.shape == b.shape
    assert float((a - b).abs().max()) < 0.05 * float(a.abs().max()) + 1e-4
    audio = np.random.default_rng(0).standard_normal(4800).astype(np.float32) * 0.1
    features = [served.model.audio_to_features(torch.from_numpy(audio)) for served in (half, full)]
    torch.testing.assert_close(*features)


@pytest.mark.parametrize(("cpu_matmul", "way"), [("mkl", "mkl"), ("onednn", "onednn"), ("float32", "mkl")])
def test_cpu_matmul_forces_a_way_and_shows_it(mel_checkpoint: Path, cpu_matmul: str, way: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(mel_model=str(mel_checkpoint), encodec_model="none", device="cpu", cpu_matmul=cpu_matmul)
    with caplog.at_level(logging.INFO, logger="service.runtime.models"):
        served = load_models(settings)["mel"]
    assert matmul_ways.current() == way and torch.get_float32_matmul_precision() == "highest"
    assert served.cpu_matmul == way and served.describe()["cpu_matmul"] == way
    assert [r.getMessage() for r in caplog.records if "matmuls" in r.getMessage()] == [
        f"CPU float32 matmuls: {way} (forced by the cpu_matmul setting)"]  # one line


def test_auto_probes_the_ways_that_run_here(mel_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(mel_model=str(mel_checkpoint), encodec_model="none", device="cpu")
    with caplog.at_level(logging.INFO, logger="service.runtime.models"):
        served = load_models(settings)["mel"]
    assert served.cpu_matmul == matmul_ways.current_plan().name
    assert set(matmul_ways.current_plan().ways) <= set(matmul_ways.available())
    (line,) = [r.getMessage() for r in caplog.records if "matmuls" in r.getMessage()]
    for way in matmul_ways.WAYS:  # each way's probe time, or why it cannot run
        assert way in line


@pytest.mark.skipif(matmul_ways.unsupported_reason("bf16x3") is None, reason="bf16x3 can run on this CPU")
def test_a_forced_way_that_cannot_run_falls_back_to_the_probe_and_says_why(mel_checkpoint: Path) -> None:
    settings = Settings(mel_model=str(mel_checkpoint), encodec_model="none", device="cpu", cpu_matmul="bf16x3")
    served = load_models(settings)["mel"]
    assert "bf16x3" not in served.cpu_matmul and torch.get_float32_matmul_precision() == "highest"


def test_cpu_matmul_leaves_a_gpu_alone(mel_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A model on a GPU: no probe, no way, the precision untouched ("high" would mean TF32 in cuBLAS).
    monkeypatch.setattr("service.runtime.models.resolve_device", lambda spec, setting: torch.device("meta"))
    monkeypatch.setattr("service.runtime.models.place", lambda model, device, dtype: model.eval())
    torch.set_float32_matmul_precision("highest")
    served = load_models(Settings(mel_model=str(mel_checkpoint), encodec_model="none", cpu_matmul="bf16x3"))["mel"]
    assert served.cpu_matmul is None and served.describe()["cpu_matmul"] is None
    assert torch.get_float32_matmul_precision() == "highest"


def test_bf16x3_is_never_set_beside_a_float32_gpu_model(mel_checkpoint: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """One precision for the process: bf16x3's "high", set for a CPU model, turned on TF32 for a float32
    model on a GPU beside it. Forced (and able to run, as on an AMX CPU), it is left out, saying why."""
    monkeypatch.setattr(matmul_ways, "unsupported_reason", lambda way: None)
    monkeypatch.setattr("service.runtime.models.resolve_device",
                        lambda device, setting: torch.device("meta" if device == "cuda" else "cpu"))
    monkeypatch.setattr("service.runtime.models.place",
                        lambda model, device, dtype: model.eval() if device.type == "meta" else model)
    models_file = tmp_path / "models.yaml"
    models_file.write_text(f"models:\n  big:\n    source: {mel_checkpoint}\n    device: cuda\n"
                           f"  small:\n    source: {mel_checkpoint}\n    device: cpu\n")
    torch.set_float32_matmul_precision("highest")
    try:
        with caplog.at_level(logging.INFO, logger="service.runtime.models"):
            models = load_models(Settings(models_file=str(models_file), mel_model="none", encodec_model="none",
                                          cpu_matmul="bf16x3"))
        assert "bf16x3" not in str(models["small"].cpu_matmul) and models["big"].cpu_matmul is None
        assert torch.get_float32_matmul_precision() == "highest"
        (line,) = [r.getMessage() for r in caplog.records if "matmuls" in r.getMessage()]
        assert line.endswith("as bf16x3 cannot run: the float32 GPU model(s) big would run TF32 matmuls under its "
                             "precision 'high'")
    finally:
        matmul_ways.set_way("mkl")


def test_public_names_are_hub_ids_with_their_revision_or_local_directory_names(tmp_path: Path) -> None:
    assert public_name("charactr/vocos-mel-24khz", None) == "charactr/vocos-mel-24khz"
    assert public_name("charactr/vocos-mel-24khz", "v2") == "charactr/vocos-mel-24khz@v2"
    (tmp_path / "models" / "mel").mkdir(parents=True)
    assert public_name(str(tmp_path / "models" / "mel") + "/", "v2") == "local:mel"
    assert public_name(str(tmp_path / "models" / "mel" / ".."), None) == "local:models"


def test_models_load_in_the_model_thread_every_later_call_runs_in(
        base_settings: Settings, models: dict[str, ServedModel], monkeypatch: pytest.MonkeyPatch) -> None:
    loaded_in: list[str] = []

    def load(settings: Settings) -> dict[str, ServedModel]:
        loaded_in.append(threading.current_thread().name)
        return models

    monkeypatch.setattr(app_module, "load_models", load)
    with TestClient(app_module.create_app(base_settings)) as client:
        assert client.get("/healthz").status_code == 200
    model_thread = torch_thread().submit(lambda: threading.current_thread().name).result()
    assert loaded_in == [model_thread]


def test_warm_up_steps_compile_every_row_bucket_on_throw_away_streams(
        models: dict[str, ServedModel], monkeypatch: pytest.MonkeyPatch) -> None:
    from vocos_core.shape_buckets import bucket

    for served in (models["mel"], models["encodec"]):
        rows: list[int] = []
        real = served.decode_steps

        def counting(states: Any, chunks: Any, final: Any, real: Any = real, rows: list[int] = rows) -> Any:
            rows.append(sum(int(c.shape[-1]) for c in chunks))
            return real(states, chunks, final)

        monkeypatch.setitem(vars(served), "decode_steps", counting)  # setitem: undone by deleting it again
        served.warm_up_steps(256, max_rows=600)
        monkeypatch.undo()
        assert {bucket(r) for r in rows} == {bucket(n) for n in range(1, 601)}
        stream = served.start_stream(0 if served.bandwidths else None)  # a real stream after it is untouched
        chunk = torch.zeros(served.codebooks[0], 30, dtype=torch.long) if served.bandwidths else \
            torch.randn(served.n_features, 30)
        audio = torch.cat([served.decode_steps([stream], [chunk], [True])[0]])
        expected = served.decode_batch([chunk], [0] if served.bandwidths else None)[0]
        assert float((audio - expected).abs().max()) <= 1e-5 * float(expected.abs().max()) + 1e-7


def test_a_local_model_reports_no_revision(mel_checkpoint: Path) -> None:
    """VOCOS_REVISION applies to Hub ids: /models gave a local checkpoint the server's revision."""
    settings = Settings(mel_model=str(mel_checkpoint), encodec_model="none", device="cpu", revision="v9")
    served = load_models(settings)["mel"]
    assert served.describe()["source"].startswith("local:") and served.describe()["revision"] is None


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_reduced_precision_model_shows_no_float32_matmul_way(mel_checkpoint: Path, tmp_path: Path,
                                                                dtype: str) -> None:
    # Its matmuls are PyTorch's half-precision ones: the float32 plan ("mkl", "onednn<=32,mkl") is not theirs.
    models_file = tmp_path / "models.yaml"
    models_file.write_text(f"models:\n  half: {{source: {mel_checkpoint}, dtype: {dtype}}}\n  full: {mel_checkpoint}\n")
    served = load_models(settings_for(models_file=str(models_file), cpu_matmul="mkl"))
    assert served["half"].cpu_matmul is None and served["half"].describe()["cpu_matmul"] is None
    assert served["full"].cpu_matmul == "mkl"
