import type {
  AbortableOperationOptions,
  CompiledQuery,
  DatabaseConnection,
  Dialect,
  Driver,
  QueryCompiler,
  QueryResult,
  TransactionSettings,
} from "kysely";
import { toStoreError } from "./database-errors.js";

/**
 * Every statement kysely runs passes this connection, so a dropped connection, refused socket or
 * statement timeout leaves the store as BrokerError "unavailable" and never as a raw driver error.
 * On success it adds one async frame per query and nothing per row.
 */
class TranslatingConnection implements DatabaseConnection {
  constructor(readonly inner: DatabaseConnection) {}

  async executeQuery<R>(
    compiledQuery: CompiledQuery,
    options?: AbortableOperationOptions,
  ): Promise<QueryResult<R>> {
    try {
      return await this.inner.executeQuery<R>(compiledQuery, options);
    } catch (err) {
      throw toStoreError(err);
    }
  }

  async *streamQuery<R>(
    compiledQuery: CompiledQuery,
    chunkSize: number,
    options?: AbortableOperationOptions,
  ): AsyncIterableIterator<QueryResult<R>> {
    try {
      yield* this.inner.streamQuery<R>(compiledQuery, chunkSize, options);
    } catch (err) {
      throw toStoreError(err);
    }
  }
}

// The inner driver must get back the connection it handed out (pg releases its pooled client
// through it; PGlite checks identity).
const unwrap = (connection: DatabaseConnection): DatabaseConnection =>
  connection instanceof TranslatingConnection ? connection.inner : connection;

async function translated(pending: Promise<void>): Promise<void> {
  try {
    await pending;
  } catch (err) {
    throw toStoreError(err);
  }
}

function translatingDriver(inner: Driver): Driver {
  // pg's driver reuses one connection object per pooled client: so does this, one wrapper each.
  const wrappers = new WeakMap<DatabaseConnection, TranslatingConnection>();
  const savepoints = (name: "savepoint" | "rollbackToSavepoint" | "releaseSavepoint") => {
    const method = inner[name];
    if (method === undefined) return {};
    return {
      [name]: (
        connection: DatabaseConnection,
        savepointName: string,
        compile: QueryCompiler["compileQuery"],
      ) => translated(method.call(inner, unwrap(connection), savepointName, compile)),
    };
  };
  return {
    init: (options?: AbortableOperationOptions) => translated(inner.init(options)),
    async acquireConnection(options?: AbortableOperationOptions) {
      let connection: DatabaseConnection;
      try {
        connection = await inner.acquireConnection(options);
      } catch (err) {
        throw toStoreError(err);
      }
      let wrapper = wrappers.get(connection);
      if (wrapper === undefined) {
        wrapper = new TranslatingConnection(connection);
        wrappers.set(connection, wrapper);
      }
      return wrapper;
    },
    beginTransaction: (connection: DatabaseConnection, settings: TransactionSettings) =>
      translated(inner.beginTransaction(unwrap(connection), settings)),
    commitTransaction: (connection: DatabaseConnection) =>
      translated(inner.commitTransaction(unwrap(connection))),
    rollbackTransaction: (connection: DatabaseConnection) =>
      translated(inner.rollbackTransaction(unwrap(connection))),
    ...savepoints("savepoint"),
    ...savepoints("rollbackToSavepoint"),
    ...savepoints("releaseSavepoint"),
    releaseConnection: (connection: DatabaseConnection, options?: AbortableOperationOptions) =>
      inner.releaseConnection(unwrap(connection), options),
    destroy: (options?: AbortableOperationOptions) => inner.destroy(options),
  };
}

/** `inner` with its driver errors translated where they are born (see TranslatingConnection). */
export function translatingDialect(inner: Dialect): Dialect {
  return {
    createAdapter: () => inner.createAdapter(),
    createDriver: () => translatingDriver(inner.createDriver()),
    createQueryCompiler: () => inner.createQueryCompiler(),
    createIntrospector: (db) => inner.createIntrospector(db),
  };
}
