"""``lora-recycle pool``: scan, fetch, list, show and summarise a pool of third-party adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lora_recycle.cli.checks import non_negative
from lora_recycle.cli.output import emit_json, info
from lora_recycle.errors import UserError
from lora_recycle.escaping import printable

pool_app = typer.Typer(
    help="Ingest third-party LoRA adapters, validate them against the base model, keep a catalog.",
    no_args_is_help=True,
)

DbOpt = Annotated[Path, typer.Option("--db", help="Pool catalog (SQLite file).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
LicenseOpt = Annotated[
    bool,
    typer.Option("--require-license/--no-require-license", help="Reject adapters without a card license."),
]
PickleOpt = Annotated[
    bool,
    typer.Option("--allow-pickle", help="Read .bin/.pt weights, with torch.load(weights_only=True) only."),
]
AliasOpt = Annotated[
    list[str] | None, typer.Option("--alias", help="Other names of the base model (space-separated or repeated).")
]
OutlierOpt = Annotated[
    float,
    typer.Option("--max-outlier-ratio", callback=non_negative,
                 help="Reject when ||delta||_F / ||W||_F exceeds this."),
]
RankCapOpt = Annotated[
    int | None,
    typer.Option("--rank-cap", min=1, help="Reject modules of higher rank (rank_too_large) [default: 1024]."),
]
TimeLimitOpt = Annotated[
    float | None,
    typer.Option("--time-limit", callback=non_negative,
                 help="Seconds of validation per adapter, then timeout [default: 30]."),
]
MinNormOpt = Annotated[
    float | None,
    typer.Option("--min-norm", callback=non_negative,
                 help="Reject as near_empty when ||s B A||_F <= this (default: off; the paper's 8B pool used 1.0). "
                 "`pool stats` shows the norms."),
]
# Columns `pool list` shows; `pool show` adds the rest.
LIST_FIELDS = (
    "id", "status", "reasons", "rank", "ranks", "alpha", "use_rslora", "target_modules", "license",
    "contributor", "base_model", "source_kind", "format",
)  # fmt: skip


def _base_spec(model_dir: Path, base_name: str | None, aliases: list[str] | None):
    from lora_recycle.pool import load_base_spec

    if not model_dir.is_dir():
        raise UserError(
            f"--base-model {model_dir}: shape checks need a local model directory with config.json "
            "(pass that directory, and --base-name for its Hub id)"
        )
    return load_base_spec(model_dir, base_name=base_name, aliases=tuple(aliases or ()))


def _scan(sources, spec, db, require_license, allow_pickle, max_outlier_ratio, hints=None, min_norm=None,
          max_folders=None, **limits) -> dict:
    from lora_recycle.pool import Catalog, ValidationPolicy, scan_pool
    from lora_recycle.pool.sources import MAX_TREE_FOLDERS

    limits = {key: value for key, value in limits.items() if value is not None}  # unset: the policy's default
    policy = ValidationPolicy(require_license, allow_pickle, max_outlier_ratio, min_norm=min_norm, **limits)
    created = not Path(db).exists()
    try:
        with Catalog(db) as catalog:
            summary = scan_pool(sources, spec, catalog, policy, hub_hints=hints, progress=True,
                                max_folders=max_folders or MAX_TREE_FOLDERS)
            totals = catalog.counts()
    except UserError:  # refused (a source too large, a bad folder): a catalog this scan created is not left behind
        if created:
            for leftover in (Path(db), Path(f"{db}-wal"), Path(f"{db}-shm")):
                leftover.unlink(missing_ok=True)
        raise
    for conflict in summary.conflicts:
        info(f"warning: {conflict}")
    return {**summary.to_dict(), "catalog": totals, "base_model": spec.name, "db": str(db)}


def _print_summary(data: dict) -> None:
    totals = data["catalog"]
    print(
        f"{data['seen']} adapters seen: {data['validated']} validated, {data['unchanged']} unchanged; "
        f"catalog {totals['accepted']} accepted, {totals['rejected']} rejected ({data['db']})"
    )
    for code, n in data["reasons"].items():
        print(f"  {code}: {n}")


@pool_app.command()
def scan(
    sources: Annotated[list[Path], typer.Argument(help="Folder trees of adapters or Hugging Face cache dirs.")],
    base_model: Annotated[Path, typer.Option("--base-model", help="Local base model directory (config.json).")],
    db: DbOpt,
    base_name: Annotated[str | None, typer.Option("--base-name", help="Hub id of the base model dir.")] = None,
    require_license: LicenseOpt = True,
    allow_pickle: PickleOpt = False,
    alias: AliasOpt = None,
    max_outlier_ratio: OutlierOpt = 1.0,
    rank_cap: RankCapOpt = None,
    time_limit: TimeLimitOpt = None,
    min_norm: MinNormOpt = None,
    max_folders: Annotated[int | None, typer.Option(
        "--max-folders", min=1, help="Refuse a source of more folders than this, symlinks followed [default: "
        "100000].")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate every adapter under SOURCES into the catalog (incremental: unchanged files are skipped)."""
    spec = _base_spec(base_model, base_name, alias)
    data = _scan(sources, spec, db, require_license, allow_pickle, max_outlier_ratio, max_rank=rank_cap,
                 time_limit=time_limit, min_norm=min_norm, max_folders=max_folders)
    emit_json(data) if as_json else _print_summary(data)


@pool_app.command()
def fetch(
    base_model: Annotated[str, typer.Option("--base-model", help="Hub id of the base model.")],
    db: DbOpt,
    cache_dir: Annotated[Path, typer.Option("--cache-dir", help="Where downloads go (Hugging Face cache layout).")],
    model_dir: Annotated[Path, typer.Option("--model-dir", help="Local directory of that base model.")],
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Fetch at most N adapters.")] = None,
    require_license: LicenseOpt = True,
    alias: AliasOpt = None,
    max_outlier_ratio: OutlierOpt = 1.0,
    rank_cap: RankCapOpt = None,
    time_limit: TimeLimitOpt = None,
    min_norm: MinNormOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download the Hub's adapters of a base model (config, safetensors, card only), then scan them."""
    from lora_recycle.pool import hub

    spec = _base_spec(model_dir, base_model, alias)
    fetched = hub.fetch_hub_adapters(base_model, cache_dir, hub.default_client(), limit, progress=True)
    failed = {a.repo_id: a.error for a in fetched if a.error}
    for repo_id, error in failed.items():
        info(f"skipped {repo_id}: {error}")
    hints = {a.repo_id: a.hint() for a in fetched if not a.error}
    data = _scan([cache_dir], spec, db, require_license, False, max_outlier_ratio, hints, max_rank=rank_cap,
                 time_limit=time_limit, min_norm=min_norm)
    data.update(fetched=len(hints), failed=failed)
    emit_json(data) if as_json else _print_summary(data)


@pool_app.command("list")
def list_adapters(
    db: DbOpt,
    status: Annotated[str | None, typer.Option("--status", help="accepted or rejected.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List catalogued adapters with their status, reasons, rank and target modules."""
    from lora_recycle.pool import Catalog

    if status not in (None, "accepted", "rejected"):
        raise UserError(f"--status {status}: use accepted or rejected")
    with Catalog(db, create=False) as catalog:
        rows = [{key: row[key] for key in LIST_FIELDS} for row in catalog.rows(status=status)]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        reasons = f" ({', '.join(row['reasons'])})" if row["reasons"] else ""
        print(printable(f"{row['status']:<9} {row['id']}  r={row['rank']} {'+'.join(row['target_modules'])}"
                        f"{reasons}"))


@pool_app.command()
def stats(db: DbOpt, as_json: JsonOpt = False) -> None:
    """Pool statistics: adapters per contributor, ranks, target-module sets, rejections by reason."""
    from lora_recycle.pool import Catalog, pool_stats

    with Catalog(db, create=False) as catalog:
        data = pool_stats(catalog)
    if as_json:
        emit_json(data)
        return
    print(printable(f"base model {data['base_model']}: {data['accepted']} accepted, {data['rejected']} rejected"))
    sections = [
        ("rejections by reason", data["reasons"]),
        ("ranks", data["ranks"]),
        ("target-module sets", data["target_module_sets"]),
        ("top contributors", data["top_contributors"]),
    ]
    for title, counts in sections:
        print(f"{title}:")
        for key, n in counts.items():
            print(f"  {printable(key)}: {n}")
    per = data["adapters_per_contributor"]
    print(f"adapters per contributor: avg {per['avg']}, max {per['max']}, percentiles {per['percentiles']}")
    norms = data["adapter_norms"]
    if norms["adapters"]:
        print(f"adapter norms ||s B A||_F ({norms['adapters']} adapters; choose `pool scan --min-norm`): "
              f"min {norms['min']}, max {norms['max']}, percentiles {norms['percentiles']}")
        for decade, n in norms["decades"].items():
            print(f"  {decade}: {n}")


@pool_app.command()
def show(adapter_id: Annotated[str, typer.Argument(help="Adapter id.")], db: DbOpt, as_json: JsonOpt = False) -> None:
    """Everything the catalog knows about one adapter, including its modules and rejection details."""
    from lora_recycle.pool import Catalog

    with Catalog(db, create=False) as catalog:
        row = catalog.get(adapter_id)
        if row is None:
            raise UserError(f"--db {db}: unknown adapter id {adapter_id}")
        row["modules"] = catalog.modules(adapter_id)
    if as_json:
        emit_json(row)
        return
    for key, value in row.items():
        if key not in ("modules", "fingerprint", "policy"):
            print(f"{key}: {printable(value)}")
    print(f"modules: {len(row['modules'])}")
