"""Selecting from a pool catalog: scores cached per task, `merge --db` with selection or explicit ids."""

import json

import pytest

from lora_recycle.cli import main


def test_select_evaluation_is_cached(capsys, pool_db, tiny_model_dir, colour_task_dir):
    capsys.readouterr()
    args = ["select", "--model", str(tiny_model_dir), "--db", str(pool_db), "--task", str(colour_task_dir),
            "--strategy", "evaluation", "--k", "2", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert len(first["selected"]) == 2 and len(first["scores"]) == 4
    best = sorted(first["scores"].items(), key=lambda kv: (-kv[1], kv[0]))[:2]
    assert first["selected"] == [i for i, _ in best]
    from lora_recycle.pool import Catalog
    from lora_recycle.tasks import load_task

    with Catalog(pool_db) as catalog:
        cached = catalog.get_scores(load_task(colour_task_dir).content_hash(), "evaluation")
    assert cached == pytest.approx(first["scores"])
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == first


def test_select_random_is_seeded(capsys, pool_db, tiny_model_dir, colour_task_dir):
    capsys.readouterr()
    args = ["select", "--model", str(tiny_model_dir), "--db", str(pool_db), "--task", str(colour_task_dir),
            "--strategy", "random", "--k", "3", "--seed", "7", "--json"]
    assert main(args) == 0
    a = json.loads(capsys.readouterr().out)["selected"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["selected"] == a and len(set(a)) == 3


def test_merge_from_db(capsys, tmp_path, pool_db, tiny_model_dir, colour_task_dir):
    capsys.readouterr()
    code = main(["merge", "--model", str(tiny_model_dir), "--task", str(colour_task_dir), "--db", str(pool_db),
                 "--ids", "qv_r8", "patterns", "--method", "ours", "--steps", "2",
                 "--out", str(tmp_path / "m"), "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["selected"] == ["qv_r8", "patterns"]
    code = main(["merge", "--model", str(tiny_model_dir), "--task", str(colour_task_dir), "--db", str(pool_db),
                 "--method", "ours", "--k", "2", "--steps", "2", "--out", str(tmp_path / "m2"), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["selected"]) == 2 and len(summary["scores"]) == 4


def test_k_above_the_pool_says_how_many_were_used(capsys, tmp_path, pool_db, tiny_model_dir, colour_task_dir):
    capsys.readouterr()
    code = main(["select", "--model", str(tiny_model_dir), "--db", str(pool_db), "--task", str(colour_task_dir),
                 "--strategy", "random", "--k", "50", "--json"])
    captured = capsys.readouterr()
    assert code == 0 and len(json.loads(captured.out)["selected"]) == 4
    assert "warning: --k 50" in captured.err and "only 4 accepted adapters; using all 4" in captured.err
    code = main(["merge", "--model", str(tiny_model_dir), "--db", str(pool_db), "--method", "average", "--k", "9",
                 "--out", str(tmp_path / "m"), "--json"])
    captured = capsys.readouterr()
    assert code == 0 and len(json.loads(captured.out)["selected"]) == 4
    assert "--k 9" in captured.err and "using all 4" in captured.err


def test_unknown_id_is_a_clear_error(capsys, tmp_path, pool_db, tiny_model_dir):
    capsys.readouterr()
    code = main(["merge", "--model", str(tiny_model_dir), "--db", str(pool_db), "--ids", "nope",
                 "--method", "average", "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2 and "nope" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("strategy", ["cosine", "clamp", "abs", "quasi_fim"])
def test_similarity_selection(capsys, pool_db, tiny_model_dir, colour_task_dir, adapter_dirs, strategy):
    from lora_recycle.adapters import read_peft_adapter
    from lora_recycle.selection import get_similarity

    capsys.readouterr()
    target = adapter_dirs["all_r4"]
    code = main(["select", "--model", str(tiny_model_dir), "--db", str(pool_db), "--task", str(colour_task_dir),
                 "--strategy", strategy, "--k", "2", "--target-lora", str(target), "--include-target", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    # k = 2 in total: the target LoRA first, then the top 1 (an adapter is most similar to itself)
    assert data["selected"] == ["target:all_r4", "all_r4"]
    similarity = get_similarity(strategy)
    reference = similarity(read_peft_adapter(target), read_peft_adapter(adapter_dirs["qv_r8"]))
    assert data["scores"]["qv_r8"] == pytest.approx(reference, rel=1e-6)


def test_similarity_selection_needs_a_target(capsys, pool_db, tiny_model_dir, colour_task_dir):
    capsys.readouterr()
    code = main(["select", "--model", str(tiny_model_dir), "--db", str(pool_db), "--task", str(colour_task_dir),
                 "--strategy", "cosine", "--k", "2"])
    assert code == 2 and "--target-lora" in capsys.readouterr().err


def test_average_from_db_takes_every_accepted_adapter(capsys, tmp_path, pool_db, tiny_model_dir):
    capsys.readouterr()
    code = main(["merge", "--model", str(tiny_model_dir), "--db", str(pool_db), "--method", "average",
                 "--out", str(tmp_path / "avg"), "--json"])
    assert code == 0
    assert sorted(json.loads(capsys.readouterr().out)["selected"]) == ["all_r4", "patterns", "qv_r8", "rslora_r2"]


def test_merge_with_target_selects_k_minus_one(capsys, tmp_path, pool_db, tiny_model_dir, colour_task_dir,
                                                adapter_dirs):
    """--target-lora with --db: k adapters in total, the target first, then the top k - 1 by evaluation."""
    capsys.readouterr()
    ranking = ["select", "--model", str(tiny_model_dir), "--db", str(pool_db), "--task", str(colour_task_dir),
               "--strategy", "evaluation", "--k", "4", "--json"]
    assert main(ranking) == 0
    ranked = json.loads(capsys.readouterr().out)["selected"]
    code = main(["merge", "--model", str(tiny_model_dir), "--task", str(colour_task_dir), "--db", str(pool_db),
                 "--method", "ours", "--k", "3", "--target-lora", str(adapter_dirs["qv_r8"]), "--steps", "2",
                 "--out", str(tmp_path / "m"), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["selected"] == ["target:qv_r8", *ranked[:2]]
    assert set(summary["coefficients"]["0.q_proj"]) == set(summary["selected"])
    assert main([*ranking[:-3], "--k", "3", "--target-lora", str(adapter_dirs["qv_r8"]), "--include-target",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["selected"] == ["target:qv_r8", *ranked[:2]]


def test_select_precision_scores_and_caches_apart(capsys, pool_db, tiny_model_dir, colour_task_dir):
    """`select --precision bf16` scores under autocast and caches beside (never over) the fp32 scores."""
    from lora_recycle.pool import Catalog
    from lora_recycle.tasks import load_task

    capsys.readouterr()
    args = ["select", "--model", str(tiny_model_dir), "--db", str(pool_db), "--task", str(colour_task_dir),
            "--strategy", "evaluation", "--k", "2", "--json"]
    assert main([*args, "--precision", "bf16"]) == 0
    bf16 = json.loads(capsys.readouterr().out)["scores"]
    task_hash = load_task(colour_task_dir).content_hash()
    with Catalog(pool_db) as catalog:
        assert catalog.get_scores(task_hash, "evaluation@bf16") == pytest.approx(bf16)
        assert catalog.get_scores(task_hash, "evaluation") == {}
    assert main(args) == 0
    fp32 = json.loads(capsys.readouterr().out)["scores"]
    assert set(fp32) == set(bf16) and fp32 == pytest.approx(bf16, abs=0.5)
    with Catalog(pool_db) as catalog:
        assert catalog.get_scores(task_hash, "evaluation") == pytest.approx(fp32)
    assert main([*args, "--precision", "fp16"]) == 2
    assert "fp16" in capsys.readouterr().err
