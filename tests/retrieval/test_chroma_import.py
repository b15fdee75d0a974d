"""chromadb is imported with jsonschema's IRI grammar deferred (sdrag/retrieval/chroma_import.py), and that
changes nothing but when the grammar is built."""

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import sys
    from sdrag.retrieval.chroma_import import load_chromadb
    chromadb = load_chromadb()
    import jsonschema
    print("client", hasattr(chromadb, "PersistentClient"))
    print("grammar built", "rfc3987_syntax.syntax_helpers" in sys.modules)
    checker = jsonschema.FormatChecker()
    print("iri format", "iri" in checker.checkers, checker.conforms("http://example.org/a", "iri"),
          checker.conforms("http://exa mple.org/\\u0001", "iri"))
    print("grammar built", "rfc3987_syntax.syntax_helpers" in sys.modules)
    import rfc3987_syntax
    print("real module", hasattr(rfc3987_syntax, "syntax_helpers"), load_chromadb() is chromadb)
""")


def test_chromadb_loads_without_the_iri_grammar_and_jsonschema_still_checks_iris():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["client True", "grammar built False", "iri format True True False",
                                        "grammar built True", "real module True True"]
