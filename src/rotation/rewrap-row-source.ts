import type { Kysely } from "kysely";
import { findUsersNotOnKey, type WrappedUserKey } from "../store/rewrap.repository.js";
import type { Database } from "../store/schema.js";

export interface RewrapRowSourceOptions {
  /** Rows already wrapped under this master key are not offered. */
  readonly targetKeyId: string;
  /** Rows read per page. */
  readonly batchSize: number;
  /** Users (hex user refs) not to offer again: rows that failed earlier in this run. */
  readonly exclude: ReadonlySet<string>;
  /** Only user refs in [from, before) (a leased range); the whole table when absent. */
  readonly from?: Buffer | undefined;
  readonly before?: Buffer | undefined;
  /** Called before each page is read; false stops the walk (the range's lease was lost). */
  readonly beforePage?: () => Promise<boolean>;
}

/** Hands out the next user row to rewrap, or undefined once the walk is done. */
export type RewrapRowSource = () => Promise<WrappedUserKey | undefined>;

/**
 * Walks the keys in user_ref order, one shared page at a time, handing rows to the workers.
 * Rows that failed earlier in this run are not offered again.
 */
export function createRewrapRowSource(
  db: Kysely<Database>,
  options: RewrapRowSourceOptions,
): RewrapRowSource {
  let after: Buffer | undefined;
  let page: WrappedUserKey[] = [];
  let index = 0;
  let exhausted = false;
  let loading: Promise<void> | undefined;

  async function load(): Promise<void> {
    if (options.beforePage !== undefined && !(await options.beforePage())) {
      exhausted = true;
      page = [];
      return;
    }
    const rows = await findUsersNotOnKey(db, {
      targetKeyId: options.targetKeyId,
      after,
      limit: options.batchSize,
      from: options.from,
      before: options.before,
    });
    if (rows.length < options.batchSize) exhausted = true;
    after = rows.at(-1)?.userRef ?? after;
    page = rows.filter((row) => !options.exclude.has(row.userRef.toString("hex")));
    index = 0;
  }

  return async function next() {
    for (;;) {
      const row = page[index];
      if (row !== undefined) {
        index += 1;
        return row;
      }
      if (exhausted) return undefined;
      // One page query at a time, shared by every worker that ran dry.
      loading ??= load().finally(() => {
        loading = undefined;
      });
      await loading;
    }
  };
}
