"""Local sweeps end to end on the tiny model: a sweep over the learning rate, interrupted (its driver killed) and
resumed without running a finished trial again, whose best trial beats its worst; status, list, report, download
and `train.model: job:<SWEEP>` on it; cancel of a running sweep; a 2-process trial whose ranks got the same values."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cloudtune import api
from cloudtune.spec import load_spec
from cloudtune.store import JobStore
from tests.tiny_models import make_tiny_gpt2

pytestmark = pytest.mark.slow
SENTENCES = ["the kettle sings when the water is hot", "a sail fills with wind and the boat moves",
             "roast the beans until the first crack", "the river runs to the sea in spring"]
LEARNING_RATES = [1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2]


def cli(home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLOUDTUNE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "cloudtune.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def wait_for(check, timeout: float = 600, poll: float = 0.5) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    make_tiny_gpt2(root / "tiny")
    data = root / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"text": SENTENCES[i % 4]}) + "\n" for i in range(48)))
    (data / "eval.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in SENTENCES))
    return root


@pytest.fixture(scope="module")
def swept(root: Path) -> dict:
    """A grid over six learning rates, two trials at once; its driver is killed once two trials have ended, and the
    sweep is resumed. Returns the final `launch --json` object and what the store held before the resume."""
    home = root / "home"
    spec = {"name": "lr", "inputs": {"train": "data/train.jsonl", "eval": "data/eval.jsonl"},
            "train": {"model": "./tiny", "hyperparameters": {"max_steps": 4, "batch_size": 4, "max_seq_len": 32,
                                                             "seed": 7, "eval_every": 2}},
            "checkpoint": {"every_steps": 100},
            "sweep": {"parameters": {"learning_rate": {"choice": LEARNING_RATES}}, "algorithm": "grid",
                      "max_trials": 6, "parallel_trials": 2, "early_stopping": "off"}}
    (root / "sweep.yaml").write_text(yaml.safe_dump(spec))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLOUDTUNE_HOME", str(home))
        return interrupted_and_resumed(root, home)


def interrupted_and_resumed(root: Path, home: Path) -> dict:
    job = api.launch(root / "sweep.yaml")
    sweep_id = job.job_id
    store = JobStore(home)
    ended = lambda: [c for c in store.children("sweep", sweep_id) if c.state == "succeeded" and "objective" in c.extra]
    wait_for(lambda: len(ended()) >= 2)
    pid = json.loads((Path(job.record.job_dir) / "state.json").read_text())["supervisor_pid"]
    os.kill(pid, signal.SIGKILL)  # the driver dies; its running trials go on under their own supervisors
    wait_for(lambda: job.status() == "failed")
    before = {c.job_id: c.created_at for c in store.children("sweep", sweep_id)}
    done_before = {c.job_id for c in ended()}
    out = cli(home, "launch", str(root / "sweep.yaml"), "--resume", sweep_id, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return {"info": json.loads(out.stdout), "before": before, "done_before": done_before, "home": home}


def test_resumed_sweep_runs_each_trial_once_and_finds_a_better_rate(swept: dict) -> None:
    info = swept["info"]
    trials = info["trials"]
    assert info["state"] == "succeeded" and info["job_id"].startswith("lr-")
    assert len(trials) == 6 and sorted(t["parameters"]["hyperparameters.learning_rate"] for t in trials) == LEARNING_RATES
    assert all(t["state"] == "succeeded" and isinstance(t["objective"], float) for t in trials)
    assert len({t["job_id"] for t in trials}) == 6
    store = JobStore(swept["home"])
    for job_id in swept["done_before"]:  # finished before the driver died: the same job, not run again
        assert store.get(job_id).created_at == swept["before"][job_id]
    objectives = [t["objective"] for t in trials]
    assert objectives == sorted(objectives)  # best first
    assert objectives[-1] - objectives[0] > 0.5  # a clear margin (eval loss, nats per token)
    assert info["best_trial"]["job_id"] == trials[0]["job_id"]
    assert trials[0]["intermediate"] and trials[0]["intermediate"][-1][0] == 4


def test_a_resume_with_another_spec_is_refused_and_its_dry_run_names_the_sweep(swept: dict, root: Path) -> None:
    """The rest of a sweep's trials run with the spec it was launched with: a changed section is refused, not ignored;
    the dry run of a resume names the sweep it continues."""
    home, sweep_id = swept["home"], swept["info"]["job_id"]
    changed = yaml.safe_load((root / "sweep.yaml").read_text())
    changed["train"]["hyperparameters"]["max_steps"] = 5
    (root / "changed.yaml").write_text(yaml.safe_dump(changed))
    refused = cli(home, "launch", str(root / "changed.yaml"), "--resume", sweep_id, "--dry-run")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert f"--resume {sweep_id}: the spec's train differs from that sweep's" in refused.stderr
    same = cli(home, "launch", str(root / "sweep.yaml"), "--resume", sweep_id, "--dry-run")
    assert same.returncode == 0, same.stderr
    assert sweep_id in same.stdout and f"resumes sweep {sweep_id}" in same.stdout


def test_status_list_report_download_and_job_model(swept: dict, root: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    home, sweep_id = swept["home"], swept["info"]["job_id"]
    best = swept["info"]["trials"][0]
    status = cli(home, "status", sweep_id)
    assert status.returncode == 0 and f"best:   trial {best['number']} ({best['job_id']})" in status.stdout
    rows = json.loads(cli(home, "list", "--json").stdout)
    row = next(r for r in rows if r["job_id"] == sweep_id)
    assert row["kind"] == "sweep" and row["main_metric"]["value"] == pytest.approx(best["objective"])
    assert sum(1 for r in rows if r.get("sweep") == sweep_id) == 6
    report = cli(home, "report", sweep_id, "-o", str(tmp_path / "r.html"))
    page = (tmp_path / "r.html").read_text()
    assert report.returncode == 0 and 'data-chart="objective-hyperparameters.learning_rate"' in page
    assert page.count('class="markers"') >= 1 and 'data-chart="trial-curves"' in page
    got = cli(home, "download", sweep_id, str(tmp_path / "model"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "model" / "config.json").is_file()
    assert json.loads((tmp_path / "model" / "metrics.json").read_text())["eval_loss_after"] == pytest.approx(
        best["objective"], rel=1e-4)
    follow = root / "follow.yaml"
    follow.write_text(yaml.safe_dump({"name": "follow", "inputs": {"train": "data/train.jsonl"},
                                      "train": {"model": f"job:{sweep_id}", "data": {"eval": None}}}))
    monkeypatch.setenv("CLOUDTUNE_HOME", str(home))
    plan = api.plan(follow)
    assert plan.spec["inputs"]["model"] == best["model_uri"]


def probe(code: Path) -> None:
    """A command that records what each rank got (its arguments and CLOUDTUNE_SWEEP_* variables) and reports a
    score from rank 0 as a metric line."""
    code.mkdir(parents=True)
    (code / "probe.py").write_text(
        "import json, os, sys\n"
        "out = os.path.join(os.environ['PROBE_OUT'], os.environ['CLOUDTUNE_JOB_NAME'])\n"
        "os.makedirs(out, exist_ok=True)\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith('CLOUDTUNE_SWEEP_')}\n"
        "rank = os.environ.get('RANK', '0')\n"
        "json.dump({'argv': sys.argv[1:], 'env': env}, open(os.path.join(out, f'rank-{rank}.json'), 'w'))\n"
        "width = float(env['CLOUDTUNE_SWEEP_WIDTH'])\n"
        "if rank == '0':\n"
        "    print(f'[cloudtune] metric score={(width - 3) ** 2} step=1', flush=True)\n")


def test_two_process_trials_get_the_same_values(root: Path, tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "ranks"
    probe(tmp_path / "code")
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "ranks", "command": f"{sys.executable} probe.py", "code": "code", "env": {"PROBE_OUT": str(out)},
        "resources": {"processes_per_node": 2},
        "sweep": {"parameters": {"width": {"uniform": [0.0, 6.0]}, "depth": {"choice": [2, 4]}},
                  "objective": {"metric": "score"}, "algorithm": "random", "max_trials": 2, "parallel_trials": 1}}))
    done = cli(home, "launch", str(spec), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    info = json.loads(done.stdout)
    assert info["state"] == "succeeded" and len(info["trials"]) == 2
    for trial in info["trials"]:
        ranks = [json.loads((out / trial["job_id"] / f"rank-{r}.json").read_text()) for r in (0, 1)]
        assert ranks[0] == ranks[1]  # both ranks: the same arguments and variables
        width = trial["parameters"]["width"]
        assert f"--width={width!r}" in ranks[0]["argv"] and float(ranks[0]["env"]["CLOUDTUNE_SWEEP_WIDTH"]) == width
        assert trial["objective"] == pytest.approx((width - 3) ** 2, rel=1e-5)


def test_cancel_stops_the_whole_sweep(tmp_path: Path) -> None:
    home = tmp_path / "home"
    code = tmp_path / "code"
    code.mkdir()
    (code / "wait.py").write_text("import time\nfor _ in range(600):\n    time.sleep(0.1)\n")
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "stop", "command": f"{sys.executable} wait.py", "code": "code",
        "sweep": {"parameters": {"x": {"int": [1, 9]}}, "objective": {"metric": "x"}, "max_trials": 4,
                  "parallel_trials": 2}}))
    started = cli(home, "launch", str(spec), "--detach", "--json")
    sweep_id = json.loads(started.stdout)["job_id"]
    store = JobStore(home)
    wait_for(lambda: any(c.state == "running" for c in store.children("sweep", sweep_id)), timeout=120)
    stopped = cli(home, "cancel", sweep_id)
    assert stopped.returncode == 0 and stopped.stdout.strip().endswith("cancelled"), stopped.stdout + stopped.stderr
    trials = store.children("sweep", sweep_id)
    assert trials and all(c.state == "cancelled" for c in trials)
    assert load_spec(spec).sweep.max_trials == 4 and len(trials) <= 2  # no trial started after the cancel


def command_sweep(tmp_path: Path, script: str, sweep: dict) -> tuple[Path, Path]:
    code = tmp_path / "code"
    code.mkdir()
    (code / "job.py").write_text(script)
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"name": "cmd", "command": f"{sys.executable} job.py", "code": "code",
                                    "env": {"COUNTER_DIR": str(tmp_path / "counter")}, "sweep": sweep}))
    return spec, tmp_path / "home"


def test_median_rule_stops_worse_trials_early(tmp_path: Path) -> None:
    """Each trial reports, at step 1, how many trials ran before it (a rising curve, whatever the values): from the
    third on, every trial is worse than the median of the finished ones at step 1 and is stopped there."""
    script = ("import os, time\nd = os.environ['COUNTER_DIR']\nos.makedirs(d, exist_ok=True)\nn = len(os.listdir(d))\n"
              "open(os.path.join(d, str(n)), 'w').close()\n"
              "print(f'[cloudtune] metric loss={n} step=1', flush=True)\n"
              "for _ in range(80):\n    time.sleep(0.1)\n"
              "print(f'[cloudtune] metric loss={n} step=2', flush=True)\n")
    spec, home = command_sweep(tmp_path, script, {"parameters": {"x": {"int": [1, 9]}}, "objective": {"metric": "loss"},
                                                  "algorithm": "random", "max_trials": 4, "parallel_trials": 1})
    done = cli(home, "launch", str(spec), "--json")
    info = json.loads(done.stdout)
    states = {t["intermediate"][0][1]: t["state"] for t in info["trials"]}
    assert states == {0.0: "succeeded", 1.0: "succeeded", 2.0: "pruned", 3.0: "pruned"}, done.stderr
    pruned = [t for t in info["trials"] if t["state"] == "pruned"]
    assert all(t["intermediate"] == [[1, t["objective"]]] for t in pruned)  # stopped before step 2
    assert info["state"] == "succeeded" and info["best_trial"]["objective"] == 0.0


def test_max_failed_trials_stops_the_sweep(tmp_path: Path) -> None:
    spec, home = command_sweep(tmp_path, "raise SystemExit(3)\n", {
        "parameters": {"x": {"int": [1, 9]}}, "objective": {"metric": "loss"}, "max_trials": 6, "parallel_trials": 1,
        "max_failed_trials": 2})
    done = cli(home, "launch", str(spec), "--json")
    info = json.loads(done.stdout)
    assert done.returncode == 1 and info["state"] == "failed"
    assert info["trial_counts"] == {"failed": 2} and "max_failed_trials: 2" in info["failure_reason"]


def test_download_of_a_running_sweep_names_the_trial_and_says_it_may_change(tmp_path: Path) -> None:
    """The first trial reports and ends; the second waits (bounded) while the sweep runs: download gives the best
    trial so far, names it, and says the sweep has not ended."""
    script = ("import os, time\n"
              "os.makedirs(os.environ['COUNTER_DIR'], exist_ok=True)\n"
              "n = len(os.listdir(os.environ['COUNTER_DIR']))\n"
              "open(os.path.join(os.environ['COUNTER_DIR'], str(os.getpid())), 'w').close()\n"
              "if n:\n"
              "    for _ in range(1200):\n"
              "        time.sleep(0.1)\n"
              "print('[cloudtune] metric score=1.5 step=1', flush=True)\n")
    spec, home = command_sweep(tmp_path, script, {"parameters": {"x": {"choice": [1, 2]}}, "objective": {
        "metric": "score"}, "algorithm": "grid", "max_trials": 2, "parallel_trials": 1})
    sweep_id = json.loads(cli(home, "launch", str(spec), "--detach", "--json").stdout)["job_id"]
    store = JobStore(home)
    wait_for(lambda: any(c.state == "succeeded" for c in store.children("sweep", sweep_id))
             and any(c.state == "running" for c in store.children("sweep", sweep_id)), timeout=300)
    try:
        got = cli(home, "download", sweep_id, str(tmp_path / "model"))
        assert got.returncode == 0, got.stdout + got.stderr
        first = next(c for c in store.children("sweep", sweep_id) if c.state == "succeeded")
        assert f"its best trial 0 ({first.job_id}, score=1.5)" in got.stdout
        assert "note: the sweep is still running: this is its best trial so far" in got.stdout
    finally:
        cli(home, "cancel", sweep_id)
