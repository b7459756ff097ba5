"""The causal-LM recipe end to end on a tiny GPT-2 (built locally, never downloaded), CPU only."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cloudtune.runtime.types import RuntimeContext  # noqa: E402
from cloudtune.contracts.progress import read_status  # noqa: E402
from cloudtune.spec import CheckpointSpec, TrainSpec  # noqa: E402
from cloudtune.contracts.logfmt import METRIC_REGEXES  # noqa: E402
from cloudtune.train.causal_lm import run_causal_lm  # noqa: E402
from cloudtune.train.models import resolve_model_source  # noqa: E402
from cloudtune.train.checkpoints import MANIFEST_NAME, list_checkpoints, verify  # noqa: E402
from cloudtune.data.records import read_records, where_field  # noqa: E402

from tests.tiny_models import make_tiny_gpt2
from tests.train.killing import kill_at_first_checkpoint

METRIC_KEYS = ("eval_loss_before", "eval_loss_after", "perplexity_before", "perplexity_after", "train_loss",
               "tokens_per_second", "train_runtime_s", "global_step", "train_examples")
SENTENCES = [f"the boat number {i % 4} sails north at dawn with {i % 3} crew" for i in range(48)]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gpt2(tmp_path_factory.mktemp("tiny") / "tiny-gpt2")


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    return path


def make_ctx(root: Path, inputs: dict[str, Path]) -> RuntimeContext:
    return RuntimeContext.single_process(root, inputs, job_name="test", provider="local")


def make_spec(model: Path | str, *, eval_name: str | None = "eval", **hp: object) -> TrainSpec:
    hyper = {"epochs": 1, "learning_rate": 3e-3, "batch_size": 8, "max_seq_len": 32, "seed": 7} | hp
    return TrainSpec.model_validate({"model": str(model), "data": {"train": "train", "eval": eval_name}, "hyperparameters": hyper})


def job_dirs(root: Path) -> dict[str, Path]:
    """A directory input holding one .jsonl (what the local launcher makes of a file input)."""
    return {"train": write_jsonl(root / "in" / "train" / "train.jsonl", SENTENCES).parent,
            "eval": write_jsonl(root / "in" / "eval" / "eval.jsonl", SENTENCES[:8]).parent}


def weights(model_dir: Path) -> dict[str, "torch.Tensor"]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# ------------------------------------------------------------------------------------------------


def test_short_run_writes_model_metrics_and_checkpoints(tiny_model: Path, tmp_path: Path, capsys) -> None:
    from transformers import AutoModelForCausalLM

    ctx = make_ctx(tmp_path, job_dirs(tmp_path))
    metrics = run_causal_lm(ctx, make_spec(tiny_model, epochs=3), CheckpointSpec(every_steps=4, keep=2))
    out = capsys.readouterr().out

    for key in METRIC_KEYS:
        assert key in metrics and math.isfinite(metrics[key]), key
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    assert metrics["global_step"] == 18 and metrics["train_examples"] == 48
    assert metrics["tokens_per_second"] > 0
    assert json.loads((ctx.model_dir / "metrics.json").read_text()) == pytest.approx(metrics)
    assert (ctx.model_dir / "model.safetensors").is_file() and (ctx.model_dir / "tokenizer.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(str(ctx.model_dir))
    assert model.config.n_layer == 2

    # complete-or-absent checkpoints, `keep` of them, each with a manifest that verifies
    ckpts = list_checkpoints(ctx.checkpoint_dir)
    assert [c.step for c in ckpts] == [16, 18]
    for c in ckpts:
        assert (c.path / MANIFEST_NAME).is_file() and verify(c.path) is None
        manifest = json.loads((c.path / MANIFEST_NAME).read_text())
        assert manifest["step"] == c.step and "model.safetensors" in manifest["files"]
    assert not [p for p in ctx.checkpoint_dir.iterdir() if p.name.startswith(".")]

    # parseable log lines, matched by the published regexes
    assert re.search(r"^\[cloudtune\] step=1/18 loss=\d+\.\d{4} learning_rate=\S+ epoch=\d+\.\d{2} "
                     r"tokens_per_second=\d+\.\d eta_s=\d+ eta=\S+$", out, re.M)
    assert re.search(r"^\[cloudtune\] eval before: eval_loss=\d+\.\d{4} perplexity=\d+\.\d{2}$", out, re.M)
    assert re.search(r"^\[cloudtune\] eval after: eval_loss=\d+\.\d{4} perplexity=\d+\.\d{2}$", out, re.M)
    classification_only = {"eval_accuracy", "eval_f1"}
    for name, regex in METRIC_REGEXES.items():
        assert bool(re.search(regex, out)) == (name not in classification_only), name
    assert "[cloudtune] checkpoint saved:" in out


def read_texts(path: Path, field: str) -> list[str]:
    """The non-empty texts of an input, in file order, as the records reader gives them."""
    texts = [where_field(rec, field, where, "train.data.text_field") for where, rec in read_records(path, field)]
    return [t for t in texts if t.strip()]


def test_json_txt_and_file_inputs_without_eval(tiny_model: Path, tmp_path: Path) -> None:
    jdir = tmp_path / "mixed"
    jdir.mkdir()
    (jdir / "b.json").write_text(json.dumps([{"text": "second file record one"}, {"text": "record two"}]), encoding="utf-8")
    (jdir / "a.txt").write_text("first line\n\n  \nsecond line\n", encoding="utf-8")
    (jdir / "c.jsonl").write_text('{"text": "last"}\n', encoding="utf-8")
    assert read_texts(jdir, "text") == ["first line", "second line", "second file record one", "record two", "last"]

    txt = tmp_path / "train.txt"
    txt.write_text("\n".join(SENTENCES[:16]) + "\n", encoding="utf-8")
    ctx = make_ctx(tmp_path, {"train": txt})
    metrics = run_causal_lm(ctx, make_spec(tiny_model, eval_name=None, max_steps=2), CheckpointSpec(every_steps=50))
    assert metrics["global_step"] == 2 and metrics["train_examples"] == 16
    assert not any(k.startswith(("eval_", "perplexity_")) for k in metrics)
    assert (ctx.model_dir / "metrics.json").is_file()


def test_model_from_an_input_one_level_down(tiny_model: Path, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, {"base": tiny_model.parent, **job_dirs(tmp_path)})  # the dir holds tiny-gpt2/
    assert resolve_model_source(ctx, "base") == str(tiny_model)
    assert resolve_model_source(ctx, "org/hub-id") == "org/hub-id"


def test_record_missing_text_field_is_a_clear_error(tiny_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text here"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl.*line 2.*'text'"):
        read_texts(bad, "text")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('[\n {"text": "ok"},\n {"content": "x"}\n]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json.*line 3.*'text'"):
        read_texts(bad_json, "text")
    ctx = make_ctx(tmp_path, {"train": bad})
    with pytest.raises(ValueError, match=r"line 2.*'text'"):
        run_causal_lm(ctx, make_spec(tiny_model, eval_name=None), CheckpointSpec())


def test_sigterm_saves_a_checkpoint_and_exits_143_then_resumes(tiny_model: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from transformers import Trainer

    ctx = make_ctx(tmp_path, job_dirs(tmp_path))
    spec = make_spec(tiny_model, max_steps=8)
    original = Trainer.training_step
    calls = {"n": 0}

    def step_then_sigterm(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the spot reclaim arrives mid-step
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", step_then_sigterm)
    handler_before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exc:
        run_causal_lm(ctx, spec, CheckpointSpec(every_steps=100, keep=2))
    assert exc.value.code == 143
    from cloudtune.runtime.stopping import disarm, stop_requested

    assert stop_requested()  # the SIGTERM armed the stop deadline; this process goes on (to resume): cancel it
    disarm()
    assert signal.getsignal(signal.SIGTERM) == handler_before
    out = capsys.readouterr().out
    assert "[cloudtune] SIGTERM received: checkpoint saved at step 3, exiting" in out
    [ckpt] = list_checkpoints(ctx.checkpoint_dir)
    assert ckpt.step == 3 and verify(ckpt.path) is None
    assert not (ctx.model_dir / "metrics.json").exists()
    first_attempt_s = read_status(ctx.checkpoint_dir)["trained_s"]

    monkeypatch.setattr(Trainer, "training_step", original)
    metrics = run_causal_lm(ctx, spec, CheckpointSpec(every_steps=100, keep=2))
    assert f"[cloudtune] resuming from checkpoint {ckpt.path} (step 3)" in capsys.readouterr().out
    assert metrics["global_step"] == 8
    assert metrics["train_runtime_s"] > first_attempt_s > 0  # the whole run's training time, both attempts


def test_corrupt_newest_checkpoint_is_skipped_never_deleted(tiny_model: Path, tmp_path: Path, capsys) -> None:
    ctx = make_ctx(tmp_path, job_dirs(tmp_path))
    spec = make_spec(tiny_model, max_steps=4)
    run_causal_lm(ctx, spec, CheckpointSpec(every_steps=2, keep=2))
    assert [c.step for c in list_checkpoints(ctx.checkpoint_dir)] == [2, 4]
    corrupt = ctx.checkpoint_dir / "checkpoint-4"
    weights_file = corrupt / "model.safetensors"
    data = bytearray(weights_file.read_bytes())
    data[-1] ^= 0xFF  # same size, different hash
    weights_file.write_bytes(bytes(data))
    unfinished = ctx.checkpoint_dir / "checkpoint-6"  # a save killed before its manifest
    unfinished.mkdir()
    (unfinished / "model.safetensors").write_bytes(b"partial")
    capsys.readouterr()

    metrics = run_causal_lm(ctx, spec, CheckpointSpec(every_steps=2, keep=2))
    out = capsys.readouterr().out
    assert re.search(r"warning: skipping .*checkpoint-6: .*manifest", out)
    assert re.search(r"warning: skipping .*checkpoint-4: model\.safetensors does not match its sha256", out)
    assert f"resuming from checkpoint {ctx.checkpoint_dir / 'checkpoint-2'} (step 2)" in out
    assert metrics["global_step"] == 4
    assert weights_file.read_bytes() == bytes(data) and (unfinished / "model.safetensors").is_file()
    names = sorted(p.name for p in ctx.checkpoint_dir.iterdir())
    assert names == ["checkpoint-2", "checkpoint-4", "checkpoint-4-1", "checkpoint-6", "cloudtune-status.json"]
    assert verify(ctx.checkpoint_dir / "checkpoint-4-1") is None


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    import tests.train.test_recipe_causal_lm as t
    root = Path({root!r})
    ctx = t.make_ctx(root, {{"train": root / "in" / "train", "eval": root / "in" / "eval"}})
    t.run_causal_lm(ctx, t.make_spec({model!r}, max_steps=t.KILL_STEPS), t.CheckpointSpec(every_steps=3, keep=2))
    """
)
KILL_STEPS = 12


def test_resume_after_sigkill_matches_an_uninterrupted_run(tiny_model: Path, tmp_path: Path, capsys) -> None:
    ckpt = CheckpointSpec(every_steps=3, keep=2)
    ref_root, kill_root = tmp_path / "ref", tmp_path / "killed"
    reference = run_causal_lm(make_ctx(ref_root, job_dirs(ref_root)), make_spec(tiny_model, max_steps=KILL_STEPS), ckpt)

    ctx = make_ctx(kill_root, job_dirs(kill_root))
    script = kill_root / "run.py"
    script.write_text(KILL_SCRIPT.format(repo=str(Path(__file__).resolve().parents[2]), root=str(kill_root),
                                         model=str(tiny_model)))
    kill_at_first_checkpoint(script, ctx.checkpoint_dir, second=6)
    saved = [c.step for c in list_checkpoints(ctx.checkpoint_dir) if verify(c.path) is None]
    assert saved == [3] and not (ctx.model_dir / "metrics.json").exists()
    capsys.readouterr()

    resumed = run_causal_lm(ctx, make_spec(tiny_model, max_steps=KILL_STEPS), ckpt)
    assert f"(step {max(saved)})" in capsys.readouterr().out
    assert resumed["global_step"] == reference["global_step"] == KILL_STEPS
    diff = max_abs_diff(weights(ctx.model_dir), weights(ref_root / "model"))
    print(f"max abs weight diff after resume: {diff}")
    assert diff < 1e-6
    assert resumed["eval_loss_after"] == pytest.approx(reference["eval_loss_after"], abs=1e-5)
