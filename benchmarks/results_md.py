"""Write one benchmark's section of benchmarks/RESULTS.md; the other sections stay as they are."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def replace_section(section: str, body: list[str], results: Path = RESULTS) -> None:
    """Replace the section headed ``section`` (up to the next ``## `` heading) by ``body``.

    ``body`` starts with the heading itself; a section not there yet is appended at the end.
    """
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    start = text.find(section)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + "\n".join(body)
    else:
        end = text.find("\n## ", start + len(section))
        rest = "" if end == -1 else text[end + 1:]
        text = text[:start] + "\n".join(body) + ("\n" + rest if rest else "")
    results.write_text(text)
    print(f"wrote {results}")
