import type { Kysely } from "kysely";
import type { PreparedRunner } from "./prepared.js";
import type { Database } from "./schema.js";

/**
 * Both handles throw BrokerError "unavailable" (never a raw driver error) when the database cannot
 * be reached, times out a statement or has no free connection: see translating-dialect.ts and
 * prepared.ts. Every other database error passes through unchanged.
 */
export interface DatabaseHandle {
  readonly db: Kysely<Database>;
  /** Prepared statements for the hot path (see prepared.ts). */
  readonly prepared: PreparedRunner;
  readonly kind: "postgres" | "pglite";
  /**
   * Subscribes to NOTIFY on `channel`: on Postgres over a dedicated connection (a pooled one would
   * go back to the pool and miss notices), on PGlite in-process. `onLost` is called at most once,
   * when that connection fails; the subscription is then dead and the caller re-subscribes.
   */
  listen(
    channel: string,
    onNotice: (payload: string) => void,
    onLost: (err: unknown) => void,
  ): Promise<NotificationSubscription>;
  close(): Promise<void>;
}

/** A live LISTEN. */
export interface NotificationSubscription {
  /**
   * One round trip on the listening connection. Postgres delivers a notice to an idle listener
   * as its transaction commits, ahead of any later reply, so once this resolves every notice
   * committed before the call has been handed to `onNotice`.
   */
  confirm(): Promise<void>;
  close(): Promise<void>;
}
