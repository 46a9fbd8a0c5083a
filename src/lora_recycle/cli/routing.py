"""``merge --method arrow|arrow_gks``: route over the pool with PEFT's Arrow instead of merging it."""

from __future__ import annotations

from pathlib import Path

from lora_recycle.cli.output import emit_json, info


def merge_routed(*, model: Path, out: Path, method: str, task: Path | None, adapters: list[Path] | None,
                 target_lora: Path | None, random_init: bool, db: Path | None, ids: list[str] | None,
                 selection: str | None, k: int | None, seed: int, general_adapters: list[str] | None,
                 top_k: int | None, router_temperature: float | None, rng_seed: int | None,
                 arrow_modules: str | None, evaluate_split: str | None, device: str, dtype: str, as_json: bool,
                 unused: dict[str, object], overwrite: bool = False) -> None:
    """Assemble the pool as ``merge`` does, write the Arrow library PEFT reloads, optionally score it."""
    from lora_recycle.adapters import read_peft_adapter
    from lora_recycle.errors import UserError
    from lora_recycle.models.loading import base_model_name, load_base_model, resolve_device
    from lora_recycle.outputs import check_out_dir
    from lora_recycle.routing.arrow import ArrowSettings
    from lora_recycle.routing.pool import MODULE_RULES
    from lora_recycle.routing.recipe import read_general_adapters, route_adapters, select_experts
    from lora_recycle.tasks import load_task

    given = [flag for flag, value in unused.items() if value not in (None, False)]
    if given:
        raise UserError(f"{given[0]} does not apply to {method} (routing learns and merges nothing)")
    check_out_dir(out, overwrite)  # before any model or adapter loads
    if arrow_modules is not None and arrow_modules not in MODULE_RULES:
        raise UserError(f"--arrow-modules {arrow_modules!r}: choose one of {', '.join(MODULE_RULES)}")
    settings = ArrowSettings(top_k=3 if top_k is None else top_k,
                             router_temperature=1.0 if router_temperature is None else router_temperature,
                             rng_seed=seed if rng_seed is None else rng_seed, use_gks=method == "arrow_gks",
                             modules=arrow_modules or "cover")
    if selection is not None and db is None:
        raise UserError("--selection needs --db POOL.db")
    paths = list(adapters or [])
    if not paths and db is None and target_lora is None:
        raise UserError("no adapters given: use --adapters DIR [DIR ...], --db POOL.db and/or --target-lora DIR")
    loaded_task = load_task(task) if task else None
    if evaluate_split is not None:
        if loaded_task is None:
            raise UserError("--evaluate needs --task DIR")
        loaded_task.split(evaluate_split)
    experts = [read_peft_adapter(p, adapter_id=p.name) for p in paths]
    if settings.use_gks and not general_adapters:
        raise UserError("arrow_gks subtracts general knowledge: give --general-adapters DIR_OR_ID [...]")
    if general_adapters and not settings.use_gks:
        raise UserError("--general-adapters is only used by arrow_gks")
    general = read_general_adapters(list(general_adapters or []), db)
    if db is not None:
        from lora_recycle.pool import load_pool_adapters
    if db is not None and ids:
        experts += load_pool_adapters(db, list(ids))
    target = read_peft_adapter(target_lora, adapter_id=f"target:{target_lora.name}") if target_lora else None
    dev = resolve_device(device)
    base, tokenizer = load_base_model(model, dev, dtype)
    scores: dict[str, float] = {}
    reserve: list[str] = []
    if db is not None and not ids:
        chosen, reserve, scores = select_experts(db, selection or "all", k, seed, base, tokenizer, loaded_task, dev,
                                                 target, {a.adapter_id for a in general})
        experts += load_pool_adapters(db, chosen)
    load = (lambda i: load_pool_adapters(db, [i])[0]) if db is not None else None
    if random_init:
        from lora_recycle.merging.controls import random_init_like

        experts = [random_init_like(a, seed + i) for i, a in enumerate(experts)]
        if load is not None:  # replacements are randomised too, each with its own seed
            plain, offset = load, seed + len(experts)
            load = lambda i: random_init_like(plain(i), offset + reserve.index(i))  # noqa: E731
    if target is not None:  # the target-task LoRA is one of the k, first, never randomised
        experts = [target, *experts]
    outcome = route_adapters(base, tokenizer, loaded_task, experts, general, settings, method, out,
                             base_model_name(base) or str(model), evaluate_split, dev,
                             required_ids=(target.adapter_id,) if target else (),
                             reserve=reserve, load=load, overwrite=overwrite)
    outcome.scores = scores
    summary = outcome.summary(method)
    if as_json:
        emit_json(summary)
        return
    dropped = f" ({len(outcome.pool['dropped'])} dropped: not on the routed modules)" if outcome.pool["dropped"] else ""
    info(f"routed {len(outcome.pool['experts'])} adapters with {method}{dropped}, top_k "
         f"{summary['arrow']['top_k']}; wrote {out} (load it with PEFT's create_arrow_model, see its README)")
    if outcome.evaluation is not None:
        info(f"{evaluate_split} accuracy {outcome.evaluation.accuracy:.4f}")
