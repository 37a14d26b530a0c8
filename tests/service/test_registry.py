"""The served models from VOCOS_MODELS, VOCOS_MODELS_FILE and the mel/encodec settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.runtime.registry import BATCHING, RegistryError, model_specs
from service.settings import Settings


def names(settings: Settings) -> list[str]:
    return [spec.name for spec in model_specs(settings)]


def test_by_default_the_two_official_models() -> None:
    specs = model_specs(Settings())
    assert [(s.name, s.source) for s in specs] == [
        ("mel", "charactr/vocos-mel-24khz"), ("encodec", "charactr/vocos-encodec-24khz")]
    assert specs[0].batching == {key: getattr(Settings(), key) for key in BATCHING}


def test_models_replace_the_defaults_and_explicit_mel_encodec_settings_add_to_them() -> None:
    assert names(Settings(models="a=/m/a, b=org/repo")) == ["a", "b"]
    assert names(Settings(models="a=/m/a", mel_model="/m/mel")) == ["a", "mel"]
    assert names(Settings(models="a=/m/a", encodec_model="none", mel_model="/m/mel")) == ["a", "mel"]
    assert names(Settings(encodec_model="none")) == ["mel"]


def test_environment_variables_count_as_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOCOS_MODELS", "tts22k=/m/22k")
    monkeypatch.setenv("VOCOS_ENCODEC_MODEL", "/m/encodec")
    assert names(Settings()) == ["tts22k", "encodec"]


def test_a_models_file_gives_each_model_its_own_options(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n"
        "  mel: charactr/vocos-mel-24khz\n"
        "  tts22k:\n"
        "    source: /models/tts22k\n"
        "    device: CUDA:1\n"
        "    dtype: BFloat16  # any case, as the environment variables\n"
        "    max_batch_size: 4\n"
        "    max_wait_ms: 0\n"
    )
    specs = model_specs(Settings(models_file=str(path), max_batch_size=32, revision="v1"))
    assert [s.name for s in specs] == ["mel", "tts22k"]
    mel, tts = specs
    assert (mel.device, mel.dtype, mel.revision, mel.batching["max_batch_size"]) == ("auto", "float32", "v1", 32)
    assert (tts.device, tts.dtype, tts.batching["max_batch_size"], tts.batching["max_wait_ms"]) == (
        "cuda:1", "bfloat16", 4, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"models": "a=/x,a=/y"}, "defined more than once"),
        ({"models": "mel=/x", "mel_model": "/y"}, "defined twice"),
        ({"models": "a"}, "name=source pairs"),
        ({"models": "a="}, "name=source pairs"),
        ({"models": "/etc/models.yaml"}, r"got '/etc/models.yaml'; a models file goes in VOCOS_MODELS_FILE$"),
        ({"models": "bad name=/x"}, "1-64 characters"),
        ({"models": "-a=/x"}, "beginning with a letter or digit"),  # '-' alone is allowed, not first
    ],
)
def test_inconsistent_model_settings_say_what_was_expected(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        model_specs(Settings(**kwargs))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: []\n", "mapping 'models:'"),
        ("models:\n  a: {device: cpu}\n", "needs a 'source'"),
        ("models:\n  a: {source: /x, colour: red}\n", "unknown options"),
        ("models:\n  a: {source: /x, device: tpu}\n", "device must be"),
        ("models:\n  a: {source: /x, dtype: int8}\n", "dtype must be"),
        ("models:\n  a: {source: /x, max_batch_size: 0}\n", "max_batch_size must be within VOCOS_MAX_BATCH_SIZE's"),
        ("models:\n  a: {source: /x, max_batch_size: 2.5}\n", "max_batch_size must be"),
        ("models:\n  a: {source: /x, max_batch_size: 100000}\n", "less than or equal to 1024"),
        ("models:\n  a: {source: /x, max_wait_ms: .inf}\n", "max_wait_ms must be within"),
        ("models:\n  a: {source: /x, max_wait_ms: .nan}\n", "max_wait_ms must be within"),
        ("models:\n  a: {source: /x, max_batch_frames: .inf}\n", "max_batch_frames must be within"),
        # Passed bucket_ratio's only bound (>= 1) before the float settings had to be finite.
        ("models:\n  a: {source: /x, bucket_ratio: .inf}\n", r"bucket_ratio must be within .*finite number"),
        ("models:\n  a: {source: /x, max_queue_size: yes}\n", "max_queue_size must be a number, got True$"),
        # YAML 1.1 reads these as text; the message said only "must be a number" of what was written as one.
        ("models:\n  a: {source: /x, max_wait_ms: 1e-3}\n", r"max_wait_ms must be a number, got '1e-3' \(text: YAML "
         r"reads an exponent only with a dot and a signed exponent, such as 1.0e-3; write 0.001\)$"),
        ("models:\n  a: {source: /x, max_wait_ms: 1e-7}\n", r"write 0.0000001\)$"),
        ("models:\n  a: {source: /x, max_queue_size: '64'}\n",
         r"got '64' \(text: quoted, or a form YAML 1.1 does not read as a number; write 64\)$"),
        ("models:\n  a: {source: /x, max_batch_frames: 1.6e4}\n", r"got '1.6e4' \(text: .*; write 16000\)$"),
        # Where in the file, not in "<unicode string>", as PyYAML calls the text it was given.
        ("models:\n  a: {source: /x}\n  a: {source: /y}\n", r"keys given more than once: \['a'\] at line 2, column 3$"),
        ('{\n\t"models": {"a": "/x"}\n}\n', r"at line 2, column 1 \(YAML refuses tabs: indent with spaces\)$"),
        # A misspelt 'source' was reported as a missing one, hiding the typo.
        ("models:\n  a: {sorce: /x}\n", r"model 'a': unknown options \['sorce'\]; expected among"),
        # What the file holds instead of models, which "expected a mapping 'models:'" alone did not say.
        ("", r"expected a mapping 'models:' of model names to their options; the file is empty"),
        ("# models: {a: /x}\n", "the file is empty"),
        ("- a: /x\n", r"got a list \('- ' items\) at the top level$"),
        ("models:\n  - a: /x\n", r"'models:' holds a list \('- ' items\): write each model as 'name: source'"),
        ("models:\n", "'models:' names no model"),
        ("feature_extractor: {}\nbackbone: {}\nhead: {}\n", r"got a checkpoint's config.yaml: serve its directory with "
                                                              r"VOCOS_MODELS=name=DIRECTORY"),
        ("model:\n  a: /x\n", r"got the top-level keys \['model'\]: write 'models:' first"),
        ("models:\n  yes: {source: /x}\n", r"model names must be strings; YAML reads a name written as yes/no, "
                                          r"on/off, true/false, null or a number as another type \(here True\)"),
        ("models:\n  1: {source: /x}\n  1.0: {source: /y}\n", "keys given more than once"),
        ("models: [unclosed\n", "cannot read it as YAML"),
        # A model indented one level too little, or options meant for every model, would be ignored.
        ("models:\n  a: /x\ntts22k: {source: /y}\n", r"unknown top-level keys \['tts22k'\]; expected only 'models:'"),
        ("models:\n  a: /x\ndevice: cpu\n", r"unknown top-level keys \['device'\]"),
        # YAML reads these revisions as numbers (1.10 as 1.1, 0123 as octal 83): another revision, fetched silently.
        ("models:\n  a: {source: org/x, revision: 1.10}\n",
         r"a': revision must be a string; YAML read it as float 1.1: quote it"),
        ("models:\n  a: {source: org/x, revision: 0123}\n", "revision must be a string; YAML read it as int 83"),
        ("models:\n  a: {source: /x, encodec_weights: [/w.th]}\n", "encodec_weights must be a string"),
        ('models:\n  "a\\n": /x\n', "model name 'a\\\\n' must be 1-64 characters"),  # re's $ matches before a final \n
    ],
)
def test_a_bad_models_file_says_what_was_expected(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    with pytest.raises(RegistryError, match=message):
        model_specs(Settings(models_file=str(path)))


def test_a_name_defined_twice_says_by_which_settings(tmp_path: Path) -> None:
    """Was "defined more than once: ['mel']" and "by VOCOS_MODELS(_FILE)": no word of which setting to edit."""
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  mel: /m/mel\n")
    with pytest.raises(RegistryError, match=rf"defined more than once: 'mel' \(2 times, by VOCOS_MODELS and "
                                            rf"VOCOS_MODELS_FILE {path}\); rename one of each$"):
        model_specs(Settings(models="mel=/m/other", models_file=str(path)))
    with pytest.raises(RegistryError, match=r"'a' \(3 times, by VOCOS_MODELS\); rename one of each$"):
        model_specs(Settings(models="a=/m/1,a=/m/2,a=/m/3"))
    with pytest.raises(RegistryError, match=rf"'mel' is defined twice: by VOCOS_MEL_MODEL and by VOCOS_MODELS_FILE "
                                            rf"{path}; rename the one in VOCOS_MODELS_FILE {path}, or set "
                                            "VOCOS_MEL_MODEL to none$"):
        model_specs(Settings(mel_model="/m/mel", models_file=str(path)))


def test_two_names_may_serve_one_checkpoint_each_with_its_options(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  fast: {source: /m/a, max_batch_size: 2}\n  bulk: {source: /m/a, max_batch_size: 64}\n")
    fast, bulk = model_specs(Settings(models_file=str(path)))
    assert fast.source == bulk.source == "/m/a"
    assert (fast.batching["max_batch_size"], bulk.batching["max_batch_size"]) == (2, 64)


def test_a_models_file_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_bytes("models:\n  a: /x  # café\n".encode("latin-1"))  # a Latin-1 comment
    with pytest.raises(RegistryError, match=r"cannot read it as YAML: not UTF-8 text \(invalid"):
        model_specs(Settings(models_file=str(path)))


def test_a_models_file_that_cannot_be_read_names_the_path_looked_for_not_yaml(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Was "cannot read it as YAML: [Errno 2] ...", which blamed the YAML and hid where a relative path pointed.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RegistryError, match=rf"VOCOS_MODELS_FILE models.yaml: cannot read {tmp_path}/models.yaml: No "
                                            r"such file or directory; expected a YAML file, a relative path being "
                                            r"taken from the current directory$"):
        model_specs(Settings(models_file="models.yaml"))
    with pytest.raises(RegistryError, match=rf"cannot read {tmp_path}: Is a directory; expected a YAML file$"):
        model_specs(Settings(models_file=str(tmp_path)))


@pytest.mark.parametrize("text", [",", " , ,"])
def test_a_models_setting_that_names_no_model_is_refused_not_taken_as_unset(text: str) -> None:
    with pytest.raises(RegistryError, match="VOCOS_MODELS: expected name=source pairs separated by commas"):
        model_specs(Settings(models=text))


def test_a_models_file_path_may_start_with_a_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "models.yaml").write_text("models:\n  a: /x\n")
    assert [s.name for s in model_specs(Settings(models_file="~/models.yaml"))] == ["a"]


def test_a_models_file_may_share_options_through_yaml_merge_keys(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n"
        "  gpu22k: &gpu {source: /m/a, device: cuda:1, dtype: bfloat16, max_batch_size: 4}\n"
        "  gpu16k: {<<: *gpu, source: /m/b, max_batch_size: 8}  # its own keys override the merged ones\n"
        "  hub: {source: org/x, revision: '1.10'}  # quoted, a revision stays as written\n"
    )
    a, b, hub = model_specs(Settings(models_file=str(path)))
    assert (a.source, a.device, a.dtype, a.batching["max_batch_size"]) == ("/m/a", "cuda:1", "bfloat16", 4)
    assert (b.source, b.device, b.dtype, b.batching["max_batch_size"]) == ("/m/b", "cuda:1", "bfloat16", 8)
    assert hub.revision == "1.10"
    path.write_text("models:\n  a: &o {source: /m/a}\n  b: {<<: *o, source: /m/b, source: /m/c}\n")
    with pytest.raises(RegistryError, match=r"keys given more than once: \['source'\]"):
        model_specs(Settings(models_file=str(path)))
