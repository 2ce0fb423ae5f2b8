"""The push stage as `bortify run` runs it: its entry in the stage table (bortify/stages.py), run by
bortify/pipeline.py (the library function is bortify.hub.push.push_release)."""

from bortify.pipeline import stage_entry

run_stage = stage_entry("push")
