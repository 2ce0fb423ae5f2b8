"""The perfect-hashed vocabulary (docs/methods/05-compression.md §5) on the packaged MiniLM vocabulary (30,522 WordPiece tokens).

Builds bortify's cascade (bortify.compression.phash) at a few settings and reports, for each: bytes on disk against
vocab.txt and tokenizer.json, cascade levels, bits a key, build time (median of 5), look-ups per second (vocabulary
tokens and unknown strings, one Python call each), and the false-positive rate (the formula and measured on 200k
distinct unknown strings). Then the WordPiece tokenizer on top: % of texts of the packaged corpus and of Rotten
Tomatoes whose token sequence equals the packaged MiniLM fast tokenizer's, and texts per second of both.

Reference point: a maintained minimal-perfect-hash library from PyPI, run in a SEPARATE venv so bortify's own
stays clean (`python3 -m venv /tmp/phash-ref && /tmp/phash-ref/bin/pip install bbhash perfect-hash mmh3`):
`bbhash` 0.6 (Cython wrapper of BBHash, Limasset et al. 2017; keys are 64-bit MurmurHash3 of the tokens) and the
pure-Python `perfect-hash` 0.5 (CHM, Czech-Havas-Majewski 1992: order-preserving, keeps the original ids).

    .venv/bin/python benchmarks/bench_phash.py --ref-python /tmp/phash-ref/bin/python      # ~1 min
    .venv/bin/python benchmarks/bench_phash.py --summarize benchmarks/results/phash.json

Writes benchmarks/results/phash.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS  # first: the environment (benchmarks/common.py)

MODEL = "embedded:all-MiniLM-L6-v2"
SETTINGS = [  # (gamma, fingerprint bits); the first is the default
    (1.0, 16), (1.0, 12), (1.0, 8), (2.0, 16), (1.0, 0),  # f=0: the cascade alone, as bbhash stores it
]


def unknown_strings(n: int, vocab, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        s = "".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(3, 12)))
        if s not in vocab and "##" + s not in vocab:
            out.add(s)
    return sorted(out)


def rate(fn, items, repeat: int = 3) -> float:
    """Calls a second (best of `repeat` passes over `items`)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for x in items:
            fn(x)
        best = min(best, time.perf_counter() - t0)
    return len(items) / best


def bench_ours(model_dir: Path, vocab: dict, unknown: list[str]) -> list[dict]:
    from bortify.compression.hashed_tokenizer import HashedTokenizerConfig, HashedWordPiece
    from bortify.compression.phash import build_hashed_vocab

    rows = []
    keys = list(vocab)
    for gamma, bits in SETTINGS:
        times, hv = [], None
        for _ in range(5):
            hv = build_hashed_vocab(vocab, gamma=gamma, fingerprint_bits=bits)
            times.append(hv.build_stats.build_seconds)
        assert all(hv.permutation[hv.lookup(k)] == i for k, i in vocab.items())
        with tempfile.TemporaryDirectory() as tmp:
            written = HashedWordPiece.build(vocab, HashedTokenizerConfig(), gamma=gamma, fingerprint_bits=bits).save(tmp)
            files = {p.name: p.stat().st_size for p in written}
        accepted = sum(hv.lookup(s) is not None for s in unknown)
        rows.append(dict(
            gamma=gamma, fingerprint_bits=bits, levels=hv.levels, bits_per_level=hv.level_sizes,
            keys_per_level=hv.build_stats.keys_per_level, cascade_bits_per_key=hv.total_bits / len(vocab),
            phash_bytes=files["vocab.phash"], config_bytes=files["hashed_tokenizer.json"],
            bytes=sum(files.values()), bits_per_key=8 * files["vocab.phash"] / len(vocab),
            build_s_median=statistics.median(times),
            lookups_per_s_known=rate(hv.lookup, keys), lookups_per_s_unknown=rate(hv.lookup, unknown[:30000]),
            fp_rate_formula=hv.false_positive_rate, fp_rate_measured=accepted / len(unknown), n_unknown=len(unknown),
        ))
        print(f"ours γ={gamma} f={bits}: {rows[-1]['bytes']:,} B, {hv.levels} levels, "
              f"{rows[-1]['build_s_median'] * 1e3:.0f} ms", file=sys.stderr)
    return rows


def bench_agreement(model_dir: Path) -> dict:
    from transformers import AutoTokenizer

    from bortify.compression.hashed_tokenizer import HashedWordPiece
    from bortify.resources import load_embedded_dataset

    fast = AutoTokenizer.from_pretrained(model_dir)
    out = {}
    for name in ("embedded:corpus", "embedded:rotten-tomatoes"):
        hashed = HashedWordPiece.from_tokenizer_files(model_dir)  # fresh word cache for a fair speed figure
        perm = hashed.permutation
        texts = list(load_embedded_dataset(name)["text"])
        t0 = time.perf_counter()
        ref = [fast(t)["input_ids"] for t in texts]
        fast_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        fast(texts)  # one batched call: the Rust tokenizer's best case
        fast_batched_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = [hashed(t)["input_ids"] for t in texts]
        ours_s = time.perf_counter() - t0
        diff = [i for i, (a, b) in enumerate(zip(ours, ref)) if perm[a].tolist() != b]
        out[name] = dict(texts=len(texts), identical=len(texts) - len(diff), agreement=1 - len(diff) / len(texts),
                         first_differences=[texts[i][:200] for i in diff[:5]],
                         ours_texts_per_s=len(texts) / ours_s, fast_texts_per_s=len(texts) / fast_s,
                         fast_batched_texts_per_s=len(texts) / fast_batched_s)
        print(f"{name}: {out[name]['agreement']:.4%} identical", file=sys.stderr)
    return out


REFERENCE_SNIPPET = r"""
import json, os, sys, tempfile, time, statistics
import mmh3
tokens = [line.rstrip("\n") for line in open(sys.argv[1], encoding="utf-8")]
out = {}
try:
    import bbhash
    hashes = [mmh3.hash64(t, 0, signed=False)[0] for t in tokens]
    assert len(set(hashes)) == len(hashes)
    for gamma in (1.0, 2.0):
        times = []
        for _ in range(5):
            t0 = time.perf_counter(); mph = bbhash.PyMPHF(hashes, len(hashes), 1, gamma); times.append(time.perf_counter() - t0)
        ids = sorted(mph.lookup(h) for h in hashes)
        assert ids == list(range(len(tokens))), "not minimal perfect"
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "mphf"); mph.save(path); size = os.path.getsize(path)
        t0 = time.perf_counter()
        for t in tokens: mph.lookup(mmh3.hash64(t, 0, signed=False)[0])
        lps = len(tokens) / (time.perf_counter() - t0)
        out[f"bbhash gamma={gamma}"] = dict(bytes=size, build_s_median=statistics.median(times), lookups_per_s=lps,
                                           version=__import__("importlib.metadata").metadata.version("bbhash"))
except ImportError as exc:
    out["bbhash"] = dict(error=f"not installed: {exc}")
try:
    import perfect_hash
    n = int(sys.argv[2])  # pure Python: minutes for the whole vocabulary, so a prefix of it
    t0 = time.perf_counter(); f1, f2, G = perfect_hash.generate_hash(tokens[:n], Hash=perfect_hash.IntSaltHash); seconds = time.perf_counter() - t0
    width = 2 if max(G) < 2**16 else 4
    out[f"perfect-hash (CHM), first {n:,} tokens"] = dict(
        bytes=len(G) * width + (len(f1.salt) + len(f2.salt)) * width, table_entries=len(G), keys=n,
        build_s_median=seconds, version=__import__("importlib.metadata").metadata.version("perfect-hash"))
except ImportError as exc:
    out["perfect-hash"] = dict(error=f"not installed: {exc}")
print(json.dumps(out))
"""


def bench_reference(python: str | None, vocab_txt: Path, chm_keys: int) -> dict:
    if not python:
        return {"skipped": "no --ref-python given"}
    try:
        proc = subprocess.run([python, "-c", REFERENCE_SNIPPET, str(vocab_txt), str(chm_keys)], capture_output=True, text=True,
                              timeout=900, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": f"{type(exc).__name__}: {getattr(exc, 'stderr', '') or exc}"[:2000]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(result: dict) -> str:
    vt, tj = result["vocab_txt_bytes"], result["tokenizer_json_bytes"]
    lines = [f"Vocabulary: {result['n_keys']:,} tokens; vocab.txt {vt:,} B, tokenizer.json {tj:,} B.", "",
             "| structure | bytes | % vocab.txt | % tokenizer.json | levels | bits/key | build (ms) | look-ups/s (known / unknown) | false positives: formula / measured |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["ours"]:
        lines.append(
            f"| bortify γ={r['gamma']:g}, {r['fingerprint_bits']}-bit fingerprints (vocab.phash + settings) | {r['bytes']:,} | "
            f"{100 * r['bytes'] / vt:.1f}% | {100 * r['bytes'] / tj:.1f}% | {r['levels']} | {r['bits_per_key']:.2f} | "
            f"{r['build_s_median'] * 1e3:.0f} | {r['lookups_per_s_known'] / 1e3:,.0f}k / {r['lookups_per_s_unknown'] / 1e3:,.0f}k | "
            f"{r['fp_rate_formula']:.2e} / {r['fp_rate_measured']:.2e} |")
    for name, r in result["reference"].items():
        if not isinstance(r, dict) or "bytes" not in r:
            lines.append(f"| {name} | {r} | | | | | | | |")
            continue
        lps = f"{r['lookups_per_s'] / 1e3:,.0f}k / –" if "lookups_per_s" in r else "–"
        keys = r.get("keys", result["n_keys"])
        pct = (f"{100 * r['bytes'] / vt:.1f}% | {100 * r['bytes'] / tj:.1f}%" if keys == result["n_keys"]
               else f"({keys:,} keys) | ")
        lines.append(f"| {name} (PyPI {r.get('version', '?')}, no fingerprints) | {r['bytes']:,} | {pct} | "
                     f"– | {8 * r['bytes'] / keys:.2f} | "
                     f"{r['build_s_median'] * 1e3:.0f} | {lps} | no rejection |")
    lines += ["", "| texts | identical token sequences | hashed tokenizer texts/s | fast (Rust) tokenizer texts/s: one call a text / one batched call |",
              "|---|---:|---:|---:|"]
    for name, a in result["agreement"].items():
        batched = a.get("fast_batched_texts_per_s")
        lines.append(f"| {name} ({a['texts']:,}) | {a['identical']:,} ({100 * a['agreement']:.2f}%) | "
                     f"{a['ours_texts_per_s']:,.0f} | {a['fast_texts_per_s']:,.0f} / "
                     f"{'–' if batched is None else f'{batched:,.0f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref-python", help="python of a separate venv with bbhash / perfect-hash installed")
    parser.add_argument("--chm-keys", type=int, default=3000, help="vocabulary prefix the pure-Python CHM hashes")
    parser.add_argument("--output", default=str(RESULTS / "phash.json"))
    parser.add_argument("--summarize", metavar="JSON", help="print the table of an earlier run and exit")
    args = parser.parse_args(argv)
    if args.summarize:
        print(summarize(json.loads(Path(args.summarize).read_text())))
        return 0
    import torch

    torch.set_num_threads(1)
    from bortify.compression.phash import load_vocab_txt
    from bortify.resources import resolve_model
    from bortify.utils import write_json_atomic

    model_dir = Path(resolve_model(MODEL))
    vocab = load_vocab_txt(model_dir / "vocab.txt")
    unknown = unknown_strings(200_000, vocab)
    result = dict(model=MODEL, n_keys=len(vocab), vocab_txt_bytes=(model_dir / "vocab.txt").stat().st_size,
                  tokenizer_json_bytes=(model_dir / "tokenizer.json").stat().st_size,
                  ours=bench_ours(model_dir, vocab, unknown), agreement=bench_agreement(model_dir),
                  reference=bench_reference(args.ref_python, model_dir / "vocab.txt", args.chm_keys),
                  python=sys.version.split()[0], threads=1)
    write_json_atomic(args.output, result)
    print(summarize(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
