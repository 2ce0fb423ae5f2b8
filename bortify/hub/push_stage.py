"""The push stage of `bortify run`: upload the card stage's release folder to the Hub.

With no Hub configured (no token from HF_TOKEN or a saved login; or HF_HUB_OFFLINE set) the stage reports
"skipped: no Hub configured" instead of failing, so the demo stays offline; the pipeline does not record a
skipped stage as done, so a later run with a token pushes. A configured Hub that fails is an error, as it
should be. A token in the recipe is refused (recipes are shared and copied into run reports).
"""

from __future__ import annotations

from pathlib import Path

from bortify.hub.push import PushArguments, push_folder, resolve_token
from bortify.utils import SECRET_KEYS, redact_secrets, write_json_atomic


def hub_configured(token: str | None) -> str | None:
    """None when a push can be attempted, else the reason it cannot."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    if not resolve_token(token):
        return "no token (set HF_TOKEN or run `hf auth login`)"
    return None


def run_stage(config: dict, *, overwrite: bool = False) -> dict:
    """config = the recipe's push section (repo_id, private, revision, ...) + model_dir + output_dir."""
    from bortify.recipes import RecipeError, args_from_dict

    config = dict(config)
    secrets = sorted(k for k in config if k.lower() in SECRET_KEYS and config[k])
    if secrets:
        raise RecipeError(f"The recipe's push section sets {', '.join(secrets)}: tokens do not belong in recipes. "
                          "Delete it and set HF_TOKEN or run `hf auth login`.")
    if not config.get("repo_id"):
        raise RecipeError("The push stage needs repo_id (NAMESPACE/NAME) in the recipe's push section.")
    output_dir = Path(config.pop("output_dir", None) or "push")
    (args,) = args_from_dict((PushArguments,), config, where="recipe [push]")
    reason = hub_configured(args.token)
    if reason:
        report = {"skipped": True, "reason": f"skipped: no Hub configured ({reason})", "repo_id": args.repo_id,
                  "summary_lines": [f"skipped: no Hub configured ({reason}); push later with "
                                    f"`bortify push {args.model_dir} --repo-id {args.repo_id}`"]}
    else:
        log_lines: list[str] = []
        result = push_folder(args.model_dir, args.repo_id, private=args.private, revision=args.revision,
                             commit_message=args.commit_message, token=args.token, endpoint=args.endpoint,
                             max_retries=args.max_retries, retry_wait=args.retry_wait,
                             log=lambda m: (log_lines.append(m), print(f"[push] {m}", flush=True)))
        report = {"skipped": False, "repo_id": result.repo_id, "revision": result.revision,
                  "commit_oid": result.commit_oid, "commit_url": result.commit_url, "repo_url": result.repo_url,
                  "files": result.files, "left_out": result.left_out, "attempts": result.attempts,
                  "retries_logged": log_lines, "summary_lines": result.summary_lines()}
    # The token is not in any field above; redacting anyway keeps a future field from leaking it.
    report = redact_secrets(report)
    write_json_atomic(output_dir / "report.json", report)
    return report
