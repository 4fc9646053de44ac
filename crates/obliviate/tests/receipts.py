"""Checks an obliviate run's receipt chain with the Python standard library alone, as the README
documents (the receipts test drives this). Prints one JSON object: the number of receipts and
the problems found, as [receipt, what] pairs (receipt 0: the log as a whole).
"""
import hashlib
import json
import sqlite3
import sys


def verify_receipts(run):
    """[(receipt number, problem)] for the receipt log of the run folder `run` (README: Receipts)."""
    manifest = json.load(open(f"{run}/manifest.json"))
    db = sqlite3.connect(f"file:{run}/ledger.sqlite?mode=ro", uri=True)
    rows = db.execute(
        "SELECT seq, body, sha256 FROM receipts WHERE generation <= ? ORDER BY seq",
        (manifest["generation"],),
    ).fetchall()
    problems, previous, expected = [], "0" * 64, 1
    for seq, body, digest in rows:
        if seq != expected:
            problems.append((seq, "receipts before it are missing"))
        if hashlib.sha256(body.encode()).hexdigest() != digest:
            problems.append((seq, "its body does not match its SHA-256"))
        if json.loads(body)["previous_sha256"] != previous:
            problems.append((seq, "it does not name the previous receipt's SHA-256"))
        previous, expected = digest, seq + 1
    last = rows[-1][2] if rows else None
    if manifest.get("receipts_head") != last:
        problems.append((rows[-1][0] if rows else 0, "the manifest records another latest receipt"))
    return len(rows), problems


if __name__ == "__main__":
    n, problems = verify_receipts(sys.argv[1])
    print(json.dumps({"receipts": n, "problems": problems}))
