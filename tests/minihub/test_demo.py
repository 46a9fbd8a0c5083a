"""The tiny profile end to end: hub build (pool trained, broken adapters rejected), then the demo."""

import json
from pathlib import Path

import pytest

from lora_recycle.adapters import read_peft_adapter
from lora_recycle.adapters.card import read_card_data
from lora_recycle.cli import main
from lora_recycle.minihub.specialists import task_accuracy
from lora_recycle.models.loading import load_base_model
from lora_recycle.tasks import load_task


def test_tiny_hub_and_demo(tmp_path, cache_dir, tiny_hub, capsys):
    out = tmp_path / "demo"
    assert main(["hub", "build", "--profile", "tiny", "--cache-dir", str(cache_dir), "--json"]) == 0
    hub = json.loads(capsys.readouterr().out)
    assert hub["adapters"] == 8 and hub["broken"] == 6 and hub["tasks"] >= 20
    root = Path(hub["root"])
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["precision"] in ("fp32", "bf16") and hub["precision"] == manifest["precision"]
    for entry in manifest["adapters"]:
        assert 0.0 <= entry["source_accuracy"] <= 1.0 and 0.0 <= entry["base_accuracy"] <= 1.0
        card = read_card_data(root / entry["path"])
        assert card["source_accuracy"] == entry["source_accuracy"] and card["base_accuracy"] == entry["base_accuracy"]
        assert card["model-index"][0]["results"][0]["dataset"]["name"] == entry["task"]
    # the recorded accuracy is what scoring the adapter on its own task's test rows gives
    first = manifest["adapters"][0]
    model, tokenizer = load_base_model(manifest["base_model"])
    task = load_task(root / "tasks" / first["task"])
    limit = manifest["profile"]["source_eval_limit"]
    own = task_accuracy(model, tokenizer, task, limit, manifest["precision"], read_peft_adapter(root / first["path"]))
    base = task_accuracy(model, tokenizer, task, limit, manifest["precision"])
    assert own == pytest.approx(first["source_accuracy"], abs=1e-4) and base == pytest.approx(first["base_accuracy"],
                                                                                               abs=1e-4)
    assert hub["specialists"]["adapters"] == 8
    assert main(["hub", "build", "--profile", "tiny", "--cache-dir", str(cache_dir)]) == 0  # warm: prints the table
    printed = capsys.readouterr().out
    assert first["name"] in printed and "median gain" in printed

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
                "ours, random-init + target LoRA", "arrow (routing, no task data)", "arrow + target LoRA"):
        assert row in table
    report = (out / "report.md").read_text()
    assert "| method | test accuracy | vs prompting | vs target LoRA |" in report
    assert "Metric: test-split " in report and "(metric: " in table
    # the verdict names the budgets it was drawn at and the paper's, and points to the budget reading
    budgets = ("Budgets: 20 merge steps (validation every 4), a 40-step target-task LoRA; the paper's are 100 merge "
               "steps and a 400-step target-task LoRA.")
    assert budgets in report and budgets in table and "docs/study/budget/report.md" in report
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 9 and all(0.0 <= r["accuracy"] <= 1.0 and r["n"] > 0 for r in results)

    # warm: every row comes from the demo's row cache (nothing is merged or routed again), same numbers
    def refuse(*args, **kwargs):
        raise AssertionError("a warm demo recomputed a cached row")

    import lora_recycle.minihub.demo_rows as demo_rows

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo_rows, "_build", refuse)
        patch.setattr(demo_rows, "ensure_target", refuse)
        assert main(["demo", "--profile", "tiny", "--cache-dir", str(cache_dir), "--out", str(tmp_path / "warm")]) == 0
        assert main(["demo", "--profile", "tiny", "--cache-dir", str(cache_dir), "--out", str(out)]) == 2  # not empty
        assert main(["demo", "--profile", "tiny", "--cache-dir", str(cache_dir), "--out", str(out), "--overwrite"]) == 0
    assert json.loads((tmp_path / "warm" / "results.json").read_text()) == results
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "results.json"]
    capsys.readouterr()


def test_demo_rows_resume_after_a_lost_row(tmp_path):
    """A row whose cache file is gone is recomputed; the others are read back as written."""
    from lora_recycle.minihub.demo import DemoRow, RowCache

    cache = RowCache(tmp_path / "rows")
    first, second = DemoRow("ours", 0.61, 100, "val loss 1 -> 0.5", "loglik"), DemoRow("average", 0.5, 100)
    cache.put(first)
    cache.put(second)
    cache._path("average").unlink()
    assert cache.get("ours") == first and cache.get("average") is None
    assert not list((tmp_path / "rows").glob("*.partial"))


def test_demo_rows_in_two_workers_equal_rows_run_here(tmp_path, tiny_hub):
    """Rows run side by side in worker processes (the target-task LoRA trained once, in one of them) give
    the numbers the same rows give in this process, at the workers' one thread."""
    import torch

    from lora_recycle.minihub import demo_rows
    from lora_recycle.minihub.demo_rows import DemoPlan, RowJob, run_rows
    from lora_recycle.recipe.presets import preset
    from lora_recycle.tuning.target_lora import TargetLoraConfig

    hub = tiny_hub
    name = hub.target_tasks[0]
    ours = preset("ours").with_overrides(steps=4, eval_every=2, seed=0, k=3)
    pool = tuple(a.name for a in hub.adapters[:3])
    ids = tuple(next(p.relative_to(hub.pool_dir).as_posix() for p in hub.adapters if p.name == n) for n in pool)
    jobs = [RowJob("prompting", "prompting"), RowJob("target", "target"), RowJob("ours", "ours"),
            RowJob("ours + target", "ours", with_target=True)]

    def plan(where: str) -> DemoPlan:
        config = TargetLoraConfig(rank=4, steps=4, seed=0, precision="fp32")
        return DemoPlan(hub.base_model, hub.base_model_id, hub.catalog, hub.tasks[name], "fp32", 20, 0, ids, ours,
                        config, tmp_path / where / "target", tmp_path / where / "rows")

    finished = []
    parallel = run_rows(plan("parallel"), jobs, 2, finished.append)
    assert sorted(r.method for r in finished) == sorted(j.label for j in jobs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        demo_rows._loaded.clear()
        here = run_rows(plan("here"), jobs, 1, lambda row: None)
    finally:
        torch.set_num_threads(threads)
    assert {k: (r.accuracy, r.n, r.note) for k, r in parallel.items()} == {
        k: (r.accuracy, r.n, r.note) for k, r in here.items()}
    assert (tmp_path / "parallel" / "target" / "adapter_config.json").is_file()


def test_the_demo_names_its_budgets_against_the_papers():
    """The small profile's 20 merge steps and 40-step target LoRA are named beside the paper's 100 / 400, with a
    pointer to how the answer depends on the budget; the full profile runs the paper's budgets."""
    from lora_recycle.minihub.demo import BUDGET_READING, budget_note, demo_budgets
    from lora_recycle.minihub.hub import PROFILES

    assert demo_budgets(PROFILES["small"]) == (20, 4, 40)
    small = budget_note(PROFILES["small"])
    assert small.startswith("Budgets: 20 merge steps (validation every 4), a 40-step target-task LoRA; the paper's "
                            "are 100 merge steps and a 400-step target-task LoRA.")
    assert "cannot reach full strength" in small and BUDGET_READING in small
    assert (Path(__file__).resolve().parents[2] / BUDGET_READING).is_file()
    full = budget_note(PROFILES["full"])
    assert demo_budgets(PROFILES["full"])[::2] == (100, 400) and BUDGET_READING not in full
