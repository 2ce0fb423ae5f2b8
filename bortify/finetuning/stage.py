"""The finetune stage as `bortify run` runs it: its entry in the stage table (bortify/stages.py), run by bortify/pipeline.py."""

from bortify.pipeline import stage_entry

run_stage = stage_entry("finetune")
