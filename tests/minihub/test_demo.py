"""The tiny profile end to end: hub build (pool trained, broken adapters rejected), then the demo."""

import json

from lora_recycle.cli import main


def test_tiny_hub_and_demo(tmp_path, cache_dir, capsys):
    out = tmp_path / "demo"
    assert main(["hub", "build", "--profile", "tiny", "--cache-dir", str(cache_dir), "--json"]) == 0
    hub = json.loads(capsys.readouterr().out)
    assert hub["adapters"] == 8 and hub["broken"] == 6 and hub["tasks"] >= 20

    assert main(["pool", "list", "--db", f"{hub['root']}/pool.db", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    broken = {i.split("/")[-1]: r["reasons"] for i, r in rows.items() if i.startswith("mallory/")}
    assert broken == {"broken-no_license": ["no_license"], "broken-pickle_only": ["not_safetensors"],
                      "broken-nan": ["nonfinite"], "broken-wrong_shape": ["shape_mismatch"],
                      "broken-dora": ["unsupported_type"], "broken-corrupt": ["corrupt"]}
    assert all(r["status"] == "accepted" for i, r in rows.items() if not i.startswith("mallory/"))

    assert main(["demo", "--profile", "tiny", "--cache-dir", str(cache_dir), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    for row in ("prompting", "target-task LoRA", "average of the 5 selected", "ours + target LoRA",
                "ours, random-init + target LoRA"):
        assert row in table
    report = (out / "report.md").read_text()
    assert "| method | test accuracy | vs prompting | vs target LoRA |" in report
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 7 and all(0.0 <= r["accuracy"] <= 1.0 and r["n"] > 0 for r in results)
