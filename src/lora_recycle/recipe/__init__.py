"""The library recipe: settings and presets of a merge, and the merge itself (pool in, one LoRA out)."""
