"""Sources: folder trees of any depth and Hugging Face caches (blobs, snapshot symlinks, refs/main)."""

from __future__ import annotations

import os

from pool_corpus import folder_bytes, lay_out_hf_cache

from lora_recycle.pool import Catalog, iter_source, scan_pool


def test_tree_ids_are_relative_paths(corpus):
    ids = [c.adapter_id for c in iter_source(corpus)]
    assert "carol/nested/deep/adapter" in ids and ids == sorted(ids)
    single = list(iter_source(corpus / "alice/qv-only"))
    assert [c.adapter_id for c in single] == ["qv-only"]


def test_hf_cache_uses_refs_main_and_repo_ids(corpus, base_spec, tmp_path):
    cache = tmp_path / "hub"
    good = folder_bytes(corpus / "alice/all-seven")
    broken = folder_bytes(corpus / "broken/truncated")
    lay_out_hf_cache(cache, "dave/cached-lora", good, sha="a" * 40)
    old = lay_out_hf_cache(cache, "dave/cached-lora", broken, sha="b" * 40, ref=False)
    os.utime(old, ns=(2**62, 2**62))  # newest by mtime, but refs/main names the other snapshot
    # no refs/main: the newest snapshot wins
    older = lay_out_hf_cache(cache, "erin/no-ref", broken, sha="c" * 40, ref=False)
    os.utime(older, ns=(10**18, 10**18))
    lay_out_hf_cache(cache, "erin/no-ref", good, sha="d" * 40, ref=False)
    assert (old / "adapter_model.safetensors").is_symlink()

    candidates = {c.adapter_id: c for c in iter_source(cache)}
    assert set(candidates) == {"dave/cached-lora", "erin/no-ref"}
    assert candidates["dave/cached-lora"].revision == "a" * 40
    assert candidates["erin/no-ref"].revision == "d" * 40
    with Catalog(tmp_path / "pool.db") as catalog:
        scan_pool([cache], base_spec, catalog)
        rows = {row["id"]: row for row in catalog.rows()}
    assert rows["dave/cached-lora"]["status"] == "accepted"
    assert rows["dave/cached-lora"]["contributor"] == "dave"
    assert rows["dave/cached-lora"]["source_kind"] == "hf_cache"
    assert rows["erin/no-ref"]["status"] == "accepted"


def test_hf_cache_found_under_a_hub_folder(corpus, tmp_path):
    lay_out_hf_cache(tmp_path / "hf" / "hub", "org/x", folder_bytes(corpus / "alice/qv-only"), sha="e" * 40)
    assert [c.adapter_id for c in iter_source(tmp_path / "hf")] == ["org/x"]


def test_symlink_loops_are_not_followed(corpus, tmp_path):
    import shutil

    root = tmp_path / "tree"
    shutil.copytree(corpus / "alice", root / "alice")
    (root / "alice" / "loop").symlink_to(root)
    (root / "linked").symlink_to(corpus / "bob")
    ids = [c.adapter_id for c in iter_source(root)]
    assert ids == ["alice/all-seven", "alice/qv-only", "linked/mirror-name", "linked/patterns", "linked/rslora"]


def test_a_symlink_loop_never_hides_its_siblings(corpus, tmp_path):
    # `loop -> loop` fails to stat (ELOOP); listing the folder once gave up on every entry, "0 adapters seen"
    import shutil

    root = tmp_path / "pool"
    root.mkdir()
    (root / "aaa-loop").symlink_to("aaa-loop")
    (root / "mutual-a").symlink_to("mutual-b")
    (root / "mutual-b").symlink_to("mutual-a")
    shutil.copytree(corpus / "alice/qv-only", root / "good")
    assert [c.adapter_id for c in iter_source(root)] == ["good"]
