"""sims.bench_eq5: a tiny run writes its results with both jobs timed against their peers."""
import json

from sims import bench_eq5


def test_tiny_run_times_both_jobs_against_their_peers(tmp_path):
    code = bench_eq5.main(["--sizes", "tiny", "--ab", "3", "--tokens", "4", "--repeats", "1", "--no-isolate", "--out", str(tmp_path)])
    assert code in (0, 1)                       # 1 only if a timing check lost to noise
    r = json.loads((tmp_path / "results.json").read_text())
    case = r["cases"]["tiny_ab3"]
    for job in ("batch", "matrix"):
        assert case[job]["ours_s"] > 0 and case[job]["peer_s"] > 0
        assert case[job]["difference_normwise"] < 1e-4        # float32, same quantity
    assert len(r["checks"]) == 2 and r["machine"]["cpu_count"] >= 1


def test_bad_flags_are_one_line_exit_2(tmp_path, capsys):
    assert bench_eq5.main(["--sizes", "gpt5", "--out", str(tmp_path / "x")]) == 2
    assert bench_eq5.main(["--ab", "8,-1", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: --") for line in err)
    assert not (tmp_path / "x").exists()
