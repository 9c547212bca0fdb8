import type { SignalTrip } from "./signal-event.js";

/**
 * The JSON an alert webhook carries. Counts, names and ids an operator acts on; never a raw user
 * id (only the HMAC'd user ref, the audit trail's pseudonym), a token or a secret value.
 */
export interface AlertBody {
  readonly type: "keybroker.misuse_signal";
  /** Random per alert, so a receiver can drop a retried delivery it already processed. */
  readonly id: string;
  readonly signal: string;
  /** ISO 8601. */
  readonly time: string;
  readonly callerKey: { readonly id: string; readonly name: string };
  readonly observed: number;
  readonly baseline: number;
  readonly userRef?: string;
  readonly operationClass?: string;
  /** True when the broker suspended the caller key in response. */
  readonly suspended: boolean;
}

export function alertBody(id: string, trip: SignalTrip, suspended: boolean): AlertBody {
  return {
    type: "keybroker.misuse_signal",
    id,
    signal: trip.signal,
    time: new Date(trip.at).toISOString(),
    callerKey: { id: trip.callerKeyId, name: trip.callerKeyName },
    observed: trip.observed,
    baseline: trip.baseline,
    ...(trip.userRef === undefined ? {} : { userRef: Buffer.from(trip.userRef).toString("hex") }),
    ...(trip.operationClass === undefined ? {} : { operationClass: trip.operationClass }),
    suspended,
  };
}
