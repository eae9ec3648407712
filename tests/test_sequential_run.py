"""`domtok run --seeds auto`: the look loop, its record, and resuming a killed study (a fake
study: the driver is given a run function and the primary's per-seed deltas)."""

import json

import pytest
import yaml

from domtok.errors import DomtokError
from domtok.rundir import load_spec
from domtok.eval.sequential import parse_sequential
from domtok.sequential_run import LOOKS_FILE, run_sequential, seed_order

# the paired per-seed deltas of a study with a clear effect (mean 0.2, SD about 0.1)
TRUTH = {s: 0.2 + 0.1 * ((s * 7) % 5 - 2) / 2 for s in range(40)}


def _spec(tmp_path, **sequential):
    spec = load_spec("tiny", [f"runs_dir={tmp_path}"])
    spec.sequential = parse_sequential(sequential or {"max_seeds": 12, "per_look": 3}, "test")
    return spec


class FakeStudy:
    """Stands for run_experiment: 'runs' the spec's seeds (records them, writes spec.yaml as the
    pipeline does); dies at a chosen call, as a killed run would."""

    def __init__(self, die_at=None):
        self.calls, self.die_at, self.done = [], die_at, set()

    def __call__(self, spec, opts):
        self.calls.append(list(spec.seeds))
        if self.die_at is not None and len(self.calls) == self.die_at:
            raise KeyboardInterrupt
        run_dir = tmp_run_dir(spec)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec.raw))
        self.done |= set(spec.seeds)
        return 0


def tmp_run_dir(spec):
    from pathlib import Path
    return Path(spec.runs_dir) / spec.name


def deltas(run_dir):
    seeds = yaml.safe_load((run_dir / "spec.yaml").read_text())["seeds"]
    return [TRUTH[s] for s in seeds]


def test_stops_when_the_boundary_is_crossed_and_records_looks(tmp_path, monkeypatch):
    import domtok.report
    monkeypatch.setattr(domtok.report, "write_report", lambda d: d / "report.md")
    spec = _spec(tmp_path)
    study = FakeStudy()
    assert run_sequential(spec, None, study, deltas_fn=deltas, say=lambda m: None) == 0
    rec = json.loads((tmp_path / "tiny" / LOOKS_FILE).read_text())
    assert study.calls == [[3, 4, 5], [3, 4, 5, 6, 7, 8]]  # tiny's seeds, then the next: look 2 decides
    assert rec["decision"] == "helps" and rec["seeds_used"] == 6 and rec["biased"]
    assert [lk["n"] for lk in rec["looks"]] == [3, 6]
    assert rec["looks"][1]["per_seed_deltas"] == [TRUTH[s] for s in range(3, 9)]
    assert rec["looks"][0]["decision"] == "continue" and rec["looks"][1]["t"] >= rec["looks"][1]["boundary"]
    assert rec["plan"]["seed_order"][:6] == [3, 4, 5, 6, 7, 8]


def test_killed_study_resumes_to_the_same_decision(tmp_path, monkeypatch):
    import domtok.report
    monkeypatch.setattr(domtok.report, "write_report", lambda d: d / "report.md")
    whole = FakeStudy()
    spec = _spec(tmp_path / "a")
    run_sequential(spec, None, whole, deltas_fn=deltas, say=lambda m: None)
    ref = json.loads((tmp_path / "a" / "tiny" / LOOKS_FILE).read_text())

    spec = _spec(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):  # killed during look 2's runs
        run_sequential(spec, None, FakeStudy(die_at=2), deltas_fn=deltas, say=lambda m: None)
    mid = json.loads((tmp_path / "b" / "tiny" / LOOKS_FILE).read_text())
    assert [lk["n"] for lk in mid["looks"]] == [3] and mid["decision"] is None
    again = FakeStudy()
    run_sequential(spec, None, again, deltas_fn=deltas, say=lambda m: None)
    got = json.loads((tmp_path / "b" / "tiny" / LOOKS_FILE).read_text())
    strip = lambda r: {k: v for k, v in r.items() if k != "wall_seconds"}  # noqa: E731
    assert strip(got) == strip(ref)
    # a rerun of a decided study replays the looks and says the same
    run_sequential(spec, None, FakeStudy(), deltas_fn=deltas, say=lambda m: None)
    assert strip(json.loads((tmp_path / "b" / "tiny" / LOOKS_FILE).read_text())) == strip(ref)


def test_undecided_at_max_seeds_and_changed_results_are_refused(tmp_path, monkeypatch):
    import domtok.report
    monkeypatch.setattr(domtok.report, "write_report", lambda d: d / "report.md")
    spec = _spec(tmp_path, max_seeds=4, per_look=2)
    noise = {3: 0.1, 4: -0.2, 5: 0.05, 6: 0.08}
    study = FakeStudy()
    run_sequential(spec, None, study, deltas_fn=lambda d: [noise[s] for s in deltas_seeds(d)], say=lambda m: None)
    rec = json.loads((tmp_path / "tiny" / LOOKS_FILE).read_text())
    assert rec["decision"] == "undecided" and rec["seeds_used"] == 4 and study.calls[-1] == [3, 4, 5, 6]
    noise[4] = 0.3
    with pytest.raises(DomtokError, match="recorded deltas"):
        run_sequential(spec, None, FakeStudy(), deltas_fn=lambda d: [noise[s] for s in deltas_seeds(d)],
                       say=lambda m: None)
    other = _spec(tmp_path, max_seeds=6, per_look=2)
    with pytest.raises(DomtokError, match="another plan"):
        run_sequential(other, None, FakeStudy(), deltas_fn=deltas, say=lambda m: None)


def deltas_seeds(run_dir):
    return yaml.safe_load((run_dir / "spec.yaml").read_text())["seeds"]


def test_plan_section_is_checked(tmp_path):
    assert parse_sequential({"max_seeds": 9}, "s")["per_look"] == 3
    for bad in ({"max_seeds": 1}, {"per_look": 0}, {"spending": "haybittle"}, {"max_seed": 3}, {"max_seeds": 2, "per_look": 3}):
        with pytest.raises(Exception, match="sequential"):
            parse_sequential(bad, "s")
    spec = load_spec("tiny", [f"runs_dir={tmp_path}"])
    spec.seeds = [4, 5, 6]
    assert seed_order(spec, 6) == [4, 5, 6, 7, 8, 9]
    spec.seeds, spec.tuning_seeds = [0], [1, 2]
    assert seed_order(spec, 3) == [0, 3, 4]  # never a tuning seed
    spec.sequential = None
    with pytest.raises(DomtokError, match="sequential"):
        run_sequential(spec, None, FakeStudy(), deltas_fn=deltas)


def test_cli_seeds_auto_errors(tmp_path):
    from domtok.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text(f"extends: tiny\nruns_dir: {tmp_path}\n")
    assert main(["run", str(spec), "--seeds", "two"]) == 2
    assert main(["run", str(spec), "--seeds", "auto", "--only", "sft"]) == 2
    assert main(["run", str(spec), "--seeds", "auto", "sequential=null"]) == 2  # no plan: refused before anything runs
    assert not (tmp_path / "tiny").exists()
    assert load_spec("tiny").sequential == {"max_seeds": 12, "per_look": 3, "spending": "obrien-fleming", "alpha": 0.05}
