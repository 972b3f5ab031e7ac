"""Benchmarks run for a moment, so they cannot rot (no timing assertions)."""

import json

import pytest

from bench import env_throughput


def test_env_throughput_smoke(tmp_path):
    out = tmp_path / "env.json"
    result = env_throughput.main(["--steps", "60", "--repeats", "1", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["env_ratio"] == result["env_ratio"] > 0
    for key in ("reach_steps_per_s", "fetchreach_steps_per_s", "pusher_steps_per_s", "multigoal_steps_per_s"):
        assert saved[key]["median"] > 0
    assert saved["machine"]["cpus"] >= 1


def test_first_success_finds_the_first_evaluation_at_the_bar():
    from bench.throughput import first_success

    curve = [{"train_s": 1.0, "success_rate": 0.5}, {"train_s": 2.0, "success_rate": 0.95},
             {"train_s": 3.0, "success_rate": 1.0}]
    assert first_success(curve)["train_s"] == 2.0
    assert first_success(curve[:1]) is None


def test_throughput_smoke(tmp_path, device):
    pytest.importorskip("stable_baselines3")
    from bench import throughput

    out, png = tmp_path / "t.json", tmp_path / "t.png"
    result = throughput.main(["--quick", "--device", device, "--json", str(out), "--plot", str(png)])
    saved = json.loads(out.read_text())
    assert saved["config"]["device"] == device and saved["complete"] is True
    for key in ("sql_steps_per_s", "sac_steps_per_s", "ratio", "flop_utilization", "env_ratio",
                "sql_time_to_95", "sac_time_to_95"):
        assert key in saved
    assert saved["sql_steps_per_s"]["median"] > 0 and saved["sac_steps_per_s"]["median"] > 0
    assert saved["ratio"] == result["ratio"] > 0
    assert 0 < saved["flop_utilization"] and saved["sql_flops_per_update"] > 1e6
    assert saved["time_to_95"]["sql"][0]["curve"] and saved["time_to_95"]["sac"][0]["curve"]
    assert png.stat().st_size > 0


def test_throughput_refuses_cuda_without_a_gpu():
    import torch

    from bench import throughput

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit):
        throughput.main(["--device", "cuda", "--quick"])


def test_update_profile_smoke(tmp_path):
    from bench import update_profile

    result = update_profile.main(["--buffer", "300", "--updates", "3", "--repeats", "1", "--warmup", "3",
                                  "--json", str(tmp_path / "u.json")])
    flops = result["flops_per_update"]
    assert set(result["ms_per_update"]) == set(update_profile.VARIANTS)
    # splitting the first layer removes the [s, a] concatenation's FLOPs; the cache removes most target FLOPs
    assert flops["reference"] > flops["+ split first layer"] == flops["+ fused Adam"] > flops["+ target cache"]


def test_device_profile_smoke(tmp_path, device):
    from bench import device_profile

    out = tmp_path / "profile.json"
    result = device_profile.main(["--device", device, "--buffer", "300", "--updates", "3", "--repeats", "1",
                                  "--warmup", "2", "--profiled", "2", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["device"] == result["device"]
    assert saved["update_with_batch_ms"]["median"] > 0 and saved["aten_ops_per_update"] > 100
    assert saved["top_ops"][0]["calls_per_update"] > 0
    assert "aten::" in out.with_suffix(".txt").read_text()
    if device == "cuda":
        assert saved["kernels_per_update"] > 10 and saved["kernel_ms_per_update"] > 0
        assert 0 < saved["device_busy_fraction"]


def test_throughput_keeps_the_measured_sections_when_interrupted(tmp_path, monkeypatch):
    pytest.importorskip("stable_baselines3")
    from bench import throughput

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(throughput, "time_to_success", interrupted)
    out = tmp_path / "t.json"
    with pytest.raises(KeyboardInterrupt):
        throughput.main(["--quick", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["complete"] is False and saved["sql_time_to_95"] is None
    assert saved["sql_steps_per_s"]["median"] > 0 and saved["env_ratio"] > 0
    assert not list(tmp_path.glob("*.tmp"))
