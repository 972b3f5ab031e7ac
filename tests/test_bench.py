"""Benchmarks run for a moment, so they cannot rot (no timing assertions)."""

import json

from bench import env_throughput


def test_env_throughput_smoke(tmp_path):
    out = tmp_path / "env.json"
    result = env_throughput.main(["--steps", "60", "--repeats", "1", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["env_ratio"] == result["env_ratio"] > 0
    for key in ("reach_steps_per_s", "fetchreach_steps_per_s", "pusher_steps_per_s", "multigoal_steps_per_s"):
        assert saved[key]["median"] > 0
    assert saved["machine"]["cpus"] >= 1
