"""The library recipe: settings and presets of a merge, pool assembly, the merge itself, cached target LoRAs."""

TARGET_ADAPTER_ID = "target-lora"  # the target-task LoRA's id in every experiment pool, results row and report
