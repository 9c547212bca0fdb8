import type { KyselyPlugin, QueryId } from "kysely";
import type { DatabaseHandle } from "../store/database.js";
import type { PreparedRunner } from "../store/prepared.js";
import type { Tracing } from "./tracing.js";

const DB = { "db.system.name": "postgresql" } as const;

// Kysely's operation node kinds, as the query summary spells them.
const QUERY_KINDS: Readonly<Record<string, string>> = {
  SelectQueryNode: "SELECT",
  InsertQueryNode: "INSERT",
  UpdateQueryNode: "UPDATE",
  DeleteQueryNode: "DELETE",
  MergeQueryNode: "MERGE",
  RawNode: "RAW",
};

/**
 * The same database, every statement inside a span: prepared statements by their name (fixed
 * in code), Kysely queries by their kind. Never the SQL text's values nor a bound parameter:
 * parameters carry user refs, secret ids and ciphertext (SPEC I7).
 */
export function tracedDatabase(database: DatabaseHandle, tracing: Tracing): DatabaseHandle {
  return {
    kind: database.kind,
    db: database.db.withPlugin(kyselyTracing(tracing)),
    prepared: tracedPreparedRunner(database.prepared, tracing),
    listen: (channel, onNotice, onLost) => database.listen(channel, onNotice, onLost),
    close: () => database.close(),
  };
}

function tracedPreparedRunner(prepared: PreparedRunner, tracing: Tracing): PreparedRunner {
  const traced = (runner: PreparedRunner): PreparedRunner => ({
    rows: (statement, values) =>
      tracing.span(
        "keybroker.db.query",
        { ...DB, "db.query.summary": statement.name },
        () => runner.rows(statement, values),
        "client",
      ),
    transaction: (work) =>
      tracing.span("keybroker.db.transaction", DB, () => runner.transaction((tx) => work(traced(tx)))),
  });
  return traced(prepared);
}

/**
 * A span from the moment Kysely hands a query to the driver to its result. A query that fails
 * never reaches transformResult: its span is dropped unexported (the WeakMap lets it go), and
 * the failure shows on the enclosing span instead.
 */
function kyselyTracing(tracing: Tracing): KyselyPlugin {
  const open = new WeakMap<QueryId, { end(failure?: unknown): void }>();
  return {
    transformQuery({ node, queryId }) {
      open.set(
        queryId,
        tracing.startLeafSpan("keybroker.db.query", {
          ...DB,
          "db.query.summary": QUERY_KINDS[node.kind] ?? "OTHER",
        }),
      );
      return node;
    },
    async transformResult({ queryId, result }) {
      open.get(queryId)?.end();
      open.delete(queryId);
      return result;
    },
  };
}
