"""The benchmark harnesses run end to end on the tiny model (CPU): fields present and sane, no timing thresholds;
the soak's short run checks that no stroke is lost and no frame follows a stop."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` lives at the repository root


def test_stream_benchmark_tiny(tmp_path, capsys):
    from benchmarks.stream import main

    out = tmp_path / "bench.json"
    summary = main(["--arch", "tiny", "--frames", "4", "--warmup-frames", "2", "--baseline", "--compile", "--json", str(out)])
    assert json.loads(out.read_text())["results"] == json.loads(json.dumps(summary["results"]))
    result = summary["results"][0]
    assert (result["height"], result["width"], result["layers"], result["slots"]) == (64, 64, 4, 5)
    assert set(result["paths"]) == {"baseline", "fast", "fast+cudagraph"}
    for name, path in result["paths"].items():
        assert "error" not in path, path
        assert path["fps"] > 0 and path["frames"] == 4
        # 5 slots x 4 layers; the fast paths leave out items without weight (the tiny canvas's small blurred
        # discs have none at the noisiest slots), the baseline calls the model on all of them
        assert path["model_batch"] == 20 if name == "baseline" else 0 < path["model_batch"] < 20
        assert {"mask_prep", "launch", "unet", "blend", "decode", "encode", "send"} <= set(path["stages_ms"])
        assert all(v >= 0 for v in path["stages_ms"].values())
        assert path["bare_model_ms"] > 0 and path["frame_over_bare_model"] > 0
        assert path["latency_ms"]["patches"] == 0 or path["latency_ms"]["median"] > 0
        assert path["still"] == {**path["still"], "converged": True, "model_calls_in_1s_after": 0}
        if name != "baseline":
            assert path["speedup_vs_baseline"] > 0
    # The same frames up to float rounding: the fast path leaves weightless items out of the model call, and a
    # batched convolution may round one image's sums differently in a batch of another size (seen: 1 level of
    # 255 at a handful of pixels, mean 2e-5, depending on the threads the machine gives).
    same = result["same_frames"]
    assert same["max_abs_uint8"] <= 1 and same["mean_abs_uint8"] < 1e-3 and same["finite"]
    assert "fps" in capsys.readouterr().out


def test_paper_benchmark_tiny():
    from benchmarks.paper import main

    summary = main(["--arch", "tiny", "--steps", "3", "--frames", "2"])
    assert summary["multidiffusion"]["seconds_per_image"] > 0
    assert summary["stream"]["seconds_per_frame"] > 0 and summary["speedup"]["per_frame"] > 0


def test_an_architecture_without_a_builder_says_so():
    from benchmarks.stream import main

    summary = main(["--arch", "sd3", "--frames", "1"])
    assert summary["error"].startswith("--arch sd3: ") and summary["results"] == []


def test_soak_short(capsys):
    from benchmarks.soak import main

    summary = main(["--seconds", "4", "--cycle-seconds", "1.5", "--warmup-seconds", "1", "--stroke-rate", "50"])
    assert summary["ok"], summary
    assert summary["frames"] > 0 and summary["strokes"] > 50 and summary["stops"] >= 3
    assert (summary["lost_pixels"], summary["frames_after_stop"], summary["errors"]) == (0, 0, 0)
    assert summary["python_threads"]["after_close"] <= summary["python_threads"]["before_start"]  # none left behind
    assert "lost pixels   0" in capsys.readouterr().out


def test_stream_benchmark_runs_both_region_modes_side_by_side_and_sweeps_layers(capsys):
    from benchmarks.stream import main

    summary = main(["--arch", "tiny", "--frames", "3", "--warmup-frames", "1", "--layers", "1-2", "--no-compare",
                    "--region-mode", "exact,attention", "--bare-repeats", "2"])
    assert [result["layers"] for result in summary["results"]] == [1, 2]
    for result in summary["results"]:
        paths = result["paths"]
        assert set(paths) == {"fast", "fast+attention"}
        assert (paths["fast"]["region_mode"], paths["fast+attention"]["region_mode"]) == ("exact", "attention")
        assert 0 < paths["fast+attention"]["model_batch"] <= result["slots"]  # an item per slot (with weight), whatever the layers
        assert result["attention_over_exact"]["fast"] == paths["fast+attention"]["speedup_vs_exact"] > 0
    out = capsys.readouterr().out
    assert "x exact" in out and "fast+attention ms" in out


def test_layer_sweep_tiny():
    from benchmarks.layer_sweep import main

    summary = main(["--arch", "tiny", "--layers", "1,3", "--frames", "1"])
    assert [row["layers"] for row in summary["rows"]] == [1, 3]
    for row in summary["rows"]:
        assert row["exact_ms"] > 0 and row["attention_ms"] > 0 and row["attention_over_exact"] > 0
        assert row["attention_batch"] <= 5  # an item per slot, whatever the layers
