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


def add_results_arguments(parser, out: Path) -> None:
    """The options every benchmark that writes a JSON file and a RESULTS.md section shares."""
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="re-render RESULTS.md from a results file; runs nothing")


def rerender_from_json(args, summary_lines, write_results) -> bool:
    """With ``--from-json``: print the file's summary (and write RESULTS.md with
    ``--write-results``) and return True, so the benchmark does not run; else return False."""
    if not args.from_json:
        return False
    import json

    result = json.loads(args.from_json.read_text())
    lines = summary_lines(result)
    print("\n".join(lines))
    if args.write_results:
        write_results(result, lines)
    return True


def save_and_report(args, result: dict, summary_lines, write_results) -> None:
    """Write ``result`` to ``args.out`` as JSON, print its summary, and with ``--write-results``
    write its RESULTS.md section: the end every benchmark shares."""
    import json

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    lines = summary_lines(result)
    print("\n".join(lines))
    if args.write_results:
        write_results(result, lines)
