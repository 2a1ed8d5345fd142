"""The error index in PostgreSQL: a stored, generated ``tsvector`` column with a GIN index,
searched with ``websearch_to_tsquery`` and ranked with ``ts_rank``.

Queries are web-search syntax, which never fails to parse: words (all must match),
``"quoted phrases"``, ``or``, ``-word`` (must not match). The ``simple`` configuration keeps
words as they are (no stemming, no stop words): identifiers and exception names are not
English. Punctuation splits words in documents and queries alike, so ``run.py`` finds the
``run.py`` of a file path (PostgreSQL's parser would otherwise keep a whole path as one
token).
"""

from __future__ import annotations

from typing import Any

from tilemore.errors import InvalidSearch
from tilemore.store.error_index import COLUMNS, MARK, ErrorIndexSQL, table
from tilemore.store.postgres_db import PostgresDatabase

# Punctuation becomes spaces; hyphens stay (the parser keeps "denoised-multiformat" and its
# parts), and in queries so do double quotes (phrases) and a leading "-" (negation).
DOCUMENT_PUNCTUATION = "[^[:alnum:]_[:space:]-]+"
QUERY_PUNCTUATION = '[^[:alnum:]_[:space:]"-]+'


def _words(column: str, weight: str) -> str:
    return (f"setweight(to_tsvector('simple', regexp_replace({column}, "
            f"'{DOCUMENT_PUNCTUATION}', ' ', 'g')), '{weight}')")


# Weights A–D as the SQLite index's bm25 weights: type and message over traceback lines.
SEARCH_COLUMN = (",\n    search tsvector GENERATED ALWAYS AS ("
                 + " || ".join([_words("error_type", "A"), _words("message", "A"),
                                _words("operator", "B"), _words("task_id", "B"),
                                _words("traceback", "C")])
                 + ") STORED")

SCHEMA = table("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "BOOLEAN",
               SEARCH_COLUMN) + """
CREATE INDEX IF NOT EXISTS task_errors_search ON task_errors USING GIN (search);
"""

QUERY = f"websearch_to_tsquery('simple', regexp_replace(?, '{QUERY_PUNCTUATION}', ' ', 'g'))"

# The snippet is made for the rows returned only (ts_headline re-parses the text).
HEADLINE = (f"StartSel={MARK[0]}, StopSel={MARK[1]}, MaxWords=24, MinWords=8, "
            "MaxFragments=2, FragmentDelimiter=\" … \"")

INNER = ", ".join(f"e.{c}" for c in ("id", *COLUMNS))
OUTER = ", ".join(f"best.{c}" for c in ("id", *COLUMNS, "score"))
SEARCH = f"""
SELECT {OUTER}, ts_headline('simple', best.message || E'\\n' || best.traceback, best.q,
                           '{HEADLINE}') AS snippet
FROM (SELECT {INNER}, q, ts_rank(e.search, q) AS score
      FROM task_errors e, {QUERY} AS q
      WHERE e.search @@ q{{where}}
      ORDER BY score DESC, e.at DESC, e.id DESC
      LIMIT ?) AS best
ORDER BY best.score DESC, best.at DESC, best.id DESC
"""


class PostgresErrorIndex(ErrorIndexSQL, PostgresDatabase):
    def __init__(self, url: str) -> None:
        PostgresDatabase.__init__(self, url, SCHEMA)

    def _match(self, query: str, where: str, args: list[Any], limit: int) -> list[Any]:
        # A query of punctuation alone has no word to look for: refused, as FTS5 refuses it.
        if not self._query(f"SELECT numnode({QUERY}) > 0 AS ok", [query])[0]["ok"]:
            raise InvalidSearch("the query has no word to search for")
        return self._query(SEARCH.format(where=where), [query, *args, limit])
